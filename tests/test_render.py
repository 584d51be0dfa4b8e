"""Overlay pictures: tint inside objects, plain colour on their edges, background untouched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dinotrack.masks import PALETTE
from dinotrack.render import CONTOUR_WIDTH, overlay
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
