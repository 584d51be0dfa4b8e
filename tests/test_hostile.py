"""Files built to hurt: each is refused with one clear paragraph, in bounded time and memory.

Masks, for a start: a decompression bomb, a name that is not UTF-8, a
symbolic link loop, a FIFO and device files. Each case runs through the
real CLI with the tiny backbone (see ``test_errors.py`` for the helpers), and
checks the exit status, the message, that there is no traceback and that no
output (or no false output) was written. The bombs and broken headers are
built here in a few kB.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from dinotrack.inputs import MAX_IMAGE_PIXELS, image_size
from dinotrack.masks import read_label_map
from dinotrack.structs import DinotrackError
from test_errors import (  # noqa: F401  (ws is a fixture)
    Workspace,
    assert_nothing_written,
    assert_reported,
    invoke,
    ws,
)

BOMB_SIZE = (20000, 12000)
"""``(width, height)`` of the bombs: 240 megapixels, 0.7 GB as decoded RGB, as in issue 15."""
LIMIT_WORDS = ("20000x12000 pixels", f"{MAX_IMAGE_PIXELS:,}", "MAX_IMAGE_PIXELS", "decompression bomb", "not decoded")


# --- hostile files, built small -----------------------------------------------------------------


def png_bomb(path: Path, size: tuple[int, int] = BOMB_SIZE) -> Path:
    """A valid 1-bit palette PNG of ``size`` ``(width, height)``, all zeros: about 30 kB on disk."""
    width, height = size
    rows = 1000
    compressor = zlib.compressobj(9)
    block = bytes((1 + (width + 7) // 8) * rows)  # each row: filter byte 0, then width bits
    data = b"".join(compressor.compress(block) for _ in range(height // rows)) + compressor.flush()
    assert height % rows == 0

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # 1 bit per pixel, palette
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", bytes(6)) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def jpeg_bomb(path: Path, size: tuple[int, int] = BOMB_SIZE) -> Path:
    """A JPEG of 16x16 pixels whose frame header says ``size``: a decoder would allocate all of it."""
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    frame_header = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, frame_header + 5, size[1], size[0])
    path.write_bytes(bytes(data))
    return path


def non_utf8(folder: Path, name: bytes) -> Path:
    """``folder / name`` for a name in bytes that are not UTF-8 (as Python spells it: with surrogates)."""
    return folder / os.fsdecode(name)


def link_loop(path: Path) -> Path:
    path.symlink_to(path)
    return path


@contextmanager
def fifo_never_read(path: Path) -> Iterator[Path]:
    """A FIFO at ``path``; the test fails instead of hanging if anything opens it for reading.

    A watcher opens the FIFO's writing end without blocking, which succeeds
    only while a reader holds it open; it then closes it, so that the reader
    sees the end of the file and goes on.
    """
    os.mkfifo(path)
    opened, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader
                continue
            opened.set()
            os.close(descriptor)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield path
    finally:
        done.set()
        watcher.join()
    assert not opened.is_set(), f"{path} was opened for reading"


# --- refused before anything is written ---------------------------------------------------------


def non_utf8_mask(ws: Workspace) -> list[object]:
    return ws.track(mask=Path(shutil.copy(ws.mask, non_utf8(ws.root, b"m\xe4sk.png"))))


CHARACTER_DEVICE = ("is a character device", "not a regular file", "was not opened")
NOT_UTF8 = ("not valid UTF-8", "rename it")
LOOP = ("symbolic link loop",)

CASES: dict[str, tuple[Callable[[Workspace], list[object]], tuple[str, ...]]] = {
    "mask-png-bomb": (lambda ws: ws.track(mask=png_bomb(ws.root / "bomb.png")), ("Mask", "bomb.png", *LIMIT_WORDS)),
    "mask-dev-zero": (lambda ws: ws.track(mask=Path("/dev/zero")), ("Mask /dev/zero", *CHARACTER_DEVICE)),
    "mask-dev-null": (lambda ws: ws.track(mask=Path("/dev/null")), ("Mask /dev/null", *CHARACTER_DEVICE)),
    "mask-link-loop": (lambda ws: ws.track(mask=link_loop(ws.root / "loop.png")), ("Mask", "loop.png", *LOOP)),
    "mask-non-utf8": (non_utf8_mask, ("Mask", "m\\xe4sk.png", *NOT_UTF8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_before_anything_is_written(ws: Workspace, name: str) -> None:
    build, words = CASES[name]
    status, output = invoke(build(ws))
    assert_reported(status, output, 2, words)
    assert_nothing_written(ws.output)


def test_bombs_are_small_valid_images_of_240_megapixels(tmp_path: Path) -> None:
    """The bombs above are real: small files whose headers announce 240 megapixels."""
    png, jpeg = png_bomb(tmp_path / "bomb.png"), jpeg_bomb(tmp_path / "bomb.jpg")
    assert png.stat().st_size < 64_000 and jpeg.stat().st_size < 2_000
    assert image_size(png) == image_size(jpeg) == BOMB_SIZE
    assert np.prod(BOMB_SIZE) > MAX_IMAGE_PIXELS >= 7680 * 4320 * 2  # 8K frames pass, twice over


@pytest.mark.parametrize("where", ["mask"])
def test_fifo_is_refused_without_being_opened(ws: Workspace, where: str) -> None:
    with fifo_never_read(ws.root / "pipe.png" if where != "frame" else ws.frames / "00003.png") as fifo:
        args = {"source": ws.track(source=fifo), "mask": ws.track(mask=fifo), "frame": ws.track()}[where]
        status, output = invoke(args)
    assert_reported(status, output, 2, ("FIFO (named pipe)", "not a regular file", "was not opened"))
    assert_nothing_written(ws.output)


# --- masks: the same checks without the CLI --------------------------------------------------------


def test_mask_bomb_is_refused_before_pil_sees_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIL's own bomb check would raise DecompressionBombError (a traceback before this fix); it is never reached."""
    from PIL import Image

    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("the bomb was opened by PIL"))
    with pytest.raises(DinotrackError, match="20000x12000 pixels"):
        read_label_map(png_bomb(tmp_path / "bomb.png"))


def test_mask_over_the_limit_in_another_format_is_refused_from_pil_header(tmp_path: Path) -> None:
    """Formats without a header reader here (BMP) are sized by PIL's lazy open, still before decoding."""
    path = tmp_path / "wide.bmp"
    header = struct.pack("<2sIHHI", b"BM", 0, 0, 0, 62) + struct.pack("<IiiHHIIiiII", 40, 9000, 8000, 1, 1, 0, 0, 0, 0, 2, 0)
    path.write_bytes(header + bytes(8) + bytes(1152))  # a 2-colour palette, then a few rows of pixels
    with pytest.raises(DinotrackError, match="Mask .*wide.bmp is 9000x8000 pixels"):
        read_label_map(path)

