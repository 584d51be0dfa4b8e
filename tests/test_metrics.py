"""J, F and their statistics against hand-computed cases and a literal DAVIS-toolkit F."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.morphology import disk as skimage_disk

from dinotrack import metrics
from dinotrack.metrics import boundary_f, boundary_map, boundary_radius, disk, jaccard, statistics


def frames(*masks: np.ndarray) -> np.ndarray:
    return np.stack(masks).astype(bool)


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def toolkit_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """The DAVIS 2017 toolkit's f_measure, written out plainly for one [H, W] frame."""

    def seg2bmap(seg: np.ndarray) -> np.ndarray:
        e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
        e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
        b = seg ^ e | seg ^ s | seg ^ se
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = 0
        return b

    kernel = skimage_disk(np.ceil(0.008 * np.linalg.norm(pred.shape))).astype(np.uint8)
    fg, gt_b = seg2bmap(pred), seg2bmap(gt)
    fg_match = fg * cv2.dilate(gt_b.astype(np.uint8), kernel)
    gt_match = gt_b * cv2.dilate(fg.astype(np.uint8), kernel)
    n_fg, n_gt = np.sum(fg), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


EMPTY = np.zeros((10, 10), dtype=bool)
DOT = square(10, 4, 4, 1)


def test_both_empty_score_one() -> None:
    assert jaccard(frames(EMPTY), frames(EMPTY)).tolist() == [1.0]
    assert boundary_f(frames(EMPTY), frames(EMPTY)).tolist() == [1.0]


@pytest.mark.parametrize("pred, gt", [(EMPTY, DOT), (DOT, EMPTY)])
def test_one_empty_scores_zero(pred: np.ndarray, gt: np.ndarray) -> None:
    assert jaccard(frames(pred), frames(gt)).tolist() == [0.0]
    assert boundary_f(frames(pred), frames(gt)).tolist() == [0.0]


def test_one_pixel_boundary_is_its_two_by_two_corner() -> None:
    expected = np.zeros((10, 10), dtype=bool)
    expected[3:5, 3:5] = True
    assert (boundary_map(DOT) == expected).all()


@pytest.mark.parametrize(
    "row, col, expected_f",
    [(4, 4, 1.0), (4, 5, 1.0), (5, 6, 0.25)],  # same pixel; one to the east; (1, 2) away: 1 of 4 matched each way
)
def test_one_pixel_objects(row: int, col: int, expected_f: float) -> None:
    pred = square(10, row, col, 1)
    assert boundary_f(frames(pred), frames(DOT)).tolist() == [expected_f]
    assert jaccard(frames(pred), frames(DOT)).tolist() == [1.0 if (row, col) == (4, 4) else 0.0]


def test_mask_touching_the_border_has_boundary_only_inside() -> None:
    left_half = np.zeros((10, 10), dtype=bool)
    left_half[:, :5] = True
    expected = np.zeros((10, 10), dtype=bool)
    expected[:, 4] = True
    assert (boundary_map(left_half) == expected).all()


def test_full_frame_mask_has_no_boundary() -> None:
    full = np.ones((10, 10), dtype=bool)
    assert not boundary_map(full).any()
    assert boundary_f(frames(full), frames(EMPTY)).tolist() == [1.0]  # the toolkit's rule: both boundaries empty
    assert jaccard(frames(full), frames(EMPTY)).tolist() == [0.0]


@pytest.mark.parametrize("width, expected_f", [(6, 1.0), (7, 0.0)])
def test_border_masks_within_and_beyond_tolerance(width: int, expected_f: float) -> None:
    gt, pred = np.zeros((2, 10, 10), dtype=bool)
    gt[:, :5], pred[:, :width] = True, True  # 10x10: tolerance 1 px; boundaries 1 or 2 columns apart
    assert boundary_f(pred[None], gt[None]).tolist() == [expected_f]
    assert jaccard(pred[None], gt[None]).tolist() == [5 / width]


def test_shifted_square_precision_and_recall_one_half() -> None:
    gt, pred = square(60, 10, 10, 20), square(60, 10, 13, 20)  # 60x60: tolerance 1 px
    # Each boundary is an 80-pixel ring; 19 + 19 on the shared rows and 2 at their ends match.
    assert boundary_f(frames(pred), frames(gt)).tolist() == [0.5]
    assert jaccard(frames(pred), frames(gt)).tolist() == [340 / 460]


def test_void_pixels_count_for_neither_mask() -> None:
    gt, pred = square(60, 10, 10, 20), square(60, 10, 13, 20)
    void = np.zeros((60, 60), dtype=bool)
    void[:, 30:] = True  # hides the prediction's part outside the ground truth
    assert jaccard(frames(pred), frames(gt), frames(void)).tolist() == [340 / 400]


def test_frames_are_scored_independently() -> None:
    scores = jaccard(frames(DOT, EMPTY, DOT), frames(DOT, DOT, EMPTY))
    assert scores.tolist() == [1.0, 0.0, 0.0]
    assert scores.dtype == np.float64


def test_tolerance_is_eight_pixels_at_davis_size() -> None:
    assert boundary_radius(480, 854) == 8
    assert boundary_radius(10, 10) == 1


@pytest.mark.parametrize("radius", range(1, 13))
def test_disk_matches_skimage(radius: int) -> None:
    assert (disk(radius) == skimage_disk(radius)).all()


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        jaccard(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool))


def test_statistics_of_a_linear_decline_over_300_frames() -> None:
    values = 1 - np.arange(300) / 299
    mean, recall, decay = statistics(values)
    # Bins: frames 0..75 and 224..299 (edges round(linspace(0, 299, 5))); a uint8 cast would wrap 299 to 43.
    assert mean == pytest.approx(0.5)
    assert recall == 0.5
    assert decay == pytest.approx(224 / 299)


@pytest.mark.parametrize(
    "values, expected_decay",
    [([1, 0.8, 0.6, 0.4, 0.2], 0.9 - 0.3), ([1, 0.5, 0], 0.75), ([0.7], 0.0)],  # 3 frames: edge 1.5 rounds up
)
def test_decay_of_short_series(values: list[float], expected_decay: float) -> None:
    assert statistics(np.array(values))[2] == pytest.approx(expected_decay)


def test_recall_counts_frames_strictly_above_one_half() -> None:
    assert statistics(np.array([0.5, 0.51, 0.2, 0.9]))[1] == 0.5


def random_masks(seed: int, height: int, width: int, count: int = 2) -> list[np.ndarray]:
    """Blobby masks: thresholded, blurred noise, so boundaries are long and varied."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        noise = cv2.GaussianBlur(rng.random((height, width)), (0, 0), sigmaX=rng.uniform(0.5, 4))
        masks.append(noise > np.quantile(noise, rng.uniform(0.05, 0.95)))
    return masks


sizes = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_scores_properties(case: tuple[int, int, int]) -> None:
    a, b = random_masks(*case)
    j_ab, j_ba = jaccard(frames(a), frames(b)), jaccard(frames(b), frames(a))
    assert 0 <= j_ab[0] <= 1
    assert j_ab[0] == j_ba[0]
    assert jaccard(frames(a), frames(a))[0] == 1
    assert boundary_f(frames(a), frames(a))[0] == 1
    assert 0 <= boundary_f(frames(a), frames(b))[0] <= 1
    assert boundary_f(frames(a), frames(b))[0] == pytest.approx(boundary_f(frames(b), frames(a))[0])


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(1, 300)))
def test_boundary_f_equals_the_toolkit_bit_for_bit(case: tuple[int, int, int]) -> None:
    pred, gt = random_masks(*case)
    assert boundary_f(frames(pred), frames(gt))[0] == toolkit_f(pred, gt)


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(1, 300)))
def test_boundary_f_by_distance_transform_equals_the_toolkit_bit_for_bit(case: tuple[int, int, int]) -> None:
    """The distance transform that large frames use matches the toolkit's dilation at every radius."""
    pred, gt = random_masks(*case)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "DISTANCE_RADIUS", 0)
        assert boundary_f(frames(pred), frames(gt))[0] == toolkit_f(pred, gt)


def test_boundary_f_of_a_large_frame_equals_the_toolkit() -> None:
    """2000x1500 (tolerance 20 px, past DISTANCE_RADIUS): ragged shapes a few pixels apart."""
    rng = np.random.default_rng(3)
    coarse = rng.random((15, 20)) > 0.5
    gt = cv2.resize(coarse.astype(np.uint8), (2000, 1500), interpolation=cv2.INTER_NEAREST).astype(bool)
    pred = np.roll(gt, (7, -12), axis=(0, 1)) ^ (cv2.resize(rng.random((150, 200)).astype(np.float32), (2000, 1500)) > 0.93)
    assert metrics.boundary_radius(1500, 2000) >= metrics.DISTANCE_RADIUS
    assert boundary_f(frames(pred), frames(gt))[0] == toolkit_f(pred, gt)
