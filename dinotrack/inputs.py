"""Input files checked before they are opened or decoded: the defences against hostile files.

:mod:`dinotrack.sources` (frames, videos) and :mod:`dinotrack.masks` (label
maps) use these checks:

- A path must be a regular file or a folder, with a valid UTF-8 name. Only
  ``stat`` looks at it first, so a FIFO (whose reader would wait forever), a
  device such as ``/dev/zero`` (which never ends) or a symbolic link loop is
  refused without being opened. OpenCV crashes the process on a name that is
  not UTF-8, so such names are refused too.
- An image may hold at most :data:`MAX_IMAGE_PIXELS` pixels. PNG and JPEG
  sizes are read from their headers, so a decompression bomb (a small file
  that decodes to gigabytes) is refused before anything decodes it.

Problems come back as words that follow the file's name in the caller's
message (``f"Mask {name} {problem}. ..."``); each caller says what to do.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import unicodedata
from pathlib import Path
from typing import BinaryIO

MAX_IMAGE_PIXELS = 8192 * 8192
"""Most pixels (67,108,864) an image may have to be decoded, mask or frame.

8K UHD (7680x4320, 33 Mpx) fits twice over, and a square 8192x8192 fits. An
RGB frame at the limit already takes 192 MiB, several of which are in flight
at once; larger images are not worth tracking at full size, and a file that
claims more is most likely a decompression bomb.
"""

_SPECIAL_FILES = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an input, as words that follow its name; ``None`` for a regular file or a folder.

    Only the name and ``stat`` are looked at; nothing is opened.
    """
    if not is_utf8(str(path)):
        return (
            "has a name that is not valid UTF-8 (dinotrack does not open such names: OpenCV crashes on them). "
            "Rename it with UTF-8 characters (e.g. `convmv -f latin1 -t utf8 --notest NAME`)"
        )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a symbolic link to a missing file" if path.is_symlink() else "does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symbolic link loop (following its links leads back to them)"
        return f"cannot be read ({error.strerror})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = _SPECIAL_FILES.get(stat.S_IFMT(mode), "a special file")
    return f"is {kind}, not a regular file, so it was not opened (reading it could wait forever or never end)"


def is_utf8(name: str) -> bool:
    """Whether ``name``, as Python decoded it from the file system, was valid UTF-8.

    Bytes that are not UTF-8 become lone surrogates (``surrogateescape``), which do not encode.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def folded(name: str) -> str:
    """``name`` as a case-insensitive file system compares it: one Unicode form (NFC), case folded.

    Two names that fold alike would be one file on macOS or Windows.
    """
    return unicodedata.normalize("NFC", name).casefold()


def printable(path: str | os.PathLike) -> str:
    """``path`` for messages: bytes that are not UTF-8 are shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def too_many_pixels(size: tuple[int, int]) -> str | None:
    """``None`` if an image of ``size`` (``(width, height)``) may be decoded, else its size and the limit in words.

    The words follow "is" in the caller's message: ``f"Mask {name} is {words}. ..."``.
    """
    width, height = size
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return (
        f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels), over dinotrack's limit of "
        f"{MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS, 8192x8192; 8K video is 7680x4320). It was not decoded: "
        "it is too large to track, or a decompression bomb (a small file that decodes to gigabytes)"
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAME_HEADERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG SOFn markers, which hold the image size (0xC4, 0xC8 and 0xCC are other segments)."""
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
"""JPEG markers without a length field (TEM, RST0..7)."""
_JPEG_MAX_MARKERS = 4096
"""Most markers (and fill bytes) read while looking for a JPEG's frame header. Real files have a
few dozen before it, a few hundred with an ICC profile in many chunks; a file of 0xFF bytes or of
empty segments would otherwise be walked byte by byte."""


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG or JPEG file, read from its header without decoding; ``None`` for other content.

    The file is opened non-blocking and read only when it is a regular file, so
    a FIFO put in its place after it was checked cannot hang the reader.
    Raises :class:`OSError` when it cannot be opened.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        head = file.read(24)
        if len(head) == 24 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head.startswith(b"\xff\xd8"):
            file.seek(2)
            return _jpeg_size(file)
    return None


def _jpeg_size(file: BinaryIO) -> tuple[int, int] | None:
    """``(width, height)`` from the frame header of the JPEG ``file``, read from just after its SOI marker.

    Walks at most _JPEG_MAX_MARKERS marker segments, skipping each by its length.
    """
    for _ in range(_JPEG_MAX_MARKERS):
        if file.read(1) != b"\xff":
            return None
        marker = file.read(1)
        if marker == b"\xff":  # a fill byte: the marker comes after it
            file.seek(-1, os.SEEK_CUR)
            continue
        if not marker or marker[0] in (0xD9, 0xDA):  # end of file or image, or scan data before any frame header
            return None
        if marker[0] in _JPEG_STANDALONE:
            continue
        segment = file.read(7)  # length (2 bytes, counting itself), then a frame header's precision, height, width
        length = int.from_bytes(segment[:2], "big")
        if len(segment) < 7 or length < 2:
            return None
        if marker[0] in _JPEG_FRAME_HEADERS:
            height, width = struct.unpack(">HH", segment[3:7])
            return width, height
        file.seek(length - 7, os.SEEK_CUR)
    return None
