"""Pictures of label maps: frames tinted with each object's DAVIS palette colour."""

from __future__ import annotations

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
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"The overlay opacity must be between 0 and 1 (got {alpha}).")
    if ids.shape != rgb.shape[:2]:
        raise ValueError(f"Label map {ids.shape} and frame {rgb.shape[:2]} differ in size.")
    colours = cv2.LUT(cv2.merge([ids, ids, ids]), _PALETTE_LUT)
    picture = cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(colours, _inner_edges(ids).view(np.uint8), picture)
    cv2.copyTo(rgb, (ids == 0).view(np.uint8), picture)
    return picture


def _inner_edges(ids: np.ndarray) -> np.ndarray:
    """``[H, W] bool``: object pixels with a different id within ``CONTOUR_WIDTH`` pixels."""
    differs = (cv2.dilate(ids, _CONTOUR_KERNEL) != ids) | (cv2.erode(ids, _CONTOUR_KERNEL) != ids)
    return differs & (ids != 0)
