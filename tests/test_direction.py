"""Keyframes on any frame, backward tracking, interpolation between keyframes and frame ranges."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SAMPLE
from dinotrack.features import open_feature_cache
from dinotrack.masks import read_label_map, write_label_map
from dinotrack.pipeline import RunOptions, track_video
from dinotrack.schedule import Schedule
from dinotrack.sources import open_source
from dinotrack.structs import PRESETS
from dinotrack.tracker import Tracker
from test_cli import invoke, oracle_cache
from test_errors import assert_nothing_written, assert_reported

VIDEO = SAMPLE / "shapes.mp4"
GT = SAMPLE / "shapes_gt"
GRID, SIZE = (10, 18), (240, 426)
FRAMES = 60


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Oracle features of the sample clip (label fractions plus noise)."""
    folder = tmp_path_factory.mktemp("direction") / "cache"
    oracle_cache(folder, GT, GRID, SIZE)
    return folder


def masks_of(output: Path) -> dict[str, np.ndarray]:
    return {file.stem: read_label_map(file) for file in sorted((output / "masks").glob("*.png"))}


def keyframe_folder(folder: Path, *indices: int) -> Path:
    folder.mkdir()
    for index in indices:
        shutil.copy(GT / f"{index:05d}.png", folder)
    return folder


def test_schedule_passes():
    schedule = Schedule([10, 20], "both")
    assert (schedule.plan(3).after, schedule.plan(3).before) == (None, 10)
    assert (schedule.plan(15).after, schedule.plan(15).before) == (10, 20)
    assert schedule.plan(12).distance_weights() == (0.8, 0.2)
    assert (schedule.plan(25).after, schedule.plan(25).before) == (20, None)
    forward = Schedule([10, 20], "forward")
    assert forward.plan(15).before is None and forward.plan(3).before == 10


def test_a_mask_on_the_middle_frame_gives_every_frame(cache: Path, tmp_path: Path):
    output = tmp_path / "run"
    result = invoke("track", VIDEO, "--mask", GT / "00030.png", "--mask-frame", "30", "--output", output,
                    "--features", cache, "--no-overlay")
    assert result.exit_code == 0, result.output
    masks = masks_of(output)
    assert sorted(masks) == [f"{index:05d}" for index in range(FRAMES)]
    assert np.array_equal(masks["00030"], read_label_map(GT / "00030.png"))
    for stem in ("00000", "00015", "00045", "00059"):  # tracked backward and forward, close to the truth
        truth = read_label_map(GT / f"{stem}.png")
        assert (masks[stem] == truth).mean() > 0.95
    record = json.loads((output / "run.json").read_text())
    assert record["keyframes"] == [30] and record["settings"]["mask_frame"] == 30
    assert record["settings"]["direction"] == "both" and not (output / ".dinotrack-stretch").exists()


def reversed_clip(folder: Path, cache: Path, frames: int) -> tuple[Path, Path, Path, Path]:
    """The clip's first ``frames`` frames as a folder and a cache, forward and reversed (frame i is frame n-1-i)."""
    capture = cv2.VideoCapture(str(VIDEO))
    pictures = [capture.read()[1] for _ in range(frames)]
    capture.release()
    made = []
    for name, order in (("forward", range(frames)), ("reversed", range(frames - 1, -1, -1))):
        images, features = folder / name, folder / f"{name}-cache"
        images.mkdir()
        features.mkdir()
        for position, source in enumerate(order):
            cv2.imwrite(str(images / f"{position:05d}.png"), pictures[source])
            shutil.copy(cache / f"{source:05d}.npy", features / f"{position:05d}.npy")
        meta = json.loads((cache / "meta.json").read_text())
        (features / "meta.json").write_text(json.dumps({**meta, "frames": frames}))
        made += [images, features]
    return made[0], made[1], made[2], made[3]


def test_backward_tracking_of_a_reversed_clip_equals_forward_tracking_of_the_clip(cache: Path, tmp_path: Path):
    frames = 20
    forward, forward_cache, backward, backward_cache = reversed_clip(tmp_path, cache, frames)
    mask = GT / "00000.png"
    invoke("track", forward, "--mask", mask, "--output", tmp_path / "f", "--features", forward_cache, "--no-overlay")
    result = invoke("track", backward, "--mask", mask, "--mask-frame", frames - 1, "--output", tmp_path / "b",
                    "--features", backward_cache, "--no-overlay")
    assert result.exit_code == 0, result.output
    ahead, behind = masks_of(tmp_path / "f"), masks_of(tmp_path / "b")
    assert len(ahead) == len(behind) == frames
    for index in range(frames):
        assert np.array_equal(ahead[f"{index:05d}"], behind[f"{frames - 1 - index:05d}"]), index


def test_direction_forward_reproduces_forward_tracking(cache: Path, tmp_path: Path):
    keyframes = keyframe_folder(tmp_path / "keyframes", 0, 30)
    runs = {}
    for direction in ("forward", "both"):
        output = tmp_path / direction
        result = invoke("track", VIDEO, "--mask", keyframes, "--output", output, "--features", cache,
                        "--no-overlay", "--direction", direction)
        assert result.exit_code == 0, result.output
        runs[direction] = masks_of(output)
    frames = open_source(VIDEO)
    masks = {0: read_label_map(keyframes / "00000.png"), 30: read_label_map(keyframes / "00030.png")}
    expected = dict(Tracker(PRESETS["default"]).track(open_feature_cache(cache).features(frames), masks))
    assert all(np.array_equal(runs["forward"][f"{index:05d}"], ids) for index, ids in expected.items())
    assert any(not np.array_equal(runs["both"][f"{index:05d}"], expected[index]) for index in range(1, 30))
    assert all(np.array_equal(runs["both"][f"{index:05d}"], expected[index]) for index in range(30, FRAMES))


def colour_change_clip(folder: Path, frames: int) -> tuple[Path, Path, Path, list[np.ndarray]]:
    """A still square whose features change colour half-way; frames, a cache, keyframes on the first and last frame."""
    size, grid, dim = (64, 96), (4, 6), 8
    ids = np.zeros(size, dtype=np.uint8)
    ids[16:48, 32:64] = 1
    background, first, second = torch.eye(dim)[0], torch.eye(dim)[1], torch.eye(dim)[2]
    images, cache, masks = folder / "frames", folder / "cache", folder / "keyframes"
    for made in (images, cache, masks):
        made.mkdir()
    small = torch.from_numpy(cv2.resize(ids, (grid[1], grid[0]), interpolation=cv2.INTER_NEAREST)).bool()
    for index in range(frames):
        colour = first if index < frames // 2 else second
        features = torch.where(small[..., None], F.normalize(colour + 0.3 * background, dim=0), background)
        np.save(cache / f"{index:05d}.npy", features.numpy().astype(np.float16))
        cv2.imwrite(str(images / f"{index:05d}.png"), np.full((*size, 3), 128, dtype=np.uint8))
    meta = {"model": "oracle", "patch_size": 16, "short_side": 64, "grid": list(grid), "frame_size": list(size),
            "dim": dim, "frames": frames, "dtype": "float16"}
    (cache / "meta.json").write_text(json.dumps(meta))
    for index in (0, frames - 1):
        write_label_map(masks / f"{index:05d}.png", ids)
    return images, cache, masks, [ids] * frames


def test_interpolation_recovers_an_object_that_changes_colour_from_the_nearer_keyframe(tmp_path: Path):
    frames = 12
    images, cache, masks, truth = colour_change_clip(tmp_path, frames)
    found = {}
    for direction in ("forward", "both"):
        options = RunOptions(preset="paper", overlay="none", direction=direction)
        track_video(images, masks, tmp_path / direction, options, features=cache)
        found[direction] = [(masks_of(tmp_path / direction)[f"{i:05d}"] == 1) for i in range(frames)]
    square = truth[0] == 1
    overlap = {d: [(m & square).sum() / (m | square).sum() for m in found[d]] for d in found}
    assert min(overlap["both"]) > 0.9
    assert max(overlap["forward"][frames // 2 : frames - 1]) < 0.1  # forward alone loses it after the change


def test_start_and_end_track_only_that_stretch(cache: Path, tmp_path: Path):
    output = tmp_path / "run"
    result = invoke("track", VIDEO, "--mask", GT / "00020.png", "--mask-frame", "00020", "--start", "10",
                    "--end", "00029", "--output", output, "--features", cache, "--gt", GT, "--overlay", "plain")
    assert result.exit_code == 0, result.output
    assert sorted(masks_of(output)) == [f"{index:05d}" for index in range(10, 30)]
    record = json.loads((output / "run.json").read_text())
    assert (record["frames_total"], record["frames_done"], record["overlay"]["frames"]) == (20, 20, 20)
    assert (record["settings"]["start"], record["settings"]["end"]) == (10, 29)
    assert all(len(values) == 20 for values in record["confidence"].values())
    metrics = json.loads((output / "metrics.json").read_text())
    scored = {f"{i:05d}" for i in range(11, 29)} - {"00020"}  # the range's first and last, and the keyframe, left out
    assert {frame for item in metrics["objects"] for frame in item["frames"]} == scored


class StopAfter(threading.Event):
    """A stop request that comes after ``checks`` looks at it: mid-stretch, while frames wait."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_a_run_stopped_while_frames_wait_resumes_to_the_same_masks(cache: Path, tmp_path: Path):
    keyframes = keyframe_folder(tmp_path / "keyframes", 0, 40)
    options = RunOptions(overlay="none")
    whole = track_video(VIDEO, keyframes, tmp_path / "whole", options, features=cache)
    stopped = track_video(VIDEO, keyframes, tmp_path / "run", options, features=cache, stop=StopAfter(15))
    assert (stopped.status, stopped.frames_done) == ("interrupted", 1)
    resumed = track_video(VIDEO, keyframes, tmp_path / "run", options, features=cache, resume=True)
    assert (whole.status, resumed.status) == ("complete", "complete")
    ahead, again = masks_of(tmp_path / "whole"), masks_of(tmp_path / "run")
    assert sorted(ahead) == sorted(again) and all(np.array_equal(ahead[s], again[s]) for s in ahead)
    assert whole.record.confidence == resumed.record.confidence


def test_resuming_with_another_direction_or_range_is_refused(cache: Path, tmp_path: Path):
    output = tmp_path / "run"
    args = ["track", VIDEO, "--mask", GT / "00000.png", "--output", output, "--features", cache, "--no-overlay"]
    assert invoke(*args, "--end", "20").exit_code == 0
    for change, word in ((["--end", "20", "--direction", "forward"], "--direction"), (["--end", "30"], "--end: 20 -> 30")):
        result = invoke(*args, *change, "--resume")
        assert_reported(result.exit_code, result.output, 2, ("--resume", word, "--overwrite"))


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--mask", "FOLDER:00000,00099"], ("00099.png", "does not have", "00000 to 00059")),
        (["--mask-frame", "60"], ("--mask-frame 60", "out of range", "60 frames", "0 to 59")),
        (["--mask-frame", "sixty"], ("--mask-frame sixty", "no frame of that name", "index")),
        (["--start", "40", "--end", "10"], ("--start 40", "comes after --end 10", "at or before")),
        (["--start", "40"], ("no mask for a frame from 00040", "widen the range")),
    ],
    ids=["keyframe-beyond-the-video", "mask-frame-out-of-range", "mask-frame-unknown-name", "start-after-end", "no-keyframe-in-range"],
)
def test_bad_frames_are_refused_before_any_output(cache: Path, tmp_path: Path, options: list[str], words: tuple[str, ...]):
    if options[0] == "--mask":
        folder = tmp_path / "keyframes"
        folder.mkdir()
        for stem in options[1].split(":")[1].split(","):
            shutil.copy(GT / "00000.png", folder / f"{stem}.png")
        options = ["--mask", str(folder)]
    else:
        options = ["--mask", str(GT / "00000.png"), *options]
    output = tmp_path / "run"
    result = invoke("track", VIDEO, *options, "--output", output, "--features", cache)
    assert_reported(result.exit_code, result.output, 2, words)
    assert_nothing_written(output)
