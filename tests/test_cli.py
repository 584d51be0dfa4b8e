"""End to end through the real CLI, with a tiny random backbone."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from conftest import SAMPLE
from dinotrack.cli import app
from dinotrack.masks import PALETTE, read_label_map, write_label_map
from dinotrack.propagate import labels_to_probs
from dinotrack.render import ROW_HEIGHT, TIMELINE_HEIGHT
from dinotrack.testing import probs_to_ids, propagate_literal
from test_errors import run_module

runner = CliRunner()
TINY = ["--model", "tiny", "--device", "cpu", "--short-side", "64"]


def invoke(*args: object) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def frame_count(video: Path) -> int:
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def assert_complete_run(output: Path, frames: int, size: tuple[int, int], ids: set[int]) -> None:
    masks = sorted((output / "masks").glob("*.png"))
    assert len(masks) == frames
    for file in masks[:: max(1, frames // 5)]:
        with Image.open(file) as image:
            assert image.mode == "P" and image.size == (size[1], size[0])
            assert np.array_equal(np.array(image.getpalette()[:30]).reshape(-1, 3), PALETTE[:10])
            assert set(np.unique(np.asarray(image))) <= ids | {0}
    assert frame_count(output / "overlay.mp4") == frames
    run = json.loads((output / "run.json").read_text())
    assert run["status"] == "complete" and run["frames_done"] == frames
    assert {"settings", "model", "weights", "versions", "seconds", "fps"} <= set(run)
    assert not list(output.rglob("*.part"))


def test_track_sample_video(tiny_weights: Path, tmp_path: Path):
    output = tmp_path / "run"
    result = invoke("track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", output,
                    "--weights", tiny_weights, *TINY, "--batch-size", "4", "--gt", SAMPLE / "shapes_gt")
    assert result.exit_code == 0, result.output
    assert_complete_run(output, 60, (240, 426), {1, 2})
    first = read_label_map(output / "masks" / "00000.png")
    assert np.array_equal(first, read_label_map(SAMPLE / "shapes_mask.png"))
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0 <= metrics["J&F-Mean"] <= 1 and {o["object"] for o in metrics["objects"]} == {1, 2}
    assert (output / "metrics.png").is_file() and (output / "metrics.csv").is_file()
    run = json.loads((output / "run.json").read_text())
    assert run["weights"]["source"].startswith("file:") and len(run["weights"]["sha256"]) == 64
    assert run["overlay"]["mode"] == "evaluated" and (output / "report.html").is_file()
    assert video_size(output / "overlay.mp4") == (240 + 2 * ROW_HEIGHT + TIMELINE_HEIGHT, 426)
    assert {key: len(values) for key, values in run["confidence"].items()} == {"1": 60, "2": 60}
    assert run["confidence"]["1"][0] == 1.0 and isinstance(run["low_confidence_frames"], list)


def video_size(video: Path) -> tuple[int, int]:
    capture = cv2.VideoCapture(str(video))
    return int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))


def test_side_by_side_overlay(tiny_weights: Path, tmp_path: Path):
    output = tmp_path / "run"
    result = invoke("track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", output,
                    "--weights", tiny_weights, *TINY, "--gt", SAMPLE / "shapes_gt", "--overlay", "side-by-side")
    assert result.exit_code == 0, result.output
    assert frame_count(output / "overlay.mp4") == 60
    assert video_size(output / "overlay.mp4") == (240 + 2 * ROW_HEIGHT + TIMELINE_HEIGHT, 2 * 426)
    assert json.loads((output / "run.json").read_text())["overlay"]["mode"] == "side-by-side"


def test_overlay_max_side_shrinks_the_overlay_not_the_masks(tiny_weights: Path, tmp_path: Path):
    output = tmp_path / "run"
    result = invoke("track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", output,
                    "--weights", tiny_weights, *TINY, "--overlay-max-side", "214")
    assert result.exit_code == 0, result.output
    described = json.loads((output / "run.json").read_text())["overlay"]
    assert described["size"][1] == 214 and video_size(output / "overlay.mp4")[1] == 214
    assert video_size(output / "overlay.mp4")[0] == described["size"][0] + described["size"][0] % 2
    assert_complete_run(output, 60, (240, 426), {1, 2})


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--overlay-max-side", "8"], "--overlay-max-side must be at least 16 pixels"),
        (["--overlay", "evaluated"], "--overlay evaluated draws the prediction against the ground truth"),
        (["--overlay", "side-by-side"], "Pass --gt DIR"),
        (["--overlay", "plain", "--no-overlay"], "contradict each other"),
    ],
)
def test_overlays_that_cannot_be_made_are_refused_first(tiny_weights: Path, tmp_path: Path, options, words):
    result = invoke("track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", tmp_path / "run",
                    "--weights", tiny_weights, *TINY, *options)
    assert result.exit_code == 2 and words in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_model_by_import_path_in_a_fresh_process(tiny_weights: Path, tmp_path: Path):
    """A process that never registered the tiny backbone, like a subprocess or a Ray worker, names it by import path."""
    output = tmp_path / "run"
    result = run_module(["track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", output,
                         "--model", "dinotrack.testing:TINY", "--weights", tiny_weights, "--short-side", "64",
                         "--device", "cpu", "--no-overlay"], {}, timeout=120)
    assert result.returncode == 0, result.stderr
    run = json.loads((output / "run.json").read_text())
    assert (run["status"], run["frames_done"]) == ("complete", 60)


def test_workers_change_speed_not_masks(tiny_weights: Path, tmp_path: Path):
    masks = {}
    for workers in (1, 3):
        output = tmp_path / f"workers{workers}"
        result = invoke("track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", output,
                        "--weights", tiny_weights, *TINY, "--workers", workers, "--no-overlay")
        assert result.exit_code == 0, result.output
        assert json.loads((output / "run.json").read_text())["settings"]["workers"] == workers
        masks[workers] = [read_label_map(path) for path in sorted((output / "masks").glob("*.png"))]
    assert len(masks[1]) == 60
    assert all(np.array_equal(a, b) for a, b in zip(masks[1], masks[3]))


def test_track_davis_folder(tiny_weights: Path, davis: Path, tmp_path: Path):
    frames = davis / "JPEGImages" / "480p" / "car-shadow"
    mask = davis / "Annotations" / "480p" / "car-shadow" / "00000.png"
    output = tmp_path / "run"
    result = invoke("track", frames, "--mask", mask, "--output", output, "--weights", tiny_weights, *TINY)
    assert result.exit_code == 0, result.output
    assert_complete_run(output, 40, (480, 854), {1})
    assert json.loads((output / "run.json").read_text())["overlay"]["mode"] == "plain"
    assert not (output / "report.html").exists()  # written with ground truth only (or by `dinotrack report`)


def oracle_cache(folder: Path, gt: Path, grid: tuple[int, int], frame_size: tuple[int, int], seed: int = 0) -> None:
    """A feature cache written by hand: per-patch label fractions of the ground truth, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    files = sorted(gt.glob("*.png"))
    folder.mkdir()
    dim = 16
    for file in files:
        fractions = labels_to_probs(read_label_map(file), [0, 1, 2], grid, mode="area").permute(1, 2, 0)
        features = torch.cat([fractions, 0.15 * torch.randn(*grid, dim - 3, generator=generator)], dim=-1)
        np.save(folder / f"{file.stem}.npy", F.normalize(features, dim=-1).numpy().astype(np.float16))
    meta = {"model": "oracle", "patch_size": 16, "short_side": 160, "grid": list(grid),
            "frame_size": list(frame_size), "dim": dim, "frames": len(files), "dtype": "float16"}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_paper_preset_with_feature_cache_equals_literal(tmp_path: Path):
    grid, size = (10, 18), (240, 426)
    cache = tmp_path / "cache"
    oracle_cache(cache, SAMPLE / "shapes_gt", grid, size)
    output = tmp_path / "run"
    result = invoke("track", SAMPLE / "shapes.mp4", "--mask", SAMPLE / "shapes_mask.png", "--output", output,
                    "--features", cache, "--preset", "paper", "--no-overlay")
    assert result.exit_code == 0, result.output
    stems = [f"{i:05d}" for i in range(60)]
    feats = [F.normalize(torch.from_numpy(np.load(cache / f"{s}.npy").astype(np.float32)), dim=-1) for s in stems]
    first = read_label_map(SAMPLE / "shapes_mask.png")
    probs = labels_to_probs(first, [0, 1, 2], grid, mode="nearest")
    ious = []
    for stem, expected_probs in zip(stems[1:], propagate_literal(feats[0], probs, feats[1:])):
        expected = probs_to_ids(expected_probs, [0, 1, 2], size)
        got = read_label_map(output / "masks" / f"{stem}.png")
        for label in (1, 2):
            union = ((expected == label) | (got == label)).sum()
            ious.append(((expected == label) & (got == label)).sum() / union if union else 1.0)
    assert np.mean(ious) >= 0.995


def test_features_then_track_from_cache_gives_the_same_masks(tiny_weights: Path, tmp_path: Path):
    video, mask = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png"
    cache = tmp_path / "cache"
    result = invoke("features", video, "--output", cache, "--weights", tiny_weights, *TINY)
    assert result.exit_code == 0, result.output
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["grid"] == [4, 8] and meta["frame_size"] == [240, 426] and meta["dim"] == 64 and meta["frames"] == 60
    sample = np.load(cache / "00007.npy")
    assert sample.dtype == np.float16 and sample.shape == (4, 8, 64)
    assert np.allclose(np.linalg.norm(sample.astype(np.float32), axis=-1), 1, atol=1e-2)
    direct, cached = tmp_path / "direct", tmp_path / "cached"
    assert invoke("track", video, "--mask", mask, "--output", direct, "--weights", tiny_weights, *TINY, "--no-overlay").exit_code == 0
    assert invoke("track", video, "--mask", mask, "--output", cached, "--features", cache, "--short-side", "64", "--no-overlay").exit_code == 0
    agree = [np.mean(read_label_map(direct / "masks" / f.name) == read_label_map(f)) for f in sorted((cached / "masks").glob("*.png"))]
    assert np.mean(agree) > 0.99  # float16 storage may flip a few boundary pixels


def test_models_lists_the_family():
    result = invoke("models")
    assert result.exit_code == 0
    for name in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16", "vitl16-sat", "vit7b16-sat"):
        assert name in result.output


def assert_fits_80_columns(output: str) -> None:
    assert "\u2026" not in output, output  # no cell cut short with an ellipsis
    assert max(map(len, output.splitlines())) <= 80, output


def test_tables_fit_80_columns_with_whole_cells(tmp_path: Path):
    name = "a-rather-long-sequence-name"
    for side in ("pred", "gt"):
        (tmp_path / side / name).mkdir(parents=True)
        for index in range(4):
            ids = np.zeros((24, 32), np.uint8)
            ids[4 : 12 + index, 4:20] = 1
            ids[14:22, 20 : 28 - (side == "pred")] = 2
            write_label_map(tmp_path / side / name / f"{index:05d}.png", ids)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert_fits_80_columns(result.output)
    assert name in result.output and "J&F-Mean" in result.output
    assert "100.0" in result.output  # percentages with one decimal
    models = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert_fits_80_columns(models.output)
    assert "timm/vit_small_plus_patch16_dinov3_qkvb.lvd1689m" in models.output


def test_models_as_json():
    listed = json.loads(invoke("models", "--json").output)
    assert {"vits16", "vit7b16"} <= {spec["name"] for spec in listed}
    vits16 = next(spec for spec in listed if spec["name"] == "vits16")
    assert vits16["hub_id"] == "timm/vit_small_patch16_dinov3_qkvb.lvd1689m" and vits16["dim"] == 384


def test_version_and_help():
    assert invoke("--version").output.strip().startswith("dinotrack ")
    result = invoke("track", "--help")
    assert result.exit_code == 0 and "--mask" in result.output and "--preset" in result.output


@pytest.mark.parametrize("command", [[], ["track"], ["features"], ["evaluate"], ["batch"], ["benchmark"], ["report"], ["convert"], ["models"]])
def test_help_reads_well_at_80_columns(command):
    result = runner.invoke(app, [*command, "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "..." not in result.output.replace("[ARGS]...", "")
    assert max(map(len, result.output.splitlines())) <= 80, result.output


def test_verbose_is_accepted_after_the_command_too(tmp_path: Path):
    for args in (["-v", "models"], ["report", str(tmp_path), "-v"]):
        logging.getLogger("dinotrack").setLevel(logging.INFO)
        result = runner.invoke(app, args)
        assert "No such option" not in result.output
        assert logging.getLogger("dinotrack").level == logging.DEBUG


@pytest.mark.parametrize("user_value, expected", [(None, "1000"), ("7", "7")])
def test_cli_tunes_openmp_before_torch_loads(user_value, expected):
    """libgomp reads GOMP_SPINCOUNT once, when torch loads it: the CLI module must set it first."""
    environment = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    if user_value is not None:
        environment["GOMP_SPINCOUNT"] = user_value
    code = "import os, sys, dinotrack.cli; print('torch' in sys.modules, os.environ['GOMP_SPINCOUNT'])"
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", expected]


def test_benchmark_davis_layout_is_resumable(tiny_weights: Path, davis: Path, tmp_path: Path):
    output = tmp_path / "bench"
    args = ["benchmark", davis, "--output", output, "--sequences", "car-shadow,blackswan", "--weights", tiny_weights,
            "--model", "dinotrack.testing:TINY", "--device", "cpu", "--short-side", "64", "--no-overlay"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    global_csv = (output / "global_results.csv").read_text().splitlines()
    assert global_csv[0].startswith("J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay")
    per_sequence = (output / "per-sequence_results.csv").read_text()
    assert "car-shadow_1" in per_sequence and "blackswan_1" in per_sequence
    assert (output / "report.html").is_file() and (output / "car-shadow" / "metrics.json").is_file()
    for name, frames in (("car-shadow", 40), ("blackswan", 50)):
        assert len(list((output / name / "masks").glob("*.png"))) == frames
    stamp = (output / "car-shadow" / "run.json").stat().st_mtime_ns
    again = invoke(*args)
    assert again.exit_code == 0 and (output / "car-shadow" / "run.json").stat().st_mtime_ns == stamp
    assert (output / "global_results.csv").read_text().splitlines() == global_csv
