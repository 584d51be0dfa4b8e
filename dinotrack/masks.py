"""Label maps on disk: DAVIS-compatible palette PNGs in, palette PNGs out.

A label map is a ``[H, W] uint8`` array of object ids: 0 is background,
1..254 are objects (gaps allowed). 255 is never an object id.

A mask file is checked by :mod:`dinotrack.inputs` before it is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dinotrack.files import atomic_write
from dinotrack.inputs import image_size, path_problem, printable, too_many_pixels
from dinotrack.structs import UsageError

MAX_ID = 254
GREY_LEVELS = 16
"""A grayscale mask with more distinct values than this, spread over twice as many, is a blurred
0/255 mask rather than object ids (ids are numbered closely)."""


def davis_palette() -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map: ``[256, 3] uint8``, id 0 black, 1 (128,0,0), ..."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    ids = np.arange(256)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= (((ids >> channel) & 1) << (7 - bit)).astype(np.uint8)
        ids = ids >> 3
    return palette


PALETTE = davis_palette()


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a mask PNG as object ids, ``[H, W] uint8``.

    Accepted: indexed/palette PNGs (the index is the id, DAVIS-2017 style),
    grayscale 8/16-bit (only 0 and the maximum, e.g. 0/255 → binary, id 1;
    otherwise grey values are ids), 1-bit, and RGB(A) images whose colours are
    those of the DAVIS palette (or grey). Anything else raises :class:`UsageError`,
    as do paths that are not regular files and images over :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    problem = path_problem(path) or ("is a folder" if path.is_dir() else None)
    if problem:
        raise UsageError(f"Mask {printable(path)} {problem}. Give the path of a PNG label map.")
    try:
        check_mask_pixels(path, image_size(path))
        with Image.open(path) as image:
            check_mask_pixels(path, image.size)
            if image.format == "JPEG":
                raise UsageError(
                    f"Mask {path} is a JPEG image. Save masks as PNG: JPEG compression adds grey levels "
                    "around the edges, which would read as other objects."
                )
            image.load()
            return _ids_from_image(image, path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise UsageError(
            f"Mask {path} is not a readable image ({error}). Give a PNG label map: "
            "indexed (ids 0..254, 0 = background) or grayscale (0/255)."
        ) from None


def check_mask_pixels(path: Path, size: tuple[int, int] | None) -> None:
    """A :class:`UsageError` if a mask of ``size`` (``(width, height)``; ``None``: not known yet) is too large.

    Call it with :func:`dinotrack.inputs.image_size` before decoding, and with the opened image's size.
    """
    problem = size and too_many_pixels(size)
    if problem:
        raise UsageError(f"Mask {path} is {problem}. Give the first frame's mask at the frames' size.")


def _ids_from_image(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode == "P":
        return _checked_ids(np.asarray(image), path)
    if image.mode == "1":
        return np.asarray(image).astype(np.uint8)
    if image.mode in ("RGB", "RGBA", "LA", "PA"):
        return _ids_from_colours(image, path)
    values = np.asarray(image)
    if values.ndim != 2:
        raise UsageError(f"Mask {path} has an unsupported image mode {image.mode!r}; save it as an indexed or grayscale PNG.")
    present = np.unique(values)
    if present.size == 2 and present[0] == 0 and present[1] == values.max() and present[1] in (255, 65535, 1):
        return (values > 0).astype(np.uint8)
    if present.size == 1 and present[0] in (255, 65535):
        return np.ones(values.shape, dtype=np.uint8)
    if present.size > GREY_LEVELS and present[-1] >= 2 * present.size:
        raise UsageError(
            f"Mask {path} holds {present.size} grey levels spread up to {present[-1]}: a 0/255 mask whose edges "
            "were blurred, as JPEG compression or anti-aliasing do, not object ids. Save masks as PNG (JPEG "
            "compression adds grey levels), with 0 for the background and 255 (or one id per object) inside."
        )
    return _checked_ids(values, path)


def _ids_from_colours(image: Image.Image, path: Path) -> np.ndarray:
    """Ids of a colour mask: DAVIS palette colours give their index; other all-grey images are read
    as grayscale. Fully transparent pixels are background."""
    rgba = np.asarray(image.convert("RGBA"))
    rgb = np.where(rgba[..., 3:] == 0, np.uint8(0), rgba[..., :3])
    colours, where = np.unique(_colour_codes(rgb), return_inverse=True)
    slots = np.searchsorted(_SORTED_PALETTE_CODES, colours).clip(max=MAX_ID)
    in_palette = _SORTED_PALETTE_CODES[slots] == colours
    if in_palette.all():
        return _PALETTE_ORDER[slots].astype(np.uint8)[where.reshape(rgb.shape[:2])]
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return _ids_from_image(Image.fromarray(rgb[..., 0]), path)
    code = int(colours[~in_palette][0])
    raise UsageError(
        f"Mask {path} is a colour image with colour {(code >> 16, (code >> 8) & 255, code & 255)} that is not in "
        "the DAVIS palette, so its object ids cannot be read. Save it as an indexed PNG "
        "(mode 'P') or a grayscale PNG whose values are the ids."
    )


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3] uint8`` colours as ``[...] int64`` codes 0xRRGGBB."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_PALETTE_ORDER = np.argsort(_colour_codes(PALETTE[: MAX_ID + 1]))
"""Object ids sorted by their palette colour's code (the colours are distinct)."""
_SORTED_PALETTE_CODES = _colour_codes(PALETTE[_PALETTE_ORDER])


def _checked_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """``values`` as ``uint8`` ids; a :class:`UsageError` for a value outside 0..MAX_ID."""
    bad = values[(values < 0) | (values > MAX_ID)]
    if bad.size:
        raise UsageError(
            f"Mask {path} holds the value {bad.flat[0]}, but object ids must be 0..{MAX_ID} "
            "(0 = background). Renumber the objects, or save a binary mask as 0/255 grayscale."
        )
    return values.astype(np.uint8)


PNG_LEVEL = 1
"""zlib level of the mask PNGs. Measured on DAVIS masks at 3840x2160: level 1 takes 10.5 ms for
12 KiB, the default 6 16.1 ms for 6 KiB, 9 22.6 ms for 4 KiB (at 854x480: 0.8, 0.9 and 5.3 ms)."""


def write_label_map(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write ``[H, W] uint8`` ids as an indexed PNG with the DAVIS palette.

    The file appears whole or not at all: it is written under a temporary
    name in the same folder, then renamed.
    """
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8), mode="P")
    image.putpalette(PALETTE.tobytes())
    atomic_write(path, lambda temporary: image.save(temporary, format="PNG", compress_level=PNG_LEVEL))


def object_ids(ids: np.ndarray) -> list[int]:
    """The object ids present in a label map, background excluded, ascending."""
    return [int(v) for v in np.unique(ids) if v != 0]
