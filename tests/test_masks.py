"""Property tests of the mask reader and writer: every accepted encoding gives back its ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from dinotrack.masks import MAX_ID, PALETTE, object_ids, read_label_map, write_label_map
from dinotrack.structs import UsageError

PROPERTY = settings(max_examples=60, deadline=None)

SHAPES = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)


@st.composite
def label_maps(draw: st.DrawFn, ids: st.SearchStrategy[int] = st.integers(0, MAX_ID)) -> np.ndarray:
    """``[H, W] uint8`` maps holding a few ids drawn from ``ids``, with random gaps between them."""
    present = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    return draw(hnp.arrays(np.uint8, SHAPES, elements=st.sampled_from(present)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("masks")


def saved(folder: Path, image: Image.Image) -> Path:
    path = folder / "mask.png"
    image.save(path)
    return path


def test_palette_starts_like_davis() -> None:
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert PALETTE[255].tolist() == [224, 224, 192]
    assert len({tuple(colour) for colour in PALETTE}) == 256


@PROPERTY
@given(ids=label_maps())
def test_written_maps_read_back_unchanged(folder: Path, ids: np.ndarray) -> None:
    path = folder / "ids.png"
    write_label_map(path, ids)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (ids.shape[1], ids.shape[0])
        assert np.array_equal(np.array(image.getpalette()).reshape(-1, 3), PALETTE[: len(image.getpalette()) // 3])
    back = read_label_map(path)
    assert back.dtype == np.uint8 and np.array_equal(back, ids)
    assert object_ids(back) == sorted(set(np.unique(ids).tolist()) - {0})
    assert not list(folder.glob(".*.part"))


@PROPERTY
@given(ids=label_maps(), seed=st.integers(0, 2**32 - 1))
def test_indexed_png_gives_its_indices_whatever_its_colours(folder: Path, ids: np.ndarray, seed: int) -> None:
    image = Image.fromarray(ids, mode="P")
    image.putpalette(np.random.default_rng(seed).integers(0, 256, 768, dtype=np.uint8).tobytes())
    assert np.array_equal(read_label_map(saved(folder, image)), ids)


@PROPERTY
@given(binary=hnp.arrays(np.bool_, SHAPES), depth=st.sampled_from([np.uint8, np.uint16]))
def test_grayscale_zero_and_maximum_is_one_object(folder: Path, binary: np.ndarray, depth: type) -> None:
    grey = binary.astype(depth) * np.iinfo(depth).max
    assert np.array_equal(read_label_map(saved(folder, Image.fromarray(grey))), binary.astype(np.uint8))


@PROPERTY
@given(ids=label_maps(), depth=st.sampled_from([np.uint8, np.uint16]))
def test_grayscale_values_are_ids(folder: Path, ids: np.ndarray, depth: type) -> None:
    with Image.open(saved(folder, Image.fromarray(ids.astype(depth)))) as image:
        assert image.mode == ("L" if depth is np.uint8 else "I;16")
    assert np.array_equal(read_label_map(folder / "mask.png"), ids)


@PROPERTY
@given(ids=label_maps(), alpha=st.sampled_from([None, 255, 1]))
@example(ids=np.array([[0, 7], [56, 63]], np.uint8), alpha=None)  # the palette's greys are ids, not grey values
def test_davis_colours_give_their_ids(folder: Path, ids: np.ndarray, alpha: int | None) -> None:
    rgb = PALETTE[ids]
    pixels = rgb if alpha is None else np.dstack([rgb, np.full(ids.shape, alpha, np.uint8)])
    assert np.array_equal(read_label_map(saved(folder, Image.fromarray(pixels))), ids)


@PROPERTY
@given(ids=label_maps(), hidden=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
def test_fully_transparent_pixels_are_background(folder: Path, ids: np.ndarray, hidden: tuple[int, int, int]) -> None:
    rgba = np.dstack([PALETTE[ids], np.full(ids.shape, 255, np.uint8)])
    rgba[ids == 0] = (*hidden, 0)
    assert np.array_equal(read_label_map(saved(folder, Image.fromarray(rgba))), ids)


@PROPERTY
@given(ids=label_maps(st.integers(0, MAX_ID)), big=st.integers(MAX_ID + 2, 65534), data=st.data())
def test_values_beyond_the_palette_are_refused(folder: Path, ids: np.ndarray, big: int, data: st.DataObject) -> None:
    values = ids.astype(np.uint16)
    row, column = data.draw(st.integers(0, ids.shape[0] - 1)), data.draw(st.integers(0, ids.shape[1] - 1))
    values[row, column] = big
    with pytest.raises(UsageError, match=rf"value {big}.*0\.\.{MAX_ID}"):
        read_label_map(saved(folder, Image.fromarray(values)))


@PROPERTY
@given(ids=label_maps())
def test_index_255_is_refused(folder: Path, ids: np.ndarray) -> None:
    ids = ids.copy()
    ids.flat[0] = 255
    write_label_map(folder / "void.png", ids)
    with pytest.raises(UsageError, match=r"value 255.*0\.\.254"):
        read_label_map(folder / "void.png")


@PROPERTY
@given(ids=label_maps(st.integers(1, MAX_ID)), colour=st.tuples(st.integers(0, 255), st.integers(1, 255), st.integers(0, 255)))
def test_colours_outside_the_palette_are_refused(folder: Path, ids: np.ndarray, colour: tuple[int, int, int]) -> None:
    assume(not (PALETTE == colour).all(axis=1).any() and len(set(colour)) > 1)  # palette colours and greys are readable
    rgb = PALETTE[ids]
    rgb[0, 0] = colour
    with pytest.raises(UsageError, match=r"not in the DAVIS palette"):
        read_label_map(saved(folder, Image.fromarray(rgb)))
