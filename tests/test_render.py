"""Overlay pictures: tint inside objects, plain colour on their edges, background untouched; errors against
the ground truth where they are; bands below the picture."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dinotrack.masks import PALETTE
from dinotrack.render import (
    CONTOUR_WIDTH,
    HATCH_PERIOD,
    MAX_OBJECT_ROWS,
    ROW_HEIGHT,
    TEXT_COLOUR,
    TIMELINE_HEIGHT,
    WRONG_OUTLINE,
    Caption,
    Timeline,
    caption_band,
    caption_rows,
    error_masks,
    evaluated_overlay,
    labelled,
    overlay,
    side_by_side,
    with_bands,
)
from dinotrack.structs import UsageError


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)


@pytest.fixture
def ids() -> np.ndarray:
    """Object 1 at rows/cols 10..29, object 3 touching it on the right, object 2 at the frame border."""
    ids = np.zeros((60, 80), dtype=np.uint8)
    ids[10:30, 10:30] = 1
    ids[10:30, 30:50] = 3
    ids[40:60, 60:80] = 2
    return ids


def test_shape_and_dtype_are_kept(frame: np.ndarray, ids: np.ndarray) -> None:
    picture = overlay(frame, ids)
    assert picture.shape == frame.shape and picture.dtype == np.uint8
    assert picture is not frame


def test_background_is_unchanged(frame: np.ndarray, ids: np.ndarray) -> None:
    picture = overlay(frame, ids)
    np.testing.assert_array_equal(picture[ids == 0], frame[ids == 0])


def test_object_pixels_move_halfway_to_the_palette_colour(frame: np.ndarray, ids: np.ndarray) -> None:
    picture = overlay(frame, ids, alpha=0.5).astype(float)
    inside = (slice(15, 25), slice(15, 25))  # object 1, away from its edges
    expected = 0.5 * frame[inside] + 0.5 * PALETTE[1]
    assert np.abs(picture[inside] - expected).max() <= 1


def test_alpha_one_paints_objects_in_their_colour(frame: np.ndarray, ids: np.ndarray) -> None:
    picture = overlay(frame, ids, alpha=1.0)
    for object_id in (1, 2, 3):
        assert (picture[ids == object_id] == PALETTE[object_id]).all()


def test_contours_run_inside_each_object_in_its_colour(frame: np.ndarray, ids: np.ndarray) -> None:
    picture = overlay(frame, ids, alpha=0.0)
    edge_of_one = picture[10:30, 10 : 10 + CONTOUR_WIDTH]  # left edge of object 1
    assert (edge_of_one == PALETTE[1]).all()
    where_one_meets_three = picture[15:25, 30 - CONTOUR_WIDTH : 30 + CONTOUR_WIDTH]
    assert (where_one_meets_three[:, :CONTOUR_WIDTH] == PALETTE[1]).all()
    assert (where_one_meets_three[:, CONTOUR_WIDTH:] == PALETTE[3]).all()
    beyond_the_contour = (slice(10 + CONTOUR_WIDTH, 30 - CONTOUR_WIDTH),) * 2
    np.testing.assert_array_equal(picture[beyond_the_contour], frame[beyond_the_contour])


def test_no_contour_along_the_frame_border(frame: np.ndarray, ids: np.ndarray) -> None:
    picture = overlay(frame, ids, alpha=0.0)
    np.testing.assert_array_equal(picture[-1, 70:], frame[-1, 70:])
    assert (picture[40, 62:] == PALETTE[2]).all()  # but along its top edge


def test_alpha_out_of_range_is_refused(frame: np.ndarray, ids: np.ndarray) -> None:
    with pytest.raises(UsageError, match="between 0 and 1"):
        overlay(frame, ids, alpha=1.5)


def test_sizes_must_match(frame: np.ndarray, ids: np.ndarray) -> None:
    with pytest.raises(ValueError, match="differ in size"):
        overlay(frame, ids[:, :-1])


@settings(max_examples=30, deadline=None)
@given(ids=arrays(np.uint8, (9, 11), elements=st.integers(0, 4)), alpha=st.floats(0, 1))
def test_any_label_map_keeps_background_and_colours_contours(ids: np.ndarray, alpha: float) -> None:
    frame = np.full((9, 11, 3), 77, dtype=np.uint8)
    picture = overlay(frame, ids, alpha=alpha)
    np.testing.assert_array_equal(picture[ids == 0], frame[ids == 0])
    blended = np.round((1 - alpha) * 77 + alpha * PALETTE[ids].astype(float))
    on_colour_or_blend = (picture == PALETTE[ids]).all(-1) | (np.abs(picture - blended) <= 1).all(-1)
    assert on_colour_or_blend[ids != 0].all()


# --- Evaluated overlay: errors drawn where they are, in styles told apart without hue -------------------

GREY = 77


def grey_frame(shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    return np.full((*shape, 3), GREY, dtype=np.uint8)


def tint(colour: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return np.round((1 - alpha) * GREY + alpha * colour.astype(float))


def square(shape: tuple[int, int], rows: slice, cols: slice, value: int = 1) -> np.ndarray:
    ids = np.zeros(shape, dtype=np.uint8)
    ids[rows, cols] = value
    return ids


def test_a_perfect_prediction_shows_no_error_pixels():
    frame = grey_frame()
    gt = square((60, 80), slice(10, 30), slice(10, 30), 1) + square((60, 80), slice(35, 50), slice(40, 70), 2)
    missed, wrong = error_masks(gt, gt)
    assert not missed.any() and not wrong.any()
    picture = evaluated_overlay(frame, gt, gt)
    np.testing.assert_array_equal(picture[gt == 0], frame[gt == 0])
    for object_id in (1, 2):
        assert (np.abs(picture[gt == object_id] - tint(PALETTE[object_id])) <= 1).all()


def test_a_shifted_prediction_shows_misses_and_wrong_pixels_where_they_are():
    frame = grey_frame()
    gt = square((60, 80), slice(10, 30), slice(10, 30))
    pred = square((60, 80), slice(10, 30), slice(16, 36))  # 6 px to the right
    missed, wrong = error_masks(pred, gt)
    np.testing.assert_array_equal(missed, square((60, 80), slice(10, 30), slice(10, 16)).astype(bool))
    np.testing.assert_array_equal(wrong, square((60, 80), slice(10, 30), slice(30, 36)).astype(bool))
    picture = evaluated_overlay(frame, pred, gt)
    stripes = (np.add.outer(np.arange(60), np.arange(80)) % HATCH_PERIOD) < HATCH_PERIOD // 2
    assert (picture[missed & stripes] == PALETTE[1]).all()  # hatched: the missed object's colour ...
    assert (picture[missed & ~stripes] == 255).all()  # ... alternating with white
    outline = wrong & ~square((60, 80), slice(10 + WRONG_OUTLINE, 30 - WRONG_OUTLINE), slice(30 + WRONG_OUTLINE, 36 - WRONG_OUTLINE)).astype(bool)
    assert (picture[outline] == 0).all()  # wrong pixels: outlined in black ...
    assert (picture[wrong & ~outline] == PALETTE[1]).all()  # ... filled with the claimed object's colour
    correct = (pred == 1) & (gt == 1)
    assert (np.abs(picture[correct] - tint(PALETTE[1])) <= 1).all()
    untouched = ~(missed | wrong | correct)
    np.testing.assert_array_equal(picture[untouched], frame[untouched])


def test_an_id_swap_is_marked_with_both_colours():
    frame = grey_frame()
    gt = square((60, 80), slice(10, 30), slice(10, 30), 1) + square((60, 80), slice(10, 30), slice(40, 60), 2)
    pred = np.where(gt == 1, 2, np.where(gt == 2, 1, 0)).astype(np.uint8)
    missed, wrong = error_masks(pred, gt)
    np.testing.assert_array_equal(missed, gt > 0)
    np.testing.assert_array_equal(wrong, gt > 0)
    picture = evaluated_overlay(frame, pred, gt)
    stripes = (np.add.outer(np.arange(60), np.arange(80)) % HATCH_PERIOD) < HATCH_PERIOD // 2
    inner = np.zeros((60, 80), dtype=bool)
    inner[10 + WRONG_OUTLINE : 30 - WRONG_OUTLINE, 10 + WRONG_OUTLINE : 30 - WRONG_OUTLINE] = True
    inner[10 + WRONG_OUTLINE : 30 - WRONG_OUTLINE, 40 + WRONG_OUTLINE : 60 - WRONG_OUTLINE] = True
    assert (picture[inner & stripes] == PALETTE[gt[inner & stripes]]).all()  # the true object's stripes
    assert (picture[inner & ~stripes] == PALETTE[pred[inner & ~stripes]]).all()  # over the claimed object's colour
    assert (picture[(gt > 0) & ~inner] == 0).all()
    assert not (np.abs(picture[gt > 0] - tint(PALETTE[1])) <= 1).all(-1).any()  # nothing reads as correct


def test_side_by_side_puts_the_ground_truth_on_the_right():
    frame = grey_frame()
    gt = square((60, 80), slice(10, 30), slice(10, 30))
    pred = square((60, 80), slice(10, 30), slice(16, 36))
    picture = side_by_side(frame, pred, gt)
    assert picture.shape == (60, 160, 3)
    np.testing.assert_array_equal(picture[:, :80], overlay(frame, pred))
    np.testing.assert_array_equal(picture[:, 80:], overlay(frame, gt))
    np.testing.assert_array_equal(side_by_side(frame, pred, None)[:, 80:], frame)


def test_bands_go_below_the_picture_never_over_it():
    frame = grey_frame((60, 400))
    caption = caption_band(Caption("frame 00012", {1: "J 0.900  F 0.800", 2: "J 0.100  F 0.200"}, legend=True), 400, 1)
    timeline = Timeline(400, 10)
    strip = timeline.add(0, {1: 1.0, 2: 0.0})
    picture = with_bands(frame, caption, strip)
    assert caption.shape == (2 * ROW_HEIGHT, 400, 3) and strip.shape == (TIMELINE_HEIGHT, 400, 3)
    assert picture.shape == (60 + 2 * ROW_HEIGHT + TIMELINE_HEIGHT, 400, 3)
    np.testing.assert_array_equal(picture[:60], frame)


def test_the_timeline_plots_each_value_and_moves_its_cursor():
    timeline = Timeline(100, 11)
    first = timeline.add(0, {1: 1.0})
    assert (first[:, 0] == TEXT_COLOUR).all()  # the cursor, at frame 0 of 11
    strip = timeline.add(10, {1: 0.0})
    assert (strip[:, 99] == TEXT_COLOUR).all() and not (strip[:, 50] == TEXT_COLOUR).all()
    assert (strip[:, :98] == PALETTE[1]).all(-1).any()  # a point from frame 0 stays plotted
    assert caption_rows(400, 2) == 1 and caption_rows(400, 50) == MAX_OBJECT_ROWS


def test_labelled_objects_get_a_contrasting_halo_and_their_id_at_the_centroid() -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[:, 40:] = 230  # dark on the left, bright on the right
    ids = np.zeros((60, 80), np.uint8)
    ids[20:40, 10:30] = 2  # on the dark side
    ids[20:40, 50:70] = 3  # on the bright side
    picture = labelled(overlay(rgb, ids), rgb, ids)
    assert (picture[19, 20] == 255).all() and (picture[19, 60] == 0).all()  # white halo on dark, black on bright
    far = (slice(0, 10), slice(0, 80))
    np.testing.assert_array_equal(picture[far], rgb[far])  # the rest of the background is untouched
    centre = picture[25:35, 15:25]
    assert (centre >= 200).all(-1).any() and (centre <= 30).all(-1).any()  # white text outlined in black
    assert not (picture[22, 12] != overlay(rgb, ids)[22, 12]).any()  # away from the label, the overlay as it was
