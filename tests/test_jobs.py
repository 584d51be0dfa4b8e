"""The job API: options that cannot disagree with the record, one backbone for many videos, typed records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SAMPLE
from dinotrack import pipeline
from dinotrack.files import atomic_write
from dinotrack.masks import read_label_map
from dinotrack.pipeline import RunOptions, load_backbone, track_video
from dinotrack.records import SCHEMA_VERSION, RunRecord
from dinotrack.structs import PRESETS, UsageError

VIDEO, MASK = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png"


def tiny_options(weights: Path, **changes: object) -> RunOptions:
    return RunOptions(model="tiny", weights=weights, device="cpu", short_side=64, overlay="none").replace(**changes)


def masks_of(output: Path) -> list[np.ndarray]:
    return [read_label_map(f) for f in sorted((output / "masks").glob("*.png"))]


@pytest.mark.parametrize("preset_name", ["default", "paper"])
def test_the_record_names_the_preset_that_ran(tiny_weights: Path, tmp_path: Path, preset_name: str):
    options = tiny_options(tiny_weights, preset=preset_name)
    track_video(VIDEO, MASK, tmp_path / "run", options)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    expected = dataclasses.asdict(PRESETS[preset_name].replace(short_side=64))
    assert run["preset"] == preset_name
    assert {key: run["settings"][key] for key in expected} == expected


def test_library_defaults_run_the_default_preset():
    assert RunOptions().config == PRESETS["default"]
    assert RunOptions(preset="paper", topk=3).config == PRESETS["paper"].replace(topk=3)


def test_bad_options_are_refused_at_once():
    with pytest.raises(UsageError, match="Unknown preset"):
        RunOptions(preset="fast")
    with pytest.raises(UsageError, match="--batch-size"):
        RunOptions(batch_size=0)
    with pytest.raises(UsageError, match="--keyframe-bound"):
        RunOptions(keyframe_bound=-1)
    with pytest.raises(UsageError, match="--overlay must be one of auto, plain, evaluated, side-by-side, none"):
        RunOptions(overlay=False)


def test_the_overlay_follows_the_ground_truth():
    assert RunOptions().overlay_mode(with_gt=True) == "evaluated"
    assert RunOptions().overlay_mode(with_gt=False) == "plain"
    assert RunOptions(overlay="side-by-side").overlay_mode(with_gt=True) == "side-by-side"
    assert RunOptions(overlay="none").overlay_mode(with_gt=True) is None
    with pytest.raises(UsageError, match="Pass --gt DIR"):
        RunOptions(overlay="evaluated").overlay_mode(with_gt=False)


def test_one_backbone_tracks_many_videos(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    options = tiny_options(tiny_weights)
    reference = tmp_path / "reference"
    track_video(VIDEO, MASK, reference, options)
    backbone = load_backbone(options)
    builds = []
    monkeypatch.setattr(pipeline, "create_backbone", lambda *a, **k: builds.append(a))
    for number in range(3):
        report = track_video(VIDEO, MASK, tmp_path / f"video{number}", options, backbone=backbone)
        assert report.status == "complete" and report.frames_done == 60
        assert all(np.array_equal(a, b) for a, b in zip(masks_of(tmp_path / f"video{number}"), masks_of(reference)))
    assert builds == []


def test_the_record_states_the_workers_used(tiny_weights: Path, tmp_path: Path):
    track_video(VIDEO, MASK, tmp_path / "run", tiny_options(tiny_weights))
    record = RunRecord.read(tmp_path / "run")
    assert record.settings["workers"] in (1, 2) and record.schema == SCHEMA_VERSION
    assert record.settings["keyframe_bound"] == PRESETS["default"].keyframe_bound


def test_output_checks_come_before_the_model(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    monkeypatch.setattr(pipeline, "create_backbone", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(UsageError, match="already holds results"):
        track_video(VIDEO, MASK, tmp_path / "run", tiny_options(tiny_weights))


def test_record_round_trip_and_older_files(tmp_path: Path):
    record = RunRecord(source="a.mp4", mask="m.png", preset="paper", settings={"topk": 5}, model="vits16",
                       weights={"source": "random", "sha256": None}, frames_total=3)
    record.finish("complete", 3, {"total": 1.5})
    record.write(tmp_path)
    assert RunRecord.read(tmp_path) == record
    older = {k: v for k, v in json.loads((tmp_path / "run.json").read_text()).items() if k != "schema"}
    (tmp_path / "run.json").write_text(json.dumps({**older, "unknown": 1}))
    assert RunRecord.read(tmp_path).schema == 0
    other = dataclasses.replace(record, settings={"topk": 3, "batch_size": 8})
    assert other.changes_from(record) == ["--topk: 5 -> 3"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path):
    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "file.txt", fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "file.txt", lambda temporary: temporary.write_text("whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_feature_cache_runs_record_the_cache_short_side(tmp_path: Path):
    from test_cli import oracle_cache

    cache = tmp_path / "cache"
    oracle_cache(cache, SAMPLE / "shapes_gt", (10, 18), (240, 426))
    track_video(VIDEO, MASK, tmp_path / "run", RunOptions(overlay="none", device="cpu"), features=cache)
    assert RunRecord.read(tmp_path / "run").settings["short_side"] == 160


def test_tracker_verbs_turn_gradients_off():
    from dinotrack.tracker import Tracker

    features = torch.nn.functional.normalize(torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    ids = np.zeros((64, 96), dtype=np.uint8)
    ids[:32, :48] = 1
    rgb = np.zeros((64, 96, 3), np.uint8)
    split, whole = Tracker(PRESETS["paper"]), Tracker(PRESETS["paper"])
    for tracker in (split, whole):
        tracker.add_mask(ids, features.clone().requires_grad_())
    probs = split.propagate(features.clone().requires_grad_())
    assert not probs.requires_grad and probs.shape == (2, 4, 6)
    assert np.array_equal(split.decode(probs, rgb), whole.step(rgb, features))
