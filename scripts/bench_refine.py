"""Time ``probs_to_ids`` before and after the band (issues #13 and #14), one CPU thread.

Prints one Markdown table: milliseconds per frame of the paper path
(``refine="none"``: bilinear upsampling, min-max, argmax) and of colour
refinement (``refine="colour"``, the default preset) at 854x480, 1920x1080 and
3840x2160, for the code at ``--before`` (a git revision, loaded from git
without checking it out) and for this checkout; the peak memory each adds;
and whether the label maps are identical.

Inputs are realistic: the probabilities label propagation makes on DAVIS
sequences from the oracle features of ``scripts/oracle_eval.py`` (patch
fractions of the ground truth plus noise, S=480: a 30x54 grid), after
``--warmup`` frames of tracking, with each frame's RGB image, resized
bilinearly for the larger sizes (the grid stays 30x54, as at S=480).

Times are the CPU time of each call (``time.thread_time``, less disturbed by
other programs than wall time) with ``torch.set_num_threads(1)``, before and
after alternating call by call: the minimum and the median over
``--repeats`` passes over all samples, since the build machine is shared and
noisy. Peak memory: a fresh process per cell resets its peak resident size
(Linux ``/proc/self/clear_refs``) and reports how far one call on the first
sample raises it (torch's allocations are invisible to tracemalloc); the
frame itself is made before.

    PYTHONPATH=. python scripts/bench_refine.py
    PYTHONPATH=. python scripts/bench_refine.py --sizes 854x480 --repeats 20 --no-memory
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from dinotrack import refine  # noqa: E402
from dinotrack.features import patch_grid  # noqa: E402
from dinotrack.masks import object_ids, read_label_map  # noqa: E402
from dinotrack.propagate import LabelPropagator, labels_to_probs  # noqa: E402
from oracle_eval import DAVIS, PATCH_SIZE, oracle_features  # noqa: E402

BEFORE = "d7c8d77"
"""The last commit before the band: refine.py as issue #14 measured it."""
CHECKOUT = "checkout"
"""Stands for this working tree's refine.py where a revision is expected."""
SIZES = ((480, 854), (1080, 1920), (2160, 3840))
PATHS = {"paper": dict(refine="none"), "colour": dict(refine="colour")}


@dataclass(frozen=True)
class Sample:
    """One frame's input to ``probs_to_ids``: ``[M, h, w]`` probabilities, labels and the 854x480 RGB frame."""

    probs: torch.Tensor
    labels: list[int]
    rgb: np.ndarray


def oracle_samples(sequence: str, *, frames: int, warmup: int, noise: float, seed: int, short_side: int = 480) -> list[Sample]:
    """Probabilities propagated from the first frame's ground truth (area first mask), frames ``warmup..warmup+frames``."""
    gt = sorted((DAVIS / "Annotations" / "480p" / sequence).glob("*.png"))[: warmup + frames + 1]
    maps = [read_label_map(file) for file in gt]
    labels = [0, *sorted(set().union(*(object_ids(ids) for ids in maps)))]
    grid = patch_grid(maps[0].shape, short_side, PATCH_SIZE)
    generator = torch.Generator().manual_seed(seed)
    features = [torch.from_numpy(oracle_features(ids, labels, grid, dim=32, noise=noise, generator=generator)).float()
                for ids in maps]
    propagator = LabelPropagator()
    propagator.add_keyframe(features[0], labels_to_probs(maps[0], labels, grid, mode="area"))
    samples = []
    for index, frame_features in enumerate(features[1:], start=1):
        probs = propagator.step(frame_features)
        if index > warmup:
            image = DAVIS / "JPEGImages" / "480p" / sequence / f"{gt[index].stem}.jpg"
            samples.append(Sample(probs, labels, cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)))
    return samples


def load_refine(revision: str) -> types.ModuleType:
    """``dinotrack/refine.py`` as it was at ``revision``, imported under another name."""
    source = subprocess.run(["git", "show", f"{revision}:dinotrack/refine.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location(f"refine_{revision}", file.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def resized(samples: list[Sample], size: tuple[int, int]) -> list[Sample]:
    return [Sample(s.probs, s.labels, cv2.resize(s.rgb, size[::-1], interpolation=cv2.INTER_LINEAR)) for s in samples]


def call(module: types.ModuleType, path: str, sample: Sample) -> np.ndarray:
    size = sample.rgb.shape[:2]
    return module.probs_to_ids(sample.probs, sample.labels, size, guide=sample.rgb, **PATHS[path])


def times_ms(modules: tuple[types.ModuleType, ...], path: str, samples: list[Sample], repeats: int) -> list[list[float]]:
    """CPU milliseconds of every call of each module, ``repeats`` passes over ``samples``, the modules alternating
    call by call so that they see the same machine load (after one untimed call each)."""
    result = [[] for _ in modules]
    for module in modules:
        call(module, path, samples[0])
    for _ in range(repeats):
        for sample in samples:
            for module, times in zip(modules, result):
                start = time.thread_time()
                call(module, path, sample)
                times.append(1000 * (time.thread_time() - start))
    return result


def peak_extra_mb(revision: str, path: str, size: tuple[int, int], args: argparse.Namespace) -> float:
    """Peak RSS one call adds, in a fresh process (see :func:`measure_child`)."""
    command = [sys.executable, __file__, "--child", revision, path, f"{size[1]}x{size[0]}",
               "--sequences", *args.sequences, "--frames", str(args.frames), "--warmup", str(args.warmup),
               "--noise", str(args.noise), "--short-side", str(args.short_side)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])["mb"]


def measure_child(args: argparse.Namespace) -> None:
    """In the child: inputs made, everything imported and run once on a small frame; then the peak resident
    memory during one call, above the resident memory before it (Linux: the peak is reset first)."""
    revision, path, size = args.child
    module = refine if revision == CHECKOUT else load_refine(revision)
    sample = oracle_samples(args.sequences[0], frames=1, warmup=args.warmup, noise=args.noise, seed=args.seed,
                            short_side=args.short_side)[0]
    call(module, path, resized([sample], (120, 214))[0])
    sample = resized([sample], parse_size(size))[0]
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
    before = _status_kb("VmRSS")
    call(module, path, sample)
    print(json.dumps({"mb": (_status_kb("VmHWM") - before) / 1024}))


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in kB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.split("x"))
    return height, width


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"git revision to compare with (default {BEFORE})")
    parser.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for h, w in SIZES], help="frame sizes WxH")
    parser.add_argument("--sequences", nargs="+", default=["blackswan", "bmx-trees", "car-shadow", "dog"])
    parser.add_argument("--frames", type=int, default=3, help="samples per sequence")
    parser.add_argument("--warmup", type=int, default=8, help="frames tracked before the first sample")
    parser.add_argument("--noise", type=float, default=1.0, help="oracle feature noise (scripts/oracle_eval.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short-side", type=int, default=480, help="short side S of the patch grid (480: 30x54)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--child", nargs=3, metavar=("REVISION", "PATH", "SIZE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    if args.child:
        measure_child(args)
        return
    before = load_refine(args.before)
    samples = [s for sequence in args.sequences for s in oracle_samples(
        sequence, frames=args.frames, warmup=args.warmup, noise=args.noise, seed=args.seed, short_side=args.short_side)]
    print(f"{len(samples)} samples ({', '.join(args.sequences)}; oracle noise {args.noise:g}, grid "
          f"{tuple(samples[0].probs.shape[1:])}), one thread, {args.repeats} passes; CPU ms per frame, min / median; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| size | path | before ms | after ms | before peak MB | after peak MB | same maps |")
    print("|---|---|---|---|---|---|---|")
    for text in args.sizes:
        size = parse_size(text)
        frames = resized(samples, size)
        for path in PATHS:
            same = all(np.array_equal(call(before, path, s), call(refine, path, s)) for s in frames)
            times = times_ms((before, refine), path, frames, args.repeats)
            cells = [f"{min(ms):.1f} / {statistics.median(ms):.1f}" for ms in times]
            memory = ["-", "-"] if args.no_memory else [
                f"{peak_extra_mb(revision, path, size, args):.0f}" for revision in (args.before, CHECKOUT)]
            print(f"| {text} | {path} | {cells[0]} | {cells[1]} | {memory[0]} | {memory[1]} | {same} |", flush=True)


if __name__ == "__main__":
    main()
