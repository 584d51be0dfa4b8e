"""Files built to hurt: each is refused with one clear paragraph, in bounded time and memory.

Decompression bombs (masks and frames), video headers that claim absurd sizes,
frame rates or frame counts, a folder of 100,000 frames, names that are not
UTF-8, symbolic link loops, FIFOs and device files. Each case runs through the
real CLI with the tiny backbone (see ``test_errors.py`` for the helpers), and
checks the exit status, the message, that there is no traceback and that no
output (or no false output) was written; the few the CLI cannot show (a frame
rate OpenCV has to be faked into reporting, what opening 100,000 frames
decodes, which reader sees a mask first) call the library. The bombs and
broken headers are built here in a few kB.
"""

from __future__ import annotations

import json
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

from typer.testing import CliRunner

from dinotrack import sources
from dinotrack.cli import app
from dinotrack.inputs import MAX_IMAGE_PIXELS, image_size
from dinotrack.masks import read_label_map, write_label_map
from dinotrack.sources import FOLDER_FPS, VideoWriter, open_source
from dinotrack.structs import DinotrackError
from test_errors import (  # noqa: F401  (ws is a fixture)
    FRAME_SIZE,
    Workspace,
    assert_nothing_written,
    assert_reported,
    invoke,
    noise_frames,
    squash,
    ws,
)

BOMB_SIZE = (20000, 12000)
"""``(width, height)`` of the bombs: 240 megapixels, 0.7 GB as decoded RGB, as in issue 15."""
LIMIT_WORDS = ("20000x12000 pixels", f"{MAX_IMAGE_PIXELS:,}", "MAX_IMAGE_PIXELS", "decompression bomb", "not decoded")


# --- hostile files, built small -----------------------------------------------------------------


def png_bomb(path: Path, size: tuple[int, int] = BOMB_SIZE) -> Path:
    """A valid 1-bit palette PNG of ``size`` ``(width, height)``, all zeros: about 30 kB on disk."""
    width, height = size
    rows = 1000  # compressed per call: 2.5 MB of zeros at a time
    assert height % rows == 0
    compressor = zlib.compressobj(9)
    block = bytes((1 + (width + 7) // 8) * rows)  # each row: filter byte 0, then width bits
    data = b"".join(compressor.compress(block) for _ in range(height // rows)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # 1 bit per pixel, palette
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", bytes(6)) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def jpeg_bomb(path: Path, size: tuple[int, int] = BOMB_SIZE) -> Path:
    """A JPEG of 16x16 pixels whose frame header says ``size``: a decoder would allocate all of it."""
    _, encoded = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    frame_header = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, frame_header + 5, size[1], size[0])
    path.write_bytes(bytes(data))
    return path


def avi(
    path: Path, frames: int = 5, *, rate: int | None = None, length: int | None = None, size: tuple[int, int] | None = None
) -> Path:
    """An MJPEG AVI of ``frames`` random 48x64 frames at 24 fps, with header fields overwritten.

    ``rate``: the stream's frames per second (over a scale of 1); ``length``:
    its frame count; ``size``: ``(width, height)`` in both headers and in every
    frame's JPEG header.
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, FRAME_SIZE[::-1])
    generator = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(generator.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    stream = data.index(b"strh") + 8  # AVISTREAMHEADER: ..., dwScale @20, dwRate @24, dwStart, dwLength @32
    if rate is not None:
        struct.pack_into("<II", data, stream + 20, 1, rate)
    if length is not None:
        struct.pack_into("<I", data, stream + 32, length)
    if size is not None:
        width, height = size
        struct.pack_into("<II", data, data.index(b"avih") + 8 + 32, width, height)
        struct.pack_into("<ii", data, data.index(b"strf") + 8 + 4, width, height)
        start = 0
        while (start := data.find(b"\xff\xc0", start) + 1) > 0:
            struct.pack_into(">HH", data, start + 4, height, width)
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


def frames_with_first(ws: Workspace, make: Callable[[Path], Path], name: str) -> list[object]:
    """A ``track`` run whose frame folder starts with the file ``make`` builds."""
    folder = ws.root / "hostile"
    noise_frames(folder, 3, FRAME_SIZE)
    (folder / "00000.png").unlink()
    make(folder / name)
    return ws.track(source=folder)


def folder_holding(ws: Workspace, make: Callable[[Path], Path]) -> list[object]:
    """A ``track`` run on the three good frames plus one more entry, built by ``make`` in the folder."""
    make(ws.frames / "00003.png")
    return ws.track()


def non_utf8_frame(ws: Workspace) -> list[object]:
    shutil.copy(ws.frames / "00002.png", non_utf8(ws.frames, b"00003\xff.png"))
    return ws.track()


def non_utf8_mask(ws: Workspace) -> list[object]:
    return ws.track(mask=Path(shutil.copy(ws.mask, non_utf8(ws.root, b"m\xe4sk.png"))))


def non_utf8_folder(ws: Workspace) -> list[object]:
    return ws.track(source=Path(shutil.copytree(ws.frames, non_utf8(ws.root, b"fr\xe4mes"))))


CHARACTER_DEVICE = ("is a character device", "not a regular file", "was not opened")
NOT_UTF8 = ("not valid UTF-8", "rename it")
LOOP = ("symbolic link loop",)

CASES: dict[str, tuple[Callable[[Workspace], list[object]], tuple[str, ...]]] = {
    "mask-png-bomb": (lambda ws: ws.track(mask=png_bomb(ws.root / "bomb.png")), ("Mask", "bomb.png", *LIMIT_WORDS)),
    "frame-png-bomb": (lambda ws: frames_with_first(ws, png_bomb, "00000.png"), ("00000.png", *LIMIT_WORDS, "downscale")),
    "frame-jpeg-bomb": (lambda ws: frames_with_first(ws, jpeg_bomb, "00000.jpg"), ("00000.jpg", *LIMIT_WORDS, "downscale")),
    "video-claims-huge-frames": (
        lambda ws: ws.track(source=avi(ws.root / "huge.avi", size=BOMB_SIZE)),
        ("huge.avi", "claims frames of", *LIMIT_WORDS, "downscale the video"),
    ),
    "source-dev-zero": (lambda ws: ws.track(source=Path("/dev/zero")), ("/dev/zero", *CHARACTER_DEVICE)),
    "source-dev-null": (lambda ws: ws.track(source=Path("/dev/null")), ("/dev/null", *CHARACTER_DEVICE)),
    "mask-dev-zero": (lambda ws: ws.track(mask=Path("/dev/zero")), ("Mask /dev/zero", *CHARACTER_DEVICE)),
    "mask-dev-null": (lambda ws: ws.track(mask=Path("/dev/null")), ("Mask /dev/null", *CHARACTER_DEVICE)),
    "frame-dev-zero": (lambda ws: folder_holding(ws, lambda path: path.symlink_to("/dev/zero")), ("holds 00003.png", *CHARACTER_DEVICE)),
    "source-link-loop": (lambda ws: ws.track(source=link_loop(ws.root / "loop.mp4")), ("loop.mp4", *LOOP)),
    "mask-link-loop": (lambda ws: ws.track(mask=link_loop(ws.root / "loop.png")), ("Mask", "loop.png", *LOOP)),
    "frame-link-loop": (lambda ws: folder_holding(ws, link_loop), ("holds 00003.png", *LOOP)),
    "source-non-utf8-folder": (non_utf8_folder, ("fr\\xe4mes", *NOT_UTF8)),
    "mask-non-utf8": (non_utf8_mask, ("Mask", "m\\xe4sk.png", *NOT_UTF8)),
    "frame-non-utf8": (non_utf8_frame, ("holds 00003\\xff.png", *NOT_UTF8)),
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


@pytest.mark.parametrize("where", ["source", "mask", "frame"])
def test_fifo_is_refused_without_being_opened(ws: Workspace, where: str) -> None:
    with fifo_never_read(ws.root / "pipe.png" if where != "frame" else ws.frames / "00003.png") as fifo:
        args = {"source": ws.track(source=fifo), "mask": ws.track(mask=fifo), "frame": ws.track()}[where]
        status, output = invoke(args)
    assert_reported(status, output, 2, ("FIFO (named pipe)", "not a regular file", "was not opened"))
    assert_nothing_written(ws.output)


def test_non_utf8_video_name(ws: Workspace) -> None:
    """OpenCV would crash the whole process (segmentation fault) on this name if it were given it."""
    video = avi(ws.root / "clip.avi").rename(non_utf8(ws.root, b"cl\xefp.avi"))
    status, output = invoke(ws.track(source=video))
    assert_reported(status, output, 2, ("cl\\xefp.avi", *NOT_UTF8))
    assert_nothing_written(ws.output)


def test_mp4v_writer_refuses_a_non_utf8_name(tmp_path: Path) -> None:
    with pytest.raises(DinotrackError, match="not valid UTF-8"):
        VideoWriter(non_utf8(tmp_path, b"overl\xe4y.mp4"), 24, FRAME_SIZE, codec="mp4v")
    assert not list(tmp_path.iterdir())


# --- failing midway: what was done is kept and marked --------------------------------------------


def test_bomb_among_the_frames_fails_the_run_at_that_frame(ws: Workspace) -> None:
    png_bomb(ws.frames / "00003.png")
    status, output = invoke(ws.track())
    assert_reported(status, output, 1, ("00003.png", *LIMIT_WORDS))
    run = json.loads((ws.output / "run.json").read_text())
    assert (run["status"], run["frames_done"]) == ("failed", 3)
    assert sorted(path.name for path in (ws.output / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]


# --- broken video headers: believed only within reason -------------------------------------------


def overlay_fps_and_frames(video: Path) -> tuple[float, int]:
    capture = cv2.VideoCapture(str(video))
    fps, count = capture.get(cv2.CAP_PROP_FPS), 0
    while capture.grab():
        count += 1
    capture.release()
    return fps, count


def test_absurd_fps_header_falls_back_to_24_with_a_warning(ws: Workspace) -> None:
    video = avi(ws.root / "fast.avi", rate=1_000_000_000)
    status, output = invoke([arg for arg in ws.track(source=video) if arg != "--no-overlay"])
    assert_reported(status, output, 0, ("fast.avi claims 1e+09 frames per second", "overlay uses 24"))
    assert overlay_fps_and_frames(ws.output / "overlay.mp4") == (pytest.approx(FOLDER_FPS), 5)
    assert len(list((ws.output / "masks").glob("*.png"))) == 5


def test_absurd_frame_count_header_is_treated_as_unknown(ws: Workspace) -> None:
    video = avi(ws.root / "long.avi", length=1_000_000_000)
    status, output = invoke(ws.track(source=video))
    assert_reported(status, output, 0, ("long.avi claims 1e+09 frames", "count is unknown"))
    run = json.loads((ws.output / "run.json").read_text())
    assert (run["status"], run["frames_done"], run.get("frames_total")) == ("complete", 5, None)  # unknown: left out
    assert "1000000000" not in squash(output)


@pytest.mark.parametrize("claimed", [0.0, float("nan"), -25.0, float("inf"), 0.001, 1e9])
def test_missing_or_absurd_fps_reads_as_24(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claimed: float) -> None:
    """FFmpeg itself mends most broken rates (an AVI with rate 0 reads as 24), so OpenCV's answer is faked here."""
    real = cv2.VideoCapture

    class Capture:  # a wrapper: OpenCV's classes crash when subclassed in Python
        def __init__(self, *args: object) -> None:
            self._capture = real(*args)

        def get(self, prop: int) -> float:
            return claimed if prop == cv2.CAP_PROP_FPS else self._capture.get(prop)

        def __getattr__(self, name: str) -> object:
            return getattr(self._capture, name)

    video = avi(tmp_path / "clip.avi")
    monkeypatch.setattr(sources.cv2, "VideoCapture", Capture)
    source = open_source(video)
    assert (source.fps, source.frame_count, len(list(source))) == (FOLDER_FPS, 5, 5)


# --- a folder of 100,000 frames ------------------------------------------------------------------


def test_folder_of_100k_frames_opens_without_decoding_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first frame is real; the others are empty files, which would fail if they were decoded."""
    count = 100_000
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((*FRAME_SIZE, 3), np.uint8))
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        for index in range(1, count):
            os.close(os.open(f"{index}.png", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=folder))
    finally:
        os.close(folder)
    decoded = []
    imread = cv2.imread
    monkeypatch.setattr(sources.cv2, "imread", lambda path, *flags: decoded.append(path) or imread(path, *flags))
    source = open_source(tmp_path)
    assert decoded == [str(tmp_path / "0.png")]
    assert (source.frame_count, source.size) == (count, FRAME_SIZE)
    assert [source.stem(index) for index in (0, 9, 10, 99, 100, count - 1)] == ["0", "9", "10", "99", "100", str(count - 1)]
    with pytest.raises(DinotrackError, match="damaged or not a .jpg/.png"):
        next(source.frames(start=count - 1))


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



def test_bomb_as_ground_truth_is_refused_by_evaluate(tmp_path: Path) -> None:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    ids = np.zeros((48, 64), np.uint8)
    ids[10:20, 10:20] = 1
    for name in ("00000", "00001"):
        write_label_map(pred / f"{name}.png", ids)
    write_label_map(gt / "00000.png", ids)
    png_bomb(gt / "00001.png")
    result = CliRunner().invoke(app, ["evaluate", str(pred), str(gt), "--all-frames"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "MAX_IMAGE_PIXELS" in " ".join(result.output.split())
