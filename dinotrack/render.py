"""Pictures of label maps: frames tinted with each object's DAVIS palette colour.

:func:`overlay` tints a prediction; :func:`evaluated_overlay` draws it
against the ground truth (correct, missed and wrongly claimed pixels in
styles told apart by pattern and brightness, not only hue);
:func:`side_by_side` puts prediction and ground truth next to each other.
Bands go below a picture, never over it: :func:`caption_band` (the frame's
name and a few words per object) and a :class:`Timeline` (one value per
object and frame, with a cursor). Every function takes and returns
``[H, W, 3] uint8`` RGB arrays and does no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from dinotrack.masks import PALETTE
from dinotrack.structs import UsageError

CONTOUR_WIDTH = 2
"""Thickness in pixels of the line drawn just inside each object's edge."""

_PALETTE_LUT = PALETTE.reshape(256, 1, 3)
_CONTOUR_KERNEL = np.ones((2 * CONTOUR_WIDTH + 1, 2 * CONTOUR_WIDTH + 1), dtype=np.uint8)


def overlay(rgb: np.ndarray, ids: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """``rgb`` with every object tinted and outlined in its palette colour.

    ``rgb`` is ``[H, W, 3] uint8``, ``ids`` the ``[H, W] uint8`` label map
    (0 = background). Object pixels become ``(1 - alpha) * rgb + alpha * colour``;
    the ``CONTOUR_WIDTH`` pixels inside each object's edge (where it meets
    the background or another object, not the frame border) get the plain
    colour. Background pixels are returned unchanged. Returns a new
    ``[H, W, 3] uint8`` array.
    """
    _check(rgb, ids, alpha)
    colours = _colours(ids)
    picture = _tinted(rgb, ids, colours, alpha)
    cv2.copyTo(colours, _inner_edges(ids).view(np.uint8), picture)
    return picture


def _check(rgb: np.ndarray, ids: np.ndarray, alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"The overlay opacity must be between 0 and 1 (got {alpha}).")
    if ids.shape != rgb.shape[:2]:
        raise ValueError(f"Label map {ids.shape} and frame {rgb.shape[:2]} differ in size.")


def _inner_edges(ids: np.ndarray) -> np.ndarray:
    """``[H, W] bool``: object pixels with a different id within ``CONTOUR_WIDTH`` pixels."""
    differs = (cv2.dilate(ids, _CONTOUR_KERNEL) != ids) | (cv2.erode(ids, _CONTOUR_KERNEL) != ids)
    return differs & (ids != 0)


HALO_KERNEL = np.ones((3, 3), dtype=np.uint8)
LABEL_SCALE = 0.5


def labelled(picture: np.ndarray, rgb: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``picture`` (a picture of ``ids`` over ``rgb``, all ``[H, W(, 3)]``) with each object told apart.

    Each object gets a one-pixel halo just outside its edge, black where the
    frame around it is bright and white where it is dark, so that its outline
    stands out whatever its palette colour (green on grass), and its id at its
    centroid in white with a black outline. Returns a new ``[H, W, 3] uint8`` array.
    """
    picture = picture.copy()
    around = cv2.dilate(ids, HALO_KERNEL)
    halo = (ids == 0) & (around != 0)
    owners = around[halo]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[halo]
    bright = np.bincount(owners, weights=grey, minlength=256) > 128 * np.bincount(owners, minlength=256)
    picture[halo] = np.where(bright[owners, None], np.uint8(0), np.uint8(255))
    for label, (row, column) in _centroids(ids).items():
        _outlined_text(picture, str(label), (column, row))
    return picture


def _centroids(ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """``{object id: (row, column)}`` of each object's centre of mass (whole pixels, rounded down)."""
    present = np.flatnonzero(cv2.calcHist([ids], [0], None, [256], [0, 256]).ravel()[1:]) + 1  # no sort, no copy
    centres = {}
    for label in present.tolist():
        mask = (ids == label).view(np.uint8)
        per_row = cv2.reduce(mask, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)
        per_column = cv2.reduce(mask, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)
        pixels = int(per_row.sum())
        centres[label] = (int(per_row @ np.arange(len(per_row)) / pixels), int(per_column @ np.arange(len(per_column)) / pixels))
    return centres


def _outlined_text(picture: np.ndarray, text: str, centre: tuple[int, int]) -> None:
    """White ``text`` outlined in black, centred on ``centre`` (x, y)."""
    (width, height), _ = cv2.getTextSize(text, FONT, LABEL_SCALE, 1)
    origin = (centre[0] - width // 2, centre[1] + height // 2)
    cv2.putText(picture, text, origin, FONT, LABEL_SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, origin, FONT, LABEL_SCALE, (255, 255, 255), 1, cv2.LINE_AA)


# --- Evaluated overlay: where a prediction differs from the ground truth ---------------------------------

HATCH_PERIOD = 8
"""Pixels between the starts of two hatch stripes of a missed region (45°, half of each period in colour)."""
WRONG_OUTLINE = 2
"""Thickness in pixels of the black line just inside each wrongly claimed region."""
WHITE = np.array([255, 255, 255], dtype=np.uint8)


def error_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a prediction is wrong: ``(missed, wrong)``, each ``[H, W] bool``.

    ``pred`` and ``gt`` are ``[H, W] uint8`` label maps (0 = background).
    ``missed`` (false negatives): pixels of a ground-truth object that the
    prediction gives to another label. ``wrong`` (false positives): pixels the
    prediction gives to an object that the ground truth gives to another
    label. A pixel of an id swap (both non-zero, different) is both.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"Prediction {pred.shape} and ground truth {gt.shape} differ in size.")
    differs = pred != gt
    return differs & (gt != 0), differs & (pred != 0)


def evaluated_overlay(rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """``rgb`` with a prediction drawn against its ground truth, in styles that do not rely on hue.

    ``rgb``: ``[H, W, 3] uint8``; ``pred``, ``gt``: ``[H, W] uint8`` label maps.
    Returns a new ``[H, W, 3] uint8`` picture:

    - correct object pixels: tinted in the object's colour, as :func:`overlay` (no contour);
    - missed pixels (:func:`error_masks`): hatched, 45° stripes of the
      ground-truth object's colour alternating with white;
    - wrongly claimed pixels: the predicted object's colour, opaque, with a
      black line of ``WRONG_OUTLINE`` pixels just inside the region's edge;
    - an id swap is both: stripes of the true object's colour over the
      claimed object's colour, outlined in black.

    Background that both call background is unchanged.
    """
    _check(rgb, pred, alpha)
    picture = rgb.copy()
    window = _object_window(pred, gt, margin=WRONG_OUTLINE)
    if window is not None:
        picture[window] = _evaluated(rgb[window], pred[window], gt[window], _hatch(pred.shape)[window], alpha)
    return picture


def _evaluated(rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray, hatch: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`evaluated_overlay` of a window holding every object pixel, ``hatch`` its part of the stripes."""
    missed, wrong = error_masks(pred, gt)
    correct = np.where(pred == gt, gt, 0).astype(np.uint8)
    picture = _tinted(rgb, correct, _colours(correct), alpha)
    cv2.copyTo(_colours(pred), wrong.view(np.uint8), picture)
    picture[missed & ~wrong] = WHITE
    cv2.copyTo(_colours(gt), (missed & hatch).view(np.uint8), picture)
    picture[wrong & ~_eroded(wrong, WRONG_OUTLINE)] = 0
    return picture


def _object_window(pred: np.ndarray, gt: np.ndarray, *, margin: int) -> tuple[slice, slice] | None:
    """The bounding box of every object pixel of either map, grown by ``margin`` (clipped); ``None``: no object."""
    x, y, w, h = cv2.boundingRect(cv2.bitwise_or(pred, gt))
    if w == 0:
        return None
    rows, cols = pred.shape
    return slice(max(y - margin, 0), min(y + h + margin, rows)), slice(max(x - margin, 0), min(x + w + margin, cols))


def side_by_side(rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, *, alpha: float = 0.5) -> np.ndarray:
    """``[H, 2W, 3] uint8``: :func:`overlay` of the prediction, left, and of the ground truth, right.

    Without ground truth (``gt`` ``None``) the right half is the plain frame.
    """
    right = rgb.copy() if gt is None else overlay(rgb, gt, alpha=alpha)
    return np.concatenate([overlay(rgb, pred, alpha=alpha), right], axis=1)


def _colours(ids: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8``: each pixel's palette colour."""
    return cv2.LUT(cv2.merge([ids, ids, ids]), _PALETTE_LUT)


def _tinted(rgb: np.ndarray, ids: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Object pixels moved ``alpha`` of the way to ``colours`` (``_colours(ids)``); background unchanged."""
    picture = cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(rgb, (ids == 0).view(np.uint8), picture)
    return picture


@functools.lru_cache(maxsize=4)
def _hatch(shape: tuple[int, int]) -> np.ndarray:
    """``[H, W] bool``: the coloured stripes of the hatching (read-only, shared)."""
    rows, cols = np.indices(shape, sparse=True)
    stripes = (rows + cols) % HATCH_PERIOD < HATCH_PERIOD // 2
    stripes.flags.writeable = False
    return stripes


def _eroded(mask: np.ndarray, width: int) -> np.ndarray:
    """``[H, W] bool``: pixels of ``mask`` at least ``width`` pixels from its edge (the frame border is not an edge)."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), dtype=np.uint8)
    return cv2.erode(mask.view(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).view(bool)


# --- Bands around a picture: a caption and a timeline ----------------------------------------------------

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
ROW_HEIGHT = 20
"""Pixels per caption row."""
ITEM_WIDTH = 170
"""Pixels per object entry in a caption row."""
MAX_OBJECT_ROWS = 3
"""Caption rows for objects at most; objects beyond them are counted ("+2 more")."""
TIMELINE_HEIGHT = 48
BAND_COLOUR = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
GRID_COLOUR = (80, 80, 80)


@dataclass(frozen=True)
class Caption:
    """What a caption band says: a title (the frame's name), a note, one entry per object.

    ``entries``: ``{object id: text}``, drawn after a swatch of the object's
    colour. ``legend``: show the key to :func:`evaluated_overlay`'s styles.
    """

    title: str
    entries: Mapping[int, str] = field(default_factory=dict)
    note: str = ""
    legend: bool = False


def caption_rows(width: int, objects: int) -> int:
    """Rows a caption of ``width`` pixels gives to ``objects`` entries (at least 1, at most ``MAX_OBJECT_ROWS``)."""
    per_row = max(1, (width - 8) // ITEM_WIDTH)
    return min(max(1, -(-objects // per_row)), MAX_OBJECT_ROWS)


def caption_band(caption: Caption, width: int, object_rows: int) -> np.ndarray:
    """The caption drawn on a ``[(1 + object_rows) * ROW_HEIGHT, width, 3] uint8`` band.

    Row 1: the title, the note and (with ``legend``) the key to the error
    styles at the right. Then the entries, left to right, as many as
    ``object_rows`` rows hold; the rest are counted.
    """
    band = np.empty(((1 + object_rows) * ROW_HEIGHT, width, 3), dtype=np.uint8)
    band[:] = BAND_COLOUR
    _text(band, f"{caption.title}   {caption.note}".rstrip(), (6, 0))
    if caption.legend:
        _legend(band, width)
    per_row = max(1, (width - 8) // ITEM_WIDTH)
    entries = list(caption.entries.items())
    room = per_row * object_rows
    if len(entries) > room:
        entries, rest = entries[: room - 1], len(entries) - room + 1
        entries.append((0, f"+{rest} more"))
    for slot, (label, text) in enumerate(entries):
        x, row = 6 + (slot % per_row) * ITEM_WIDTH, 1 + slot // per_row
        if label:
            cv2.rectangle(band, (x, row * ROW_HEIGHT + 5), (x + 10, row * ROW_HEIGHT + 15), _colour(label), cv2.FILLED)
            cv2.rectangle(band, (x, row * ROW_HEIGHT + 5), (x + 10, row * ROW_HEIGHT + 15), TEXT_COLOUR, 1)
        _text(band, text, (x + 16, row))
    return band


def _legend(band: np.ndarray, width: int) -> None:
    """The key at the right of the first row: a hatched swatch "missed", an outlined one "wrong"."""
    x = width - 150
    if x < 120:
        return
    swatch = band[4:16, x : x + 12]
    swatch[:] = WHITE
    swatch[_hatch((12, 12))] = TEXT_COLOUR[0] // 2
    _text(band, "missed", (x + 16, 0))
    x += 76
    band[4:16, x : x + 12] = 0
    band[6:14, x + 2 : x + 10] = 200
    _text(band, "wrong", (x + 16, 0))


def _text(band: np.ndarray, text: str, at: tuple[int, int]) -> None:
    """Draw ``text`` at pixel column ``at[0]`` of caption row ``at[1]``."""
    x, row = at
    cv2.putText(band, text, (x, row * ROW_HEIGHT + 14), FONT, FONT_SCALE, TEXT_COLOUR, 1, cv2.LINE_AA)


def _colour(label: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[label])


class Timeline:
    """A strip that plots each object's value (0..1) per frame so far, one line per object, with a cursor.

    ``frames``: how many frames the video has (``None`` when unknown: the
    strip then starts over every ``width`` frames, as it does past
    ``frames``). Each :meth:`add` draws one step, so a frame costs the same
    however long the video is.
    """

    def __init__(self, width: int, frames: int | None) -> None:
        self.width = width
        self.span = max(frames or width, 1)
        self._plot = self._blank()
        self._last: dict[int, tuple[int, int, int]] = {}  # object id -> (frame index, x, y) of its last point

    def add(self, index: int, values: Mapping[int, float]) -> np.ndarray:
        """Plot frame ``index``'s ``{object id: value in [0, 1]}``; returns the strip, ``[TIMELINE_HEIGHT, width, 3] uint8``."""
        if index % self.span == 0 and index:
            self._plot, self._last = self._blank(), {}
        x = self._x(index)
        for label, value in values.items():
            y = self._y(value)
            last = self._last.get(label)
            start = last[1:] if last is not None and last[0] == index - 1 else (x, y)
            cv2.line(self._plot, start, (x, y), _colour(label), 1, cv2.LINE_8)
            self._last[label] = (index, x, y)
        strip = self._plot.copy()
        strip[:, x] = TEXT_COLOUR
        return strip

    def _x(self, index: int) -> int:
        return (index % self.span) * (self.width - 1) // max(self.span - 1, 1)

    def _y(self, value: float) -> int:
        return 3 + round((1.0 - min(max(value, 0.0), 1.0)) * (TIMELINE_HEIGHT - 7))

    def _blank(self) -> np.ndarray:
        plot = np.empty((TIMELINE_HEIGHT, self.width, 3), dtype=np.uint8)
        plot[:] = BAND_COLOUR
        plot[self._y(0.5)] = GRID_COLOUR
        plot[self._y(1.0)] = GRID_COLOUR
        return plot


def with_bands(picture: np.ndarray, *bands: np.ndarray) -> np.ndarray:
    """``picture`` with ``bands`` (each ``[h_i, W, 3] uint8``) stacked below it: ``[H + sum h_i, W, 3] uint8``."""
    return np.concatenate([picture, *bands], axis=0)
