"""Overlay painters: the picture, its caption and its timeline, frame by frame, with ground truth read as it comes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dinotrack.masks import write_label_map
from dinotrack.render import (
    ROW_HEIGHT,
    TIMELINE_HEIGHT,
    Caption,
    caption_band,
    evaluated_overlay,
    labelled,
    overlay,
    side_by_side,
)
from dinotrack.sinks import EvaluatedPainter, GroundTruth, PlainPainter, Prediction, picture_size
from dinotrack.sources import Frame
from dinotrack.structs import UsageError

SIZE = (48, 400)


def label_map(column: int) -> np.ndarray:
    ids = np.zeros(SIZE, dtype=np.uint8)
    ids[10:30, column : column + 20] = 1
    ids[30:40, 200:260] = 2
    return ids


@pytest.fixture
def gt_folder(tmp_path: Path) -> Path:
    """Ground truth for frames 00000 and 00002 (none for 00001)."""
    for stem in ("00000", "00002"):
        write_label_map(tmp_path / f"{stem}.png", label_map(50))
    return tmp_path


def frame(index: int) -> Frame:
    rgb = np.random.default_rng(index).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    return Frame(index, f"{index:05d}", rgb)


def test_ground_truth_is_read_per_frame_and_checked(gt_folder: Path, tmp_path: Path):
    truth = GroundTruth(gt_folder, SIZE)
    assert truth.objects == [1, 2]
    np.testing.assert_array_equal(truth.get("00002"), label_map(50))
    assert truth.get("00001") is None
    with pytest.raises(UsageError, match="frames' size"):
        GroundTruth(gt_folder, (24, 200))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no PNG masks"):
        GroundTruth(tmp_path / "empty", SIZE)


def test_the_evaluated_picture_has_its_scores_below_it(gt_folder: Path):
    painter = EvaluatedPainter(SIZE, 3, GroundTruth(gt_folder, SIZE))
    pred = label_map(60)  # object 1 shifted by 10 px: J = 10/30, F = 0.475 (4 px tolerance)
    picture = painter.paint(frame(0), Prediction(pred, {1: 0.9, 2: 0.8}))
    assert painter.size == picture.shape[:2] == (SIZE[0] + 2 * ROW_HEIGHT + TIMELINE_HEIGHT, SIZE[1])
    expected = labelled(evaluated_overlay(frame(0).rgb, pred, label_map(50)), frame(0).rgb, pred)
    np.testing.assert_array_equal(picture[: SIZE[0]], expected)
    caption = Caption("frame 00000", {1: "J 0.333  F 0.475", 2: "J 1.000  F 1.000"}, legend=True)
    np.testing.assert_array_equal(picture[SIZE[0] : SIZE[0] + 2 * ROW_HEIGHT], caption_band(caption, SIZE[1], 1))


def test_a_frame_without_ground_truth_says_so(gt_folder: Path):
    painter = EvaluatedPainter(SIZE, 3, GroundTruth(gt_folder, SIZE))
    pred = label_map(60)
    picture = painter.paint(frame(1), Prediction(pred, {1: 0.9}))
    np.testing.assert_array_equal(picture[: SIZE[0]], labelled(overlay(frame(1).rgb, pred), frame(1).rgb, pred))
    caption = caption_band(Caption("frame 00001", note="no ground truth"), SIZE[1], 1)
    np.testing.assert_array_equal(picture[SIZE[0] : SIZE[0] + 2 * ROW_HEIGHT], caption)


def test_side_by_side_is_twice_as_wide(gt_folder: Path):
    painter = EvaluatedPainter(SIZE, 3, GroundTruth(gt_folder, SIZE), side=True)
    picture = painter.paint(frame(0), Prediction(label_map(60), {}))
    assert painter.mode == "side-by-side" and picture.shape[:2] == painter.size == (painter.size[0], 2 * SIZE[1])
    np.testing.assert_array_equal(picture[: SIZE[0]], side_by_side(frame(0).rgb, label_map(60), label_map(50)))


def test_the_plain_caption_gives_area_and_confidence():
    painter = PlainPainter(SIZE, None, [1, 2])
    picture = painter.paint(frame(0), Prediction(label_map(50), {1: 0.875, 2: 0.5}))
    caption = Caption("frame 00000", {1: "2.1%  conf 0.88", 2: "3.1%  conf 0.50"})  # 400 and 600 of 19200 pixels
    np.testing.assert_array_equal(picture[SIZE[0] : SIZE[0] + 2 * ROW_HEIGHT], caption_band(caption, SIZE[1], 1))


@pytest.mark.parametrize(
    ("frame_size", "max_side", "expected"),
    [
        ((2160, 3840), 1920, (1080, 1920)),
        ((1080, 1920), 1920, (1080, 1920)),
        ((1920, 1080), 960, (960, 540)),  # portrait: the long side is the height
        ((481, 855), 427, (240, 427)),  # odd sizes round to the nearest pixel
        ((48, 400), None, (48, 400)),
    ],
)
def test_picture_size_keeps_the_aspect_and_bounds_the_long_side(frame_size, max_side, expected):
    assert picture_size(frame_size, max_side) == expected


def test_a_shrunk_plain_picture_keeps_the_full_size_figures():
    painter = PlainPainter(SIZE, None, [1, 2], max_side=200)
    picture = painter.paint(frame(0), Prediction(label_map(50), {1: 0.875, 2: 0.5}))
    assert painter.picture == (24, 200) and picture.shape[:2] == painter.size and painter.size[1] == 200
    small_rgb = cv2.resize(frame(0).rgb, (200, 24), interpolation=cv2.INTER_AREA)
    small_ids = cv2.resize(label_map(50), (200, 24), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(picture[:24], labelled(overlay(small_rgb, small_ids), small_rgb, small_ids))
    caption = Caption("frame 00000", {1: "2.1%  conf 0.88", 2: "3.1%  conf 0.50"})  # from the 48x400 mask
    rows = painter.bands.rows
    np.testing.assert_array_equal(picture[24 : 24 + (1 + rows) * ROW_HEIGHT], caption_band(caption, 200, rows))


def test_a_shrunk_side_by_side_scores_at_full_size(gt_folder: Path):
    painter = EvaluatedPainter(SIZE, 3, GroundTruth(gt_folder, SIZE), side=True, max_side=200)
    picture = painter.paint(frame(0), Prediction(label_map(60), {}))
    assert picture.shape[:2] == painter.size and painter.size[1] == 400
    small = [cv2.resize(ids, (200, 24), interpolation=cv2.INTER_NEAREST) for ids in (label_map(60), label_map(50))]
    small_rgb = cv2.resize(frame(0).rgb, (200, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(picture[:24], side_by_side(small_rgb, *small))


class _Recorder:
    """A sink that keeps the pixel shapes it was given."""

    file, stage, replays = "recorded", "record", True

    def __init__(self, reads_pixels: bool) -> None:
        self.reads_pixels = reads_pixels
        self.shapes: list[tuple[int, ...]] = []

    def pixels(self, frame: Frame) -> Frame:
        return frame if self.reads_pixels else frame.without_pixels()

    def write(self, frame: Frame, prediction: Prediction) -> None:
        self.shapes.append(frame.rgb.shape)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("reads_pixels", [False, True])
def test_frames_wait_for_each_sink_with_only_the_pixels_it_reads(reads_pixels: bool) -> None:
    """Masks and COCO need only the label map: at 4K a waiting frame would hold 25 MB for nothing."""
    from dinotrack.pipeline import _SinkWriter, _Stopwatch

    recorder, ids = _Recorder(reads_pixels), np.zeros((6, 8), np.uint8)
    writer = _SinkWriter([recorder], _Stopwatch())
    for index in range(3):
        writer.submit(Frame(index, f"{index:05d}", np.zeros((6, 8, 3), np.uint8)), Prediction(ids, {}))
    writer.close()
    assert recorder.shapes == [(6, 8, 3) if reads_pixels else (0, 0, 3)] * 3


def test_overlay_sink_queues_the_frame_at_the_picture_size_and_paints_the_same(tmp_path: Path) -> None:
    """A 4K frame waits for the overlay as its 1920-wide picture; the picture is what the full frame gives."""
    from dinotrack.sinks import OverlayVideo

    rng = np.random.default_rng(0)
    frame = Frame(0, "00000", rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))
    ids = np.zeros((90, 160), np.uint8)
    ids[20:70, 30:100] = 1
    prediction = Prediction(ids, {1: 0.5})
    painter = PlainPainter((90, 160), 1, [1], max_side=64)
    sink = OverlayVideo(tmp_path, 10.0, painter)
    queued = sink.pixels(frame)
    sink.close()
    assert queued.rgb.shape == (*painter.picture, 3) == (36, 64, 3)
    assert np.array_equal(painter.paint(queued, prediction), painter.paint(frame, prediction))
