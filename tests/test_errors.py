"""Every bad input gets one clear paragraph, the right exit status, no traceback and no false output.

Each case runs through the real CLI with the tiny random backbone on three
48x64 frames. Exit status 2 marks usage errors, 1 failures at run time. A run
refused before tracking starts leaves nothing behind; one that fails midway
keeps the masks it wrote and says in ``run.json`` that it failed, and why.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import ROOT
from dinotrack.cli import app
from dinotrack.masks import PALETTE, read_label_map, write_label_map
from dinotrack.sources import VideoWriter
from dinotrack.structs import UsageError

runner = CliRunner()
FRAME_SIZE = (48, 64)
FRAMES = 3
TINY = ["--model", "tiny", "--device", "cpu", "--short-side", "64"]


# --- small inputs ------------------------------------------------------------------------------


@dataclass
class Workspace:
    """Valid small inputs in ``root``: three ``[48, 64]`` frames, their first mask, tiny weights."""

    root: Path
    weights: Path
    env: pytest.MonkeyPatch

    @property
    def frames(self) -> Path:
        return self.root / "frames"

    @property
    def mask(self) -> Path:
        return self.root / "mask.png"

    @property
    def output(self) -> Path:
        return self.root / "out"

    def track(self, *extra: object, source: Path | None = None, mask: Path | None = None) -> list[object]:
        """Arguments of a tiny ``track`` run without overlay; ``extra`` options come last and win."""
        return ["track", source or self.frames, "--mask", mask or self.mask, "--output", self.output,
                "--weights", self.weights, *TINY, "--no-overlay", *extra]

    def image(self, name: str, pixels: np.ndarray) -> Path:
        """Save ``pixels`` as the PNG ``root/name`` in the mode PIL infers from their dtype and shape."""
        Image.fromarray(pixels).save(self.root / name)
        return self.root / name


def noise_frames(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    """Write ``count`` random ``[H, W, 3] uint8`` frames as ``00000.png``, ``00001.png``, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(generator.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")


def two_objects(size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """``[H, W] uint8`` ids: object 1 in the top-left quarter, object 2 in the bottom-right one."""
    ids = np.zeros(size, dtype=np.uint8)
    height, width = size
    ids[: height // 2, : width // 2] = 1
    ids[height // 2 :, width // 2 :] = 2
    return ids


@pytest.fixture
def ws(tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    workspace = Workspace(tmp_path, tiny_weights, monkeypatch)
    noise_frames(workspace.frames, FRAMES, FRAME_SIZE)
    write_label_map(workspace.mask, two_objects())
    return workspace


# --- running and checking ----------------------------------------------------------------------


def invoke(args: list[object]) -> tuple[int, str]:
    """Exit status and terminal output (stdout and stderr) of the CLI run in this process."""
    result = runner.invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}; output:\n{result.output}") from result.exception
    return result.exit_code, result.output


def run_module(args: list[object], env: dict[str, str | None], timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m dinotrack ARGS`` in a fresh process: real exit status, real stderr.

    ``env`` adds variables to this process's environment; a ``None`` value removes one.
    """
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    merged = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "dinotrack", *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env={name: value for name, value in merged.items() if value is not None},
    )


def squash(text: str) -> str:
    """``text`` lower-cased without whitespace, so that line wrapping cannot split a phrase."""
    return "".join(text.split()).lower()


def assert_reported(status: int, output: str, expected_status: int, words: tuple[str, ...]) -> None:
    assert status == expected_status, output
    assert "Traceback" not in output
    for word in words:
        assert squash(word) in squash(output), f"{word!r} missing from:\n{output}"


def assert_nothing_written(output: Path) -> None:
    """No trace of a run: ``output`` is absent or empty."""
    left = sorted(path.name for path in output.iterdir()) if output.is_dir() else []
    assert not left, f"a refused run left {left} in {output}"


def assert_marked_failed(output: Path, frames_done: int, reason: str) -> None:
    """A run that failed midway: its masks and overlay so far are whole; run.json says it failed and why."""
    run = json.loads((output / "run.json").read_text())
    assert (run["status"], run["frames_done"]) == ("failed", frames_done)
    assert squash(reason) in squash(run["error"])
    masks = sorted((output / "masks").glob("*.png"))
    assert [mask.stem for mask in masks] == [f"{index:05d}" for index in range(frames_done)]
    assert all(read_label_map(mask).shape == FRAME_SIZE for mask in masks)
    assert run["overlay"]["frames"] == frames_done == decoded_frames(output / "overlay.mp4")
    assert not list(output.rglob("*.part*"))


def decoded_frames(video: Path) -> int:
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


# --- refused before anything is written ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: ``build`` makes its files and returns the CLI arguments."""

    build: Callable[[Workspace], list[object]]
    status: int
    words: tuple[str, ...]


def not_a_video(ws: Workspace) -> list[object]:
    fake = ws.root / "clip.mp4"
    fake.write_text("this is a text file\n")
    return ws.track(source=fake)


def empty_folder(ws: Workspace) -> list[object]:
    (ws.root / "empty").mkdir()
    return ws.track(source=ws.root / "empty")


def no_images(ws: Workspace) -> list[object]:
    folder = ws.root / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("frames come later")
    (folder / "list.csv").write_text("a,b\n")
    return ws.track(source=folder)


def tiny_frames(ws: Workspace) -> list[object]:
    noise_frames(ws.root / "small", 2, (8, 12))
    write_label_map(ws.root / "small.png", two_objects((8, 12)))
    return ws.track(source=ws.root / "small", mask=ws.root / "small.png")


def mask_text(ws: Workspace) -> list[object]:
    (ws.root / "notes.png").write_text("not a picture")
    return ws.track(mask=ws.root / "notes.png")


def mask_background_only(ws: Workspace) -> list[object]:
    write_label_map(ws.root / "empty.png", np.zeros(FRAME_SIZE, np.uint8))
    return ws.track(mask=ws.root / "empty.png")


def mask_square(ws: Workspace) -> list[object]:
    write_label_map(ws.root / "square.png", two_objects((40, 40)))
    return ws.track(mask=ws.root / "square.png")


def mask_id_300(ws: Workspace) -> list[object]:
    ids = two_objects().astype(np.uint16)
    ids[0, 0] = 300
    return ws.track(mask=ws.image("ids16.png", ids))


def mask_palette_index_255(ws: Workspace) -> list[object]:
    ids = two_objects()
    ids[0, :4] = 255
    write_label_map(ws.root / "void.png", ids)
    return ws.track(mask=ws.root / "void.png")


def mask_off_palette_colour(ws: Workspace) -> list[object]:
    rgb = np.zeros((*FRAME_SIZE, 3), dtype=np.uint8)
    rgb[:10, :10] = (250, 10, 10)
    return ws.track(mask=ws.image("red.png", rgb))


def mask_jpeg(ws: Workspace) -> list[object]:
    """A 0/255 disc saved as JPEG: its edge gets grey levels."""
    rows, columns = np.ogrid[: FRAME_SIZE[0], : FRAME_SIZE[1]]
    disc = (rows - 20) ** 2 + (columns - 30) ** 2 < 15**2
    Image.fromarray(np.where(disc, np.uint8(255), np.uint8(0))).save(ws.root / "mask.jpg", quality=75)
    return ws.track(mask=ws.root / "mask.jpg")


def mask_jpeg_saved_as_png(ws: Workspace) -> list[object]:
    mask_jpeg(ws)
    with Image.open(ws.root / "mask.jpg") as blurred:
        return ws.track(mask=ws.image("resaved.png", np.asarray(blurred)))


def gt_folder(ws: Workspace, names: list[str], size: tuple[int, int] = FRAME_SIZE) -> Path:
    """Ground truth ``root/gt/<name>.png`` of two objects for each name."""
    folder = ws.root / "gt"
    folder.mkdir(exist_ok=True)
    for name in names:
        write_label_map(folder / f"{name}.png", two_objects(size))
    return folder


def weights_truncated(ws: Workspace) -> list[object]:
    data = ws.weights.read_bytes()
    (ws.root / "cut.pth").write_bytes(data[: len(data) // 2])
    return ws.track("--weights", ws.root / "cut.pth")


def weights_text(ws: Workspace) -> list[object]:
    (ws.root / "links.pth").write_text("<html>\n<body>Download the weights here</body>\n")
    return ws.track("--weights", ws.root / "links.pth")


def weights_noise(ws: Workspace) -> list[object]:
    (ws.root / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return ws.track("--weights", ws.root / "noise.safetensors")


class RunsCode:
    """Unpickling this object would create ``marker``: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


def weights_pickle_with_code(ws: Workspace) -> list[object]:
    state = torch.load(ws.weights, weights_only=True)
    state["extra"] = RunsCode(ws.root / "pwned")
    torch.save(state, ws.root / "unsafe.pth")
    return ws.track("--weights", ws.root / "unsafe.pth")


def offline_without_weights(ws: Workspace) -> list[object]:
    ws.env.setenv("HF_HUB_OFFLINE", "1")
    ws.env.setenv("HF_HOME", str(ws.root / "hf"))
    ws.env.delenv("HF_HUB_CACHE", raising=False)
    ws.env.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return [arg for arg in ws.track("--model", "vits16") if arg != ws.weights and arg != "--weights"]


def output_is_a_file(ws: Workspace) -> list[object]:
    ws.output.write_text("keep me")
    return ws.track()


def features_args(ws: Workspace, short_side: str) -> list[object]:
    return ["features", ws.frames, "--output", ws.output, "--weights", ws.weights, *TINY, "--short-side", short_side]


def evaluate_args(ws: Workspace, pred: np.ndarray | None, gt: np.ndarray | None) -> list[object]:
    """``evaluate PRED GT --json`` with three frames of the given ids on each side (``None``: no folder)."""
    for name, ids in (("pred", pred), ("gt", gt)):
        if ids is not None:
            (ws.root / name).mkdir()
            for index in range(FRAMES):
                write_label_map(ws.root / name / f"{index:05d}.png", ids)
    return ["evaluate", ws.root / "pred", ws.root / "gt", "--json", ws.output / "scores.json"]


def empty_predictions(ws: Workspace) -> list[object]:
    args = evaluate_args(ws, None, two_objects())
    (ws.root / "pred").mkdir()
    return args


def option(*pairs: str) -> Callable[[Workspace], list[object]]:
    return lambda ws: ws.track(*pairs)


CASES = {
    # source
    "source-missing": Case(lambda ws: ws.track(source=ws.root / "nowhere.mp4"), 2, ("nowhere.mp4", "does not exist", "folder of frames")),
    "text-named-mp4": Case(not_a_video, 2, ("clip.mp4", "cannot decode", "not a video", "video file such as")),
    "empty-folder": Case(empty_folder, 2, ("is empty", "frames as image files")),
    "folder-of-non-images": Case(no_images, 2, ("no image files", ".jpg, .jpeg, .png")),
    "frames-smaller-than-a-patch": Case(tiny_frames, 2, ("12x8", "smaller than one 16-pixel patch")),
    # mask
    "mask-missing": Case(lambda ws: ws.track(mask=ws.root / "nomask.png"), 2, ("nomask.png", "does not exist", "PNG label map")),
    "mask-not-an-image": Case(mask_text, 2, ("notes.png", "not a readable image", "indexed")),
    "mask-all-background": Case(mask_background_only, 2, ("empty.png", "holds no object", "non-zero id")),
    "mask-of-another-shape": Case(mask_square, 2, ("40x40", "64x48", "different shape", "aspect ratio")),
    "mask-16-bit-id-300": Case(mask_id_300, 2, ("value 300", "0..254", "renumber")),
    "mask-palette-index-255": Case(mask_palette_index_255, 2, ("value 255", "0..254")),
    "mask-colour-not-in-palette": Case(mask_off_palette_colour, 2, ("(250, 10, 10)", "DAVIS palette", "indexed PNG")),
    "mask-jpeg": Case(mask_jpeg, 2, ("mask.jpg", "is a JPEG image", "save masks as PNG", "grey levels")),
    "mask-jpeg-saved-as-png": Case(mask_jpeg_saved_as_png, 2, ("resaved.png", "grey levels spread up to 255", "JPEG compression adds grey levels")),
    # ground truth
    "gt-named-unlike-the-frames": Case(
        lambda ws: ws.track("--gt", gt_folder(ws, ["frame_0001", "frame_0002", "frame_0003"])), 2,
        ("No ground-truth mask", "is named like a frame", "frame_0001.png", "named 00000, 00001", "00000.png for the first"),
    ),
    "gt-with-one-unpaired-mask": Case(
        lambda ws: ws.track("--gt", gt_folder(ws, ["00000", "00001", "00002", "00003"])), 2,
        ("1 of the 4 ground-truth masks", "are not named like a frame", "00003.png"),
    ),
    "gt-of-another-size": Case(
        lambda ws: ws.track("--gt", gt_folder(ws, ["00000", "00001", "00002"], (24, 32))), 2,
        ("00000.png is 32x24", "frames are 64x48", "at the frames' size"),
    ),
    "gt-of-two-frames": Case(
        lambda ws: ws.track("--gt", gt_folder(ws, ["00000", "00001"])), 2,
        ("holds 2 masks", "first and last", "at least 3"),
    ),
    "gt-frames-all-keyframes": Case(
        lambda ws: ws.track("--gt", gt_folder(ws, ["00000", "00001", "00002"]), mask=ws.root / "gt"), 2,
        ("Every frame that --gt", "is also a keyframe", "compare the given masks with themselves"),
    ),
    # weights and model
    "weights-missing": Case(lambda ws: ws.track("--weights", ws.root / "none.pth"), 2, ("none.pth", "does not exist", "checkpoint file")),
    "weights-truncated": Case(weights_truncated, 1, ("cut.pth", "truncated or corrupt", "download it again")),
    "weights-corrupt": Case(weights_noise, 1, ("noise.safetensors", "truncated or corrupt")),
    "weights-text-file": Case(weights_text, 2, ("links.pth", "is a text file", "'<html>'", "not a checkpoint")),
    "weights-of-another-model": Case(option("--model", "vits16"), 2, ("does not hold vits16 weights", "looks like tiny", "--model tiny")),
    "weights-pickle-with-code": Case(weights_pickle_with_code, 2, ("more than tensors", "io.open object", "state dict", ".safetensors")),
    "unknown-model": Case(option("--model", "vit_giant"), 2, ("unknown model 'vit_giant'", "vits16", "dinotrack models")),
    "model-path-no-module": Case(option("--model", "no_such_package.specs:BIG"), 2, ("'no_such_package.specs:BIG'", "cannot import no_such_package.specs", "no module named", "package.module:ATTRIBUTE", "on PYTHONPATH")),
    "model-path-no-attribute": Case(option("--model", "dinotrack.testing:HUGE"), 2, ("dinotrack.testing has no attribute HUGE", "name a BackboneSpec", "dinotrack.testing:TINY")),
    "model-path-not-a-spec": Case(option("--model", "dinotrack.testing:registered"), 2, ("it is a function, not a BackboneSpec", "dinotrack models")),
    "model-path-malformed": Case(option("--model", "dinotrack.testing:"), 2, ("unknown model 'dinotrack.testing:'", "package.module:ATTRIBUTE")),
    "no-weights-offline": Case(offline_without_weights, 1, ("--weights PATH", "HF_HUB_OFFLINE", "huggingface.co/timm/vit_small_patch16_dinov3_qkvb.lvd1689m")),
    # options
    "short-side-zero": Case(option("--short-side", "0"), 2, ("--short-side", "positive", "got 0")),
    "short-side-negative": Case(option("--short-side", "-32"), 2, ("--short-side", "positive", "got -32")),
    "short-side-not-a-number": Case(option("--short-side", "big"), 2, ("--short-side", "valid integer")),
    "short-side-unreachable": Case(option("--short-side", "100000"), 2, ("--short-side", "at most 4096", "got 100000")),
    "features-short-side-negative": Case(lambda ws: features_args(ws, "-8"), 2, ("--short-side", "positive", "got -8")),
    "features-short-side-zero": Case(lambda ws: features_args(ws, "0"), 2, ("--short-side", "positive", "got 0")),
    "topk-zero": Case(option("--topk", "0"), 2, ("--topk", "at least 1", "got 0")),
    "radius-negative": Case(option("--radius", "-1"), 2, ("--radius", "0 or more", "got -1")),
    "radius-infinite": Case(option("--radius", "inf"), 2, ("--radius", "finite", "got inf")),
    "temperature-zero": Case(option("--temperature", "0"), 2, ("--temperature", "greater than 0", "got 0")),
    "temperature-nan": Case(option("--temperature", "nan"), 2, ("--temperature", "greater than 0", "got nan")),
    "context-negative": Case(option("--context", "-2"), 2, ("--context", "0 or more", "got -2")),
    "device-unknown": Case(option("--device", "tpu"), 2, ("Unknown device 'tpu'", "--device", "cpu")),
    # output
    "output-is-a-file": Case(output_is_a_file, 2, ("existing file", "give a folder path")),
    # evaluate
    "evaluate-pred-missing": Case(lambda ws: evaluate_args(ws, None, two_objects()), 2, ("prediction folder", "does not exist")),
    "evaluate-gt-missing": Case(lambda ws: evaluate_args(ws, two_objects(), None), 2, ("ground-truth folder", "does not exist")),
    "evaluate-empty-predictions": Case(empty_predictions, 2, ("holds no PNG masks", "folder the tracker wrote")),
    "evaluate-mismatched-sizes": Case(lambda ws: evaluate_args(ws, two_objects((24, 32)), two_objects()), 2, ("is 32x24", "is 64x48", "original size")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_before_anything_is_written(ws: Workspace, name: str) -> None:
    case = CASES[name]
    args = case.build(ws)
    before = ws.output.read_text() if ws.output.is_file() else None
    status, output = invoke(args)
    assert_reported(status, output, case.status, case.words)
    if before is None:
        assert_nothing_written(ws.output)
    else:
        assert ws.output.read_text() == before
    assert not (ws.root / "pwned").exists()


def test_cuda_asked_for_on_a_machine_without_it(ws: Workspace) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    status, output = invoke(ws.track("--device", "cuda"))
    assert_reported(status, output, 2, ("--device cuda", "no CUDA device", "--device cpu"))
    assert_nothing_written(ws.output)


def test_output_holding_another_run_is_kept_unless_overwrite(ws: Workspace) -> None:
    assert invoke(ws.track())[0] == 0
    run_json = (ws.output / "run.json").read_text()
    status, output = invoke(ws.track("--topk", "3"))
    assert_reported(status, output, 2, ("already holds results", "run.json", "masks", "--overwrite"))
    assert (ws.output / "run.json").read_text() == run_json
    assert len(list((ws.output / "masks").glob("*.png"))) == FRAMES
    assert invoke(ws.track("--topk", "3", "--overwrite"))[0] == 0
    assert json.loads((ws.output / "run.json").read_text())["settings"]["topk"] == 3


def test_output_without_write_permission(ws: Workspace) -> None:
    if os.geteuid() == 0:  # root writes through any mode bits; sysfs refuses new folders to everyone
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root without /sys: no folder here refuses root's writes")
        output = Path("/sys/dinotrack-output")
    else:
        locked = ws.root / "locked"
        locked.mkdir(mode=0o555)
        output = locked / "out"
    status, text = invoke([*ws.track(), "--output", output])
    assert_reported(status, text, 1, ("cannot write to --output", "choose a folder you can write to"))
    assert not output.exists()


# --- read right: masks that are unusual but valid ----------------------------------------------


def rgba_on_transparent(ids: np.ndarray) -> np.ndarray:
    """``[H, W, 4] uint8``: each id in its DAVIS colour, background white and fully transparent."""
    rgba = np.concatenate([PALETTE[ids], np.full((*ids.shape, 1), 255, np.uint8)], axis=-1)
    rgba[ids == 0] = (255, 255, 255, 0)
    return rgba


@pytest.mark.parametrize(
    "name, pixels, expected",
    [
        ("binary-16-bit", (two_objects() > 0).astype(np.uint16) * 65535, (two_objects() > 0).astype(np.uint8)),
        ("ids-16-bit", two_objects().astype(np.uint16) * 3, two_objects() * 3),
        ("rgba-davis-colours", rgba_on_transparent(two_objects()), two_objects()),
        ("rgb-davis-colours", PALETTE[two_objects()], two_objects()),
        ("grey-0-255", (two_objects() > 0).astype(np.uint8) * 255, (two_objects() > 0).astype(np.uint8)),
    ],
)
def test_unusual_masks_are_read_right(ws: Workspace, name: str, pixels: np.ndarray, expected: np.ndarray) -> None:
    status, output = invoke(ws.track(mask=ws.image(f"{name}.png", pixels)))
    assert status == 0, output
    assert np.array_equal(read_label_map(ws.output / "masks" / "00000.png"), expected)
    assert json.loads((ws.output / "run.json").read_text())["status"] == "complete"


def test_mask_of_the_same_aspect_is_resized_with_a_warning(ws: Workspace) -> None:
    half = two_objects((24, 32))
    write_label_map(ws.root / "half.png", half)
    status, output = invoke(ws.track(mask=ws.root / "half.png"))
    assert status == 0, output
    assert squash("resizing it to the frames' 64x48") in squash(output)
    first = read_label_map(ws.output / "masks" / "00000.png")
    assert np.array_equal(first, half.repeat(2, axis=0).repeat(2, axis=1))


def test_keyframes_with_ground_truth_are_left_out_of_the_scores(ws: Workspace) -> None:
    noise_frames(ws.frames, 5, FRAME_SIZE)
    gt = gt_folder(ws, [f"{index:05d}" for index in range(5)])
    keyframes = ws.root / "keyframes"
    keyframes.mkdir()
    for name in ("00000", "00002"):
        (keyframes / f"{name}.png").write_bytes((gt / f"{name}.png").read_bytes())
    status, output = invoke(ws.track("--gt", gt, mask=keyframes))
    assert status == 0, output
    assert squash("1 of the 3 frames to score are keyframes") in squash(output)
    assert squash("left out of the scores") in squash(output)
    assert "keyframes" in output and "2 of 5" in output  # the summary says how many frames were given
    metrics = json.loads((ws.output / "metrics.json").read_text())
    assert {tuple(item["frames"]) for item in metrics["objects"]} == {("00001", "00003")}


def test_ground_truth_of_fewer_frames_is_scored_with_a_warning(ws: Workspace) -> None:
    noise_frames(ws.frames, 5, FRAME_SIZE)
    status, output = invoke(ws.track("--gt", gt_folder(ws, ["00000", "00001", "00002"])))
    assert status == 0, output
    assert squash("annotates 3 of the 5 frames; only those are scored") in squash(output)


def test_scoring_that_fails_after_the_run_is_a_run_time_failure(ws: Workspace) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise UsageError("Mask gt/00001.png is not a readable PNG.")

    ws.env.setattr("dinotrack.pipeline.evaluate", unreadable)
    status, output = invoke(ws.track("--gt", gt_folder(ws, ["00000", "00001", "00002"])))
    assert_reported(status, output, 1, ("The run is complete", "scoring it failed", "not a readable PNG", "dinotrack evaluate"))
    assert json.loads((ws.output / "run.json").read_text())["status"] == "complete"
    assert len(list((ws.output / "masks").glob("*.png"))) == FRAMES


def make_cache(ws: Workspace, frames: Path, name: str = "cache") -> Path:
    status, output = invoke(["features", frames, "--output", ws.root / name, "--weights", ws.weights, *TINY])
    assert status == 0, output
    return ws.root / name


def test_a_feature_cache_of_other_frames_is_refused_before_any_work(ws: Workspace) -> None:
    other = ws.root / "other"
    noise_frames(other, FRAMES, FRAME_SIZE, seed=1)  # the same names, count and size: only the content differs
    status, output = invoke(ws.track("--features", make_cache(ws, other)))
    assert_reported(status, output, 2, ("was made from", "other", "whose content differs", "dinotrack features"))
    assert_nothing_written(ws.output)


def test_a_feature_cache_shorter_than_the_video_is_refused_before_any_work(ws: Workspace) -> None:
    short = ws.root / "short"
    short.mkdir()
    for file in sorted(ws.frames.iterdir())[:2]:
        (short / file.name).write_bytes(file.read_bytes())
    status, output = invoke(ws.track("--features", make_cache(ws, short)))
    assert_reported(status, output, 2, ("holds the features of 2 frames", "has 3", "dinotrack features"))
    assert_nothing_written(ws.output)


def test_track_from_a_cache_records_the_cache_settings(ws: Workspace) -> None:
    cache = make_cache(ws, ws.frames)
    args = ["track", ws.frames, "--mask", ws.mask, "--output", ws.output, "--features", cache, "--device", "cpu", "--no-overlay"]
    status, output = invoke(args)
    assert status == 0, output
    assert "does not apply" not in output
    run = json.loads((ws.output / "run.json").read_text())
    assert run["settings"]["short_side"] == 64 and run["model"] == "tiny"


def test_features_over_an_existing_cache_needs_overwrite(ws: Workspace) -> None:
    cache = make_cache(ws, ws.frames)
    meta = (cache / "meta.json").read_text()
    args = ["features", ws.frames, "--output", cache, "--weights", ws.weights, *TINY]
    assert_reported(*invoke(args), 2, ("already holds a feature cache", "--overwrite"))
    assert (cache / "meta.json").read_text() == meta
    status, output = invoke([*args, "--overwrite"])
    assert status == 0, output
    assert json.loads((cache / "meta.json").read_text())["complete"] is True


# --- failing midway: what was done is kept and marked --------------------------------------------


def test_frames_of_mixed_sizes_name_the_first_bad_frame(ws: Workspace) -> None:
    noise_frames(ws.frames, 4, FRAME_SIZE)
    ws.image("odd.png", np.zeros((24, 32, 3), np.uint8)).replace(ws.frames / "00002.png")
    status, output = invoke([arg for arg in ws.track() if arg != "--no-overlay"])
    assert_reported(status, output, 1, ("00002.png is 32x24 pixels", "first frame is 64x48", "resize or remove"))
    assert_marked_failed(ws.output, 2, "00002.png is 32x24 pixels")


def truncated_video(path: Path, frames: int) -> Path:
    """An H.264 mp4 of ``frames`` random frames, cut to 60% of its bytes (its index still announces all)."""
    generator = np.random.default_rng(0)
    whole = path.with_name("whole.mp4")
    with VideoWriter(whole, 24, FRAME_SIZE, codec="h264") as writer:
        for _ in range(frames):
            writer.write(generator.integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8))
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def test_truncated_video_keeps_and_marks_the_frames_before_the_damage(ws: Workspace) -> None:
    video = truncated_video(ws.root / "cut.mp4", 12)
    status, output = invoke([arg for arg in ws.track(source=video) if arg != "--no-overlay"])
    done = json.loads((ws.output / "run.json").read_text())["frames_done"]
    assert 0 < done < 12
    assert_reported(status, output, 1, (f"stops decoding after {done} of the 12 frames", "damaged", "download"))
    assert_marked_failed(ws.output, done, "stops decoding")


# --- a real process: exit status, stderr, --debug, no network ----------------------------------


NO_HUB_CACHE = {"HF_HUB_CACHE": None, "HUGGINGFACE_HUB_CACHE": None, "HF_HUB_OFFLINE": None, "HF_ENDPOINT": None}


@pytest.mark.parametrize("name", ["source-missing", "text-named-mp4"])
def test_real_process_exit_status_and_stderr(ws: Workspace, name: str) -> None:
    args = [arg for arg in CASES[name].build(ws) if arg not in (ws.weights, "--weights", "--model", "tiny")]
    result = run_module(args, {**NO_HUB_CACHE, "HF_HUB_OFFLINE": "1", "HF_HOME": str(ws.root / "hf")})
    assert_reported(result.returncode, result.stderr, CASES[name].status, ("Error:", *CASES[name].words))
    assert result.stderr.lstrip().startswith("Error:"), result.stderr  # no FFmpeg or OpenCV log lines before it
    assert_nothing_written(ws.output)


def test_bad_model_import_path_in_a_real_process(ws: Workspace) -> None:
    result = run_module(ws.track("--model", "no_such_package.specs:BIG"), {})
    assert_reported(result.returncode, result.stderr, 2, ("Error:", "no_such_package.specs:BIG", "cannot import"))
    assert "\n\n" not in result.stderr.strip()
    assert_nothing_written(ws.output)


def test_debug_shows_the_traceback(ws: Workspace) -> None:
    result = run_module(["track", ws.root / "nowhere.mp4", "--mask", ws.mask, "--output", ws.output, "--debug"], {})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "UsageError" in result.stderr and "nowhere.mp4" in result.stderr


@pytest.mark.parametrize(
    "network, reason",
    [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"), ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot be reached")],
    ids=["offline", "unreachable"],
)
def test_no_weights_and_no_network_fails_fast_with_the_ways_to_get_weights(
    ws: Workspace, network: dict[str, str], reason: str
) -> None:
    hf_home = ws.root / "hf"
    env = {**NO_HUB_CACHE, "HF_HOME": str(hf_home), **network}
    # The timeout only catches a hang (huggingface_hub's own retries take 23 s, and under load an import alone
    # takes seconds); how fast it fails is measured, not asserted: about 3 s on an idle machine.
    result = run_module(["track", ws.frames, "--mask", ws.mask, "--output", ws.output, "--device", "cpu"], env, timeout=120)
    words = (reason, "--weights PATH", "dinov3_vits16_pretrain_lvd1689m", "ai.meta.com",
             "huggingface.co/timm/vit_small_patch16_dinov3_qkvb.lvd1689m", str(hf_home / "hub"), "HF_HUB_OFFLINE=1")
    assert_reported(result.returncode, result.stderr, 1, ("Error:", *words))
