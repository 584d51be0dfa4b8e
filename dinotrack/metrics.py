"""DAVIS region (J) and boundary (F) scores, exactly as the DAVIS 2017 toolkit defines them.

Every function takes a stack of binary masks, ``[T, H, W] bool``, one object
through T frames, and returns one score per frame, ``[T] float64``:

- J: intersection over union; 1 when both masks are empty.
- F: boundary F-measure. A pixel is on the boundary where the mask differs from
  its east, south or south-east neighbour; a boundary pixel is matched when the
  other boundary has a pixel within ``ceil(0.008 * image diagonal)`` pixels (a
  disk; 8 px at 854x480). Precision and recall are the matched fractions and
  F = 2PR / (P + R). Both boundaries empty: F = 1; exactly one empty: F = 0.

``void`` (optional, ``[T, H, W] bool``) marks pixels that count for neither mask.
Results agree with the toolkit to the last bit; the boundary work is done on
the masks' bounding box only, and large tolerances use a distance transform
instead of the dilation (:func:`_matched`), which give the same numbers much faster.
"""

from __future__ import annotations

import functools

import warnings

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008
DISTANCE_RADIUS = 20
"""Tolerance from which boundary matching uses a distance transform instead of a dilation (measured, one
frame pair: 854x480, r=8: dilation 3.2 ms, transform 9.1; 1920x1080, r=18: 21 and 22; 3840x2160, r=36: 317 and 139)."""
DECAY_BINS = 4
RECALL_THRESHOLD = 0.5


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J per frame: ``[T, H, W] bool`` masks in, ``[T] float64`` out."""
    pred, gt = _without_void(pred, gt, void)
    intersection, union = _overlap_counts(pred, gt).T
    scores = np.ones(len(union), dtype=np.float64)
    present = union > 0
    scores[present] = intersection[present] / union[present]
    return scores


def boundary_f(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Boundary F-measure per frame: ``[T, H, W] bool`` masks in, ``[T] float64`` out."""
    pred, gt = _without_void(pred, gt, void)
    radius = boundary_radius(*pred.shape[1:])
    return np.array([_frame_boundary_f(p, g, radius) for p, g in zip(pred, gt)], dtype=np.float64)


def statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of a ``[T] float64`` series of per-frame scores.

    Recall is the fraction of frames scoring above 0.5. Decay is the mean of
    the first quarter minus the mean of the last: the frame indices are cut
    into four bins at ``linspace(0, T - 1, 5)`` rounded half up, neighbouring bins
    sharing their edge frame. NaN scores are skipped; an empty series gives NaN.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    edges = np.round(np.linspace(1, len(values), DECAY_BINS + 1) + 1e-10).astype(np.int64) - 1
    first, last = values[edges[0] : edges[1] + 1], values[edges[-2] : edges[-1] + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.mean(values > RECALL_THRESHOLD)
        decay = np.nanmean(first) - np.nanmean(last)
    return float(mean), float(recall), float(decay)


def boundary_radius(height: int, width: int) -> int:
    """Matching tolerance in pixels for a frame size: ``ceil(0.008 * diagonal)``."""
    return int(np.ceil(BOUNDARY_TOLERANCE * np.linalg.norm((height, width))))


@functools.lru_cache(maxsize=8)
def disk(radius: int) -> np.ndarray:
    """Disk structuring element, ``[2r+1, 2r+1] uint8``: offsets with ``dy² + dx² <= r²``."""
    offsets = np.arange(-radius, radius + 1)
    kernel = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)
    kernel.setflags(write=False)  # cached: shared by every caller
    return kernel


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of ``[..., H, W] bool`` masks, same shape and dtype.

    A pixel is boundary where it differs from its east, south or south-east
    neighbour. On the last row only the east neighbour counts, on the last
    column only the south one, and the bottom-right pixel never is boundary.
    """
    east, south, south_east = (np.zeros_like(mask) for _ in range(3))
    east[..., :, :-1] = mask[..., :, 1:]
    south[..., :-1, :] = mask[..., 1:, :]
    south_east[..., :-1, :-1] = mask[..., 1:, 1:]
    boundary = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    boundary[..., -1, :] = mask[..., -1, :] ^ east[..., -1, :]
    boundary[..., :, -1] = mask[..., :, -1] ^ south[..., :, -1]
    boundary[..., -1, -1] = False
    return boundary


def _without_void(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"Expected two [T, H, W] masks of one shape, got {pred.shape} and {gt.shape}.")
    if void is None:
        return pred, gt
    keep = ~np.asarray(void, dtype=bool)
    return pred & keep, gt & keep


def _overlap_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Intersection and union pixel counts per frame, ``[T, 2] int64`` (frame by frame: cache-friendly)."""
    counts = [(np.count_nonzero(p & g), np.count_nonzero(p | g)) for p, g in zip(pred, gt)]
    return np.array(counts, dtype=np.int64).reshape(len(pred), 2)


def _frame_boundary_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    window = _occupied_window(pred, gt)
    if window is None:
        return 1.0
    pred_boundary, gt_boundary = boundary_map(pred[window]), boundary_map(gt[window])
    n_pred, n_gt = np.count_nonzero(pred_boundary), np.count_nonzero(gt_boundary)
    if n_pred == 0 or n_gt == 0:
        return 1.0 if n_pred == n_gt else 0.0
    precision = _matched(pred_boundary, gt_boundary, radius) / n_pred
    recall = _matched(gt_boundary, pred_boundary, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _matched(boundary: np.ndarray, other: np.ndarray, radius: int) -> int:
    """How many pixels of ``boundary`` lie within :func:`disk` ``radius`` of a pixel of ``other`` (both ``[H, W] bool``).

    The toolkit dilates ``other`` by the disk. From :data:`DISTANCE_RADIUS` on,
    the exact Euclidean distance transform (Felzenszwalb and Huttenlocher,
    O(pixels) whatever the radius) gives the same pixels faster: a distance is
    the square root of an integer ``dy² + dx²``, at most ``radius`` exactly
    when the offset lies in the disk.
    """
    if radius >= DISTANCE_RADIUS:
        distance = cv2.distanceTransform((~other).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return int(np.count_nonzero(distance[boundary] <= radius))
    reach = cv2.dilate(other.view(np.uint8), disk(radius))
    return int(np.count_nonzero(reach[boundary]))


def _occupied_window(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of both masks grown by one pixel on every side, clipped to the frame.

    Boundary maps of the window equal those of the full frame inside it (the
    extra row and column are empty, or are the frame's own last row and
    column), and every boundary pixel lies inside it; ``None`` when both are empty.
    """
    x, y, w, h = cv2.boundingRect((pred | gt).view(np.uint8))
    if w == 0:
        return None
    rows, cols = pred.shape
    return slice(max(y - 1, 0), min(y + h + 1, rows)), slice(max(x - 1, 0), min(x + w + 1, cols))
