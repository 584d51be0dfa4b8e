"""Time dinotrack's stages, whole runs, memory and keyframes, and check its performance targets.

Prints the machine, then the tables of each part ``--only`` selects, one
per short side ``S`` of ``--short-sides``, each with the preset it ran
(``--preset``, for every table) in its title:

- ``stages``: ms per frame of decoding, the backbone, propagation
  (dinotrack's against the literal reference, same features), turning
  probabilities into label maps, PNG writing and the overlay
  (``scripts/bench/stages.py``). ``--only`` may name some of
  ``decode,backbone,propagation,output,overlay`` instead.
- ``end-to-end``: ``dinotrack track`` in a fresh process, start-up included,
  against the bare backbone on the same frames (``scripts/bench/end_to_end.py``).
- ``memory``: peak RSS of ``dinotrack track`` on a short and a long video
  (``scripts/bench/memory.py``).
- ``backward``: peak RSS of ``dinotrack track`` with the mask on the last
  frame (every other frame tracked backward), short against long video,
  tiny backbone and small frames (``scripts/bench/backward.py``).
- ``keyframes``: ``track_video`` from a feature cache with a keyframe every
  few frames, on a short and a long video, with the keyframe bound and
  without (``scripts/bench/keyframes.py``).
- ``batch``: the shared DAVIS sequences as one batch on a local Ray
  instance against one after another in this process
  (``scripts/bench/batch.py``).
- ``cached``: ``dinotrack track --features`` on cached features in a fresh
  process, start-up included, against the literal algorithm on the same
  features (``scripts/bench/cached.py``).
- ``overlay-modes``: each ``--overlay`` mode's picture per frame on one
  thread, against the ground truth (``scripts/bench/overlay_modes.py``; the
  short side plays no part).

Every part times the library's own functions. Frames are the DAVIS
sequences of ``../shared/data`` (854x480) played one after another and
looped, or the sample clip upscaled to 854x480 where that folder is absent.
Without ``--weights`` the backbone has random weights (seeded): timings do
not depend on the weights' values. Besides wall-clock time, most rows give
CPU time, which is less disturbed by other programs. On a shared machine,
check the load averages printed under each table, and pass ``--repeats`` to
keep the best of several runs.

    python scripts/benchmark.py                                  # everything (long on a small CPU)
    python scripts/benchmark.py --only propagation --short-sides 960
    python scripts/benchmark.py --only end-to-end --short-sides 480 --frames 100 --repeats 3
    python scripts/benchmark.py --only memory --short-sides 480 --memory-frames 150,1500
    python scripts/benchmark.py --only backward --short-sides 128 --memory-frames 150,1500
    python scripts/benchmark.py --only keyframes --short-sides 480 --keyframe-frames 150,300
    python scripts/benchmark.py --only batch --short-sides 240
    python scripts/benchmark.py --only overlay-modes --short-sides 480
    python scripts/benchmark.py --device cuda --model vitl16 --short-sides 960
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dinotrack from this checkout
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # as the dinotrack CLI sets it, for a like-for-like bare backbone

import torch  # noqa: E402

from bench import backward, batch, cached, end_to_end, keyframes, memory, overlay_modes, stages  # noqa: E402
from bench.common import FOOTAGE, FRAME_SIZE, Table, Workspace, machine_table  # noqa: E402
from dinotrack.backbones import resolve_device  # noqa: E402
from dinotrack.structs import PRESETS  # noqa: E402

PARTS: dict[str, Callable[[Workspace, int], Table]] = {
    "stages": stages.table,
    "end-to-end": end_to_end.table,
    "memory": memory.table,
    "backward": backward.table,
    "keyframes": keyframes.table,
    "batch": batch.table,
    "overlay-modes": overlay_modes.table,
    "cached": cached.table,
}
"""Each part makes one table per short side."""


def comma_list(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def frame_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(1080, 1920)``, i.e. ``(H, W)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1920x1080 (got {text!r})") from None
    if min(width, height) < 16:
        raise argparse.ArgumentTypeError(f"frames must be at least 16x16 (got {text!r})")
    return height, width


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = [*PARTS, *stages.STAGES]
    parser.add_argument("--only", type=comma_list(str), default=list(PARTS), help=f"parts or stages, comma-separated: {','.join(choices)}")
    parser.add_argument("--short-sides", type=comma_list(int), default=[480, 960], help="short sides S, e.g. 480,960")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="the preset of every table")
    parser.add_argument("--no-overlay", action="store_true", help="end to end: run dinotrack track with --no-overlay")
    parser.add_argument("--frames", type=int, default=100, help="frames of the clip that is decoded and tracked end to end")
    parser.add_argument("--samples", type=int, default=5, help="timed propagation frames after the queue is full")
    parser.add_argument("--repeats", type=int, default=1, help="end-to-end and keyframe runs, alternated; the best of each counts")
    parser.add_argument("--memory-frames", type=comma_list(int), default=[150, 1500], help="short,long video lengths for peak RSS")
    parser.add_argument("--keyframe-frames", type=comma_list(int), default=[150, 300], help="short,long video lengths for keyframes")
    parser.add_argument("--keyframe-every", type=int, default=5, help="a keyframe every this many frames")
    parser.add_argument(
        "--keyframe-features", default="oracle", choices=("oracle", "backbone"), help="the keyframe runs' feature cache"
    )
    parser.add_argument(
        "--frame-size", type=frame_size, default=FRAME_SIZE, metavar="WxH",
        help="frames of the clips, e.g. 1920x1080 or 3840x2160 (default 854x480; DAVIS upscaled bicubic); "
        "the keyframes and overlay-modes parts keep 854x480",
    )
    parser.add_argument("--model", default="vits16", help="backbone: a registered name or an import path")
    parser.add_argument("--weights", default=None, help="weights file (default: random weights)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(choices)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(choices)}")
    if min(args.frames, args.samples, args.repeats, args.keyframe_every, args.threads or 1) < 1:
        parser.error("--frames, --samples, --repeats, --keyframe-every and --threads must be at least 1")
    if len(args.memory_frames) != 2 or len(args.keyframe_frames) != 2:
        parser.error("--memory-frames and --keyframe-frames take 2 lengths each")
    args.stages = set(stages.STAGES) if "stages" in args.only else set(args.only) & set(stages.STAGES)
    args.parts = [part for part in PARTS if part in args.only or (part == "stages" and args.stages)]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine_table(resolve_device(args.device)).print()
    height, width = args.frame_size
    print(f"\nFrames: {FOOTAGE.describe()}, {width}x{height}. CPU time: all threads of the process.")
    with tempfile.TemporaryDirectory(prefix="dinotrack-benchmark-") as folder:
        work = Workspace(Path(folder), args)
        for part in args.parts:
            for short_side in args.short_sides:
                PARTS[part](work, short_side).print()


if __name__ == "__main__":
    main()
