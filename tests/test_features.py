"""The feature extractor: batches run on worker threads come back whole, in order, and alike."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import SAMPLE
from dinotrack.backbones import create_backbone
from dinotrack import features
from dinotrack.features import FeatureExtractor, default_workers, preprocess
from dinotrack.sources import Frame, open_source

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return list(itertools.islice(open_source(SAMPLE / "shapes.mp4").frames(0), 7))


@pytest.fixture
def extractor_for(tiny_weights: Path):
    backbone = create_backbone("tiny", weights=tiny_weights, device="cpu")
    return lambda **options: FeatureExtractor(backbone, short_side=64, device=CPU, **options)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_workers_give_the_same_features_in_order(extractor_for, frames, batch_size):
    one = list(extractor_for(batch_size=batch_size, workers=1)(frames))
    three = list(extractor_for(batch_size=batch_size, workers=3)(frames))
    assert [frame.index for frame, _ in three] == list(range(len(frames)))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(one, three))
    assert three[0][1].shape == (4, 8, 64) and three[0][1].dtype == torch.float32


def test_workers_leave_the_callers_thread_count(extractor_for, frames):
    torch.set_num_threads(2)
    try:
        list(extractor_for(workers=2)(frames))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_default_workers_follow_the_device_and_threads(extractor_for):
    assert extractor_for().workers == 1  # the tests run torch on one thread
    torch.set_num_threads(2)
    try:
        assert extractor_for().workers == 2
        assert default_workers(torch.device("cuda"), compile=False) == 1
        assert default_workers(CPU, compile=True) == 1
    finally:
        torch.set_num_threads(1)


def test_an_error_in_the_frames_reaches_the_caller_after_the_frames_before_it(extractor_for, frames):
    def failing() -> Iterator[Frame]:
        yield from frames[:3]
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for frame, _ in extractor_for(workers=2)(failing()):
            got.append(frame.index)
    assert got == [0, 1, 2]


def test_stopping_early_ends_the_workers(extractor_for, frames):
    endless = (Frame(i, f"{i:05d}", frames[0].rgb) for i in itertools.count())
    stream = extractor_for(workers=2)(endless)
    assert [frame.index for frame, _ in itertools.islice(stream, 3)] == [0, 1, 2]
    stream.close()  # would hang if the pool kept pulling frames


@pytest.mark.parametrize("band_rows", [7, 256])
@pytest.mark.parametrize(
    ("frame_size", "grid"),
    [((216, 384), (12, 20)), ((97, 131), (7, 9)), ((40, 56), (5, 7)), ((48, 80), (3, 5)), ((301, 67), (6, 4)), ((83, 50), (6, 3))],
)
def test_preprocess_resizes_plane_by_plane_bit_for_bit_as_all_planes_at_once(
    frame_size: tuple[int, int], grid: tuple[int, int], band_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One float32 plane at full resolution instead of three, and when shrinking only bands of rows of one:
    the images (values and layout) stay the same."""
    monkeypatch.setattr(features, "RESIZE_BAND_ROWS", band_rows)
    rgb = torch.randint(0, 256, (2, *frame_size, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    size = (grid[0] * 16, grid[1] * 16)
    shrinking = size[0] < frame_size[0] or size[1] < frame_size[1]
    whole = torch.nn.functional.interpolate(
        rgb.permute(0, 3, 1, 2).float(), size=size, mode="bicubic", align_corners=False, antialias=shrinking
    ).clamp(0, 255)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (whole - torch.tensor(mean).view(1, 3, 1, 1) * 255) / (torch.tensor(std).view(1, 3, 1, 1) * 255)
    images = preprocess(rgb, grid, 16, mean, std)
    assert torch.equal(images, expected)
    assert images.stride() == expected.stride()
