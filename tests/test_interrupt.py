"""Interrupted runs: whole files only, an honest run.json, and --resume giving the same masks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT, SAMPLE
from dinotrack.cli import app
from dinotrack.masks import read_label_map
from dinotrack.pipeline import RunOptions, track_video
from test_cli import frame_count

VIDEO, MASK = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png"
OPTIONS = RunOptions(model="tiny", device="cpu", short_side=64)


def stop_after(frames: int) -> tuple[threading.Event, object]:
    stop = threading.Event()

    def on_progress(done: int, total: int | None) -> None:
        if done >= frames:
            stop.set()

    return stop, on_progress


def masks_of(output: Path) -> dict[str, np.ndarray]:
    return {f.stem: read_label_map(f) for f in sorted((output / "masks").glob("*.png"))}


@pytest.fixture(scope="module")
def uninterrupted(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    output = tmp_path_factory.mktemp("full") / "run"
    track_video(VIDEO, MASK, output, OPTIONS.replace(weights=tiny_weights, overlay="none"))
    return masks_of(output)


def test_stop_keeps_whole_frames_and_marks_the_run(tiny_weights: Path, tmp_path: Path):
    stop, on_progress = stop_after(20)
    report = track_video(VIDEO, MASK, tmp_path / "run", OPTIONS.replace(weights=tiny_weights), stop=stop, on_progress=on_progress)
    assert report.status == "interrupted" and report.frames_done == 20
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["frames_done"] == 20
    assert len(list((tmp_path / "run" / "masks").glob("*.png"))) == 20
    assert frame_count(tmp_path / "run" / "overlay.mp4") == 20
    assert not list((tmp_path / "run").rglob("*.part"))


@pytest.mark.parametrize("keep_state", [True, False], ids=["saved-state", "replay"])
def test_resume_gives_the_masks_of_an_uninterrupted_run(tiny_weights, tmp_path, uninterrupted, keep_state):
    output = tmp_path / "run"
    stop, on_progress = stop_after(25)
    track_video(VIDEO, MASK, output, OPTIONS.replace(weights=tiny_weights), stop=stop, on_progress=on_progress)
    if not keep_state:
        (output / "state.pt").unlink()
    result = CliRunner().invoke(app, ["track", str(VIDEO), "--mask", str(MASK), "--output", str(output), "--model", "tiny",
                                      "--weights", str(tiny_weights), "--device", "cpu", "--short-side", "64", "--resume"])
    assert result.exit_code == 0, result.output
    run = json.loads((output / "run.json").read_text())
    assert run["status"] == "complete" and run["frames_done"] == 60 and run["resumed_at"] == 25
    resumed = masks_of(output)
    assert resumed.keys() == uninterrupted.keys()
    for stem, expected in uninterrupted.items():
        assert np.array_equal(resumed[stem], expected), stem
    assert frame_count(output / "overlay.mp4") == 60
    assert not (output / "state.pt").exists()


def test_resume_refuses_other_settings(tiny_weights: Path, tmp_path: Path):
    stop, on_progress = stop_after(5)
    track_video(VIDEO, MASK, tmp_path / "run", OPTIONS.replace(weights=tiny_weights), stop=stop, on_progress=on_progress)
    result = CliRunner().invoke(app, ["track", str(VIDEO), "--mask", str(MASK), "--output", str(tmp_path / "run"),
                                      "--model", "tiny", "--weights", str(tiny_weights), "--device", "cpu",
                                      "--short-side", "64", "--topk", "3", "--resume"])
    assert result.exit_code == 2 and "--resume" in result.output and "topk" in result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_a_real_process(tiny_weights: Path, tmp_path: Path, sig: signal.Signals):
    output = tmp_path / "run"
    command = [sys.executable, "-m", "dinotrack", "track", str(VIDEO), "--mask", str(MASK), "--output", str(output),
               "--model", "dinotrack.testing:TINY", "--weights", str(tiny_weights), "--device", "cpu",
               "--short-side", "512", "--context", "20"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + 120
    while len(list((output / "masks").glob("*.png"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(sig)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    assert "Traceback" not in out
    continue_with = f"dinotrack track {VIDEO} --mask {MASK} --output {output} --model dinotrack.testing:TINY"
    assert continue_with in out and "--short-side 512 --context 20 --device cpu --resume" in out  # the exact command to continue
    run = json.loads((output / "run.json").read_text())
    done = run["frames_done"]
    assert run["status"] == "interrupted" and 3 <= done < 60
    assert len(list((output / "masks").glob("*.png"))) == done
    assert frame_count(output / "overlay.mp4") == done
    assert not list(output.rglob("*.part"))


def test_resume_may_change_what_only_changes_speed(tiny_weights: Path, tmp_path: Path, uninterrupted):
    output = tmp_path / "run"
    stop, on_progress = stop_after(10)
    track_video(VIDEO, MASK, output, OPTIONS.replace(weights=tiny_weights, overlay="none"), stop=stop, on_progress=on_progress)
    result = CliRunner().invoke(app, ["track", str(VIDEO), "--mask", str(MASK), "--output", str(output), "--model", "tiny",
                                      "--weights", str(tiny_weights), "--device", "cpu", "--short-side", "64",
                                      "--batch-size", "3", "--workers", "1", "--no-overlay", "--resume"])
    assert result.exit_code == 0, result.output
    resumed = masks_of(output)
    assert all(np.array_equal(resumed[stem], expected) for stem, expected in uninterrupted.items())


def test_resume_without_an_overlay_leaves_no_partial_one(tiny_weights: Path, tmp_path: Path):
    output = tmp_path / "run"
    stop, on_progress = stop_after(10)
    track_video(VIDEO, MASK, output, OPTIONS.replace(weights=tiny_weights), stop=stop, on_progress=on_progress)
    assert frame_count(output / "overlay.mp4") == 10
    result = CliRunner().invoke(app, ["track", str(VIDEO), "--mask", str(MASK), "--output", str(output), "--model", "tiny",
                                      "--weights", str(tiny_weights), "--device", "cpu", "--short-side", "64",
                                      "--overlay", "none", "--resume"])
    assert result.exit_code == 0, result.output
    assert json.loads((output / "run.json").read_text())["status"] == "complete"
    assert not (output / "overlay.mp4").exists()
