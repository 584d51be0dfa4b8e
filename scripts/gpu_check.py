"""Check dinotrack on one GPU: CPU-GPU agreement, bf16 against fp32, frames/s and memory; prints one table.

Rows:

- agreement: fp32 features on the CPU and on the GPU (the same random
  weights), each tracked with the paper preset; the mean IoU of the two
  label maps over every object and frame (target >= 0.99), on the sample clip
  and on the first shared DAVIS sequence (``--frames-agreement`` frames each);
- bf16: features under bf16 autocast (as dinotrack runs a GPU) against fp32,
  on the GPU: the mean cosine similarity of each patch's two features;
- speed: ``track_video`` with the default preset and the plain overlay at
  S=``--short-side`` and batch ``--batch-size``, for each model of
  ``--models``, without and with ``--compile``, on the shared sequences
  looped to ``--frames`` frames (the sample clip upscaled where they are
  absent): frames/s of the whole call (model build and compilation included)
  and of the frame loop alone, and the peak GPU memory.

Weights are random (``dinotrack.testing``, seed 0): speed and agreement do
not depend on their values. Sized for at most 8 minutes on one GPU:

    python scripts/gpu_check.py                     # cuda, vits16 and vitl16, S=960, batch 8, 300 frames
    python scripts/gpu_check.py --models vits16 --frames 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dinotrack from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmark's helpers

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import DAVIS, FOOTAGE, SAMPLE, Table, write_video  # noqa: E402
from dinotrack.backbones import Backbone, create_backbone  # noqa: E402
from dinotrack.features import patch_grid, preprocess  # noqa: E402
from dinotrack.masks import object_ids, read_label_map, write_label_map  # noqa: E402
from dinotrack.pipeline import RunOptions, track_video  # noqa: E402
from dinotrack.sources import open_source  # noqa: E402
from dinotrack.structs import PRESETS  # noqa: E402
from dinotrack.testing import write_timm_checkpoint  # noqa: E402
from dinotrack.tracker import Tracker  # noqa: E402

AGREEMENT_TARGET = 0.99
AGREEMENT_SHORT_SIDE = 480


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the GPU (default cuda)")
    parser.add_argument("--models", default="vits16,vitl16", help="models of the speed rows, comma-separated")
    parser.add_argument("--short-side", type=int, default=960, help="S of the speed rows")
    parser.add_argument("--batch-size", type=int, default=8, help="batch of the speed rows")
    parser.add_argument("--frames", type=int, default=300, help="frames of the speed rows' clip")
    parser.add_argument("--frames-agreement", type=int, default=30, help="frames of each agreement clip")
    return parser.parse_args()


def fp32_features(backbone: Backbone, frames: list[np.ndarray], short_side: int) -> Iterator[torch.Tensor]:
    """``[h, w, D] float32`` features of each frame, without autocast, on the backbone's device."""
    for rgb in frames:
        pixels = torch.from_numpy(rgb[None]).to(backbone.device)
        grid = patch_grid(rgb.shape[:2], short_side, backbone.patch_size)
        images = preprocess(pixels, grid, backbone.patch_size, backbone.mean, backbone.std)
        with torch.inference_mode(), torch.autocast(backbone.device.type, enabled=False):
            yield F.normalize(backbone(images).float(), dim=-1)[0]


def bf16_features(backbone: Backbone, frames: list[np.ndarray], short_side: int) -> Iterator[torch.Tensor]:
    """The same under bf16 autocast, as :class:`~dinotrack.features.FeatureExtractor` runs a GPU."""
    for rgb in frames:
        pixels = torch.from_numpy(rgb[None]).to(backbone.device)
        grid = patch_grid(rgb.shape[:2], short_side, backbone.patch_size)
        images = preprocess(pixels, grid, backbone.patch_size, backbone.mean, backbone.std)
        with torch.inference_mode(), torch.autocast(backbone.device.type, dtype=torch.bfloat16):
            yield F.normalize(backbone(images).float(), dim=-1)[0]


def tracked(frames: list[np.ndarray], mask: np.ndarray, features: Iterator[torch.Tensor]) -> list[np.ndarray]:
    """Label maps of ``frames`` with the paper preset, the first frame's ``mask`` given."""
    tracker = Tracker(PRESETS["paper"].replace(short_side=AGREEMENT_SHORT_SIDE))
    return [tracker.process(rgb, feats, mask if index == 0 else None) for index, (rgb, feats) in enumerate(zip(frames, features))]


def mean_iou(a: list[np.ndarray], b: list[np.ndarray], objects: list[int]) -> float:
    ious = []
    for x, y in zip(a, b):
        for label in objects:
            union = np.logical_or(x == label, y == label).sum()
            ious.append(1.0 if union == 0 else np.logical_and(x == label, y == label).sum() / union)
    return float(np.mean(ious))


def agreement_clips(count: int) -> list[tuple[str, list[np.ndarray], np.ndarray]]:
    """``(name, frames, first mask)``: the sample clip and the first shared DAVIS sequence, if present."""
    sample = [frame.rgb for _, frame in zip(range(count), open_source(SAMPLE / "shapes.mp4"))]
    clips = [("sample clip shapes.mp4", sample, read_label_map(SAMPLE / "shapes_mask.png"))]
    if FOOTAGE.sequences:
        first = FOOTAGE.first_only()
        clips.append((f"DAVIS {first.name}", list(first.frames(count)), next(first.masks(1))))
    return clips


def agreement_rows(table: Table, weights: Path, device: torch.device, count: int) -> None:
    on_cpu = create_backbone("vits16", weights=weights, device=torch.device("cpu"))
    on_gpu = create_backbone("vits16", weights=weights, device=device)
    for name, frames, mask in agreement_clips(count):
        cpu = tracked(frames, mask, fp32_features(on_cpu, frames, AGREEMENT_SHORT_SIDE))
        gpu = tracked(frames, mask, fp32_features(on_gpu, frames, AGREEMENT_SHORT_SIDE))
        iou = mean_iou(cpu, gpu, object_ids(mask))
        verdict = "met" if iou >= AGREEMENT_TARGET else "MISSED"
        table.add(f"CPU vs GPU fp32 masks, {name}", f"mean IoU {iou:.4f}", f"{len(frames)} frames, vits16, S={AGREEMENT_SHORT_SIDE}, paper preset; target >= {AGREEMENT_TARGET}: {verdict}")
        if name.startswith("DAVIS") or not FOOTAGE.sequences:
            pairs = zip(fp32_features(on_gpu, frames, AGREEMENT_SHORT_SIDE), bf16_features(on_gpu, frames, AGREEMENT_SHORT_SIDE))
            cosine = float(np.mean([(a * b).sum(-1).mean().item() for a, b in pairs]))
            table.add(f"bf16 autocast vs fp32 features, {name}", f"mean cosine {cosine:.5f}", f"{len(frames)} frames, vits16, on the GPU")


def speed_rows(table: Table, root: Path, args: argparse.Namespace, device: torch.device) -> None:
    video = write_video(root / "clip.mp4", args.frames)
    mask = root / "mask.png"
    write_label_map(mask, next(FOOTAGE.masks(1)))
    for model in args.models.split(","):
        weights = write_timm_checkpoint(root / f"{model}.safetensors", model)
        for compile_model in (False, True):
            options = RunOptions(
                model=model, weights=weights, device=str(device), short_side=args.short_side,
                batch_size=args.batch_size, compile=compile_model, overlay="plain",
            )  # fmt: skip
            torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            report = track_video(video, mask, root / f"run-{model}-{compile_model}", options, overwrite=True)
            wall = time.perf_counter() - started
            frames = report.record.frames_done
            loop = report.record.seconds["total"] - report.record.seconds.get("load_model", 0.0)
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            table.add(
                f"{model}, S={args.short_side}, batch {args.batch_size}{', --compile' if compile_model else ''}",
                f"{frames / wall:.1f} frames/s",
                f"{frames} frames in {wall:.1f} s (frame loop {frames / loop:.1f} frames/s); peak GPU memory {peak:.2f} GiB",
            )


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        sys.exit(f"gpu_check needs a CUDA device; {args.device} is not available here.")
    table = Table(f"GPU check: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}", ("check", "result", "notes"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dinotrack-gpu-check-") as folder:
        root = Path(folder)
        agreement_rows(table, write_timm_checkpoint(root / "agreement.safetensors", "vits16"), device, args.frames_agreement)
        speed_rows(table, root, args, device)
    footage = FOOTAGE.describe() if FOOTAGE.sequences else f"sample clip (no DAVIS at {DAVIS})"
    table.add("whole check", f"{time.perf_counter() - started:.0f} s", f"speed clip: {footage}, {args.frames} frames")
    table.print()


if __name__ == "__main__":
    main()
