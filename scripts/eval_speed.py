"""Time ``dinotrack.evaluation.evaluate`` end to end on a DAVIS-sized dataset.

Builds about ``--frames`` frames of 854x480 ground truth and predictions in a
temporary folder: copies of the real DAVIS sequences in ``../shared/data``
(with the published OSVOS masks as predictions) when that folder exists,
otherwise synthetic moving discs. Then runs the evaluation in a fresh Python
process (start-up, imports and PNG reading included) and prints a table.

    python scripts/eval_speed.py [--frames 800] [--repeats 3]   (dinotrack installed, e.g. pip install -e .)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dinotrack.masks import write_label_map

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WIDTH, HEIGHT = 854, 480
SYNTHETIC_LENGTH = 70

EVALUATE = (
    "import sys; from dinotrack.evaluation import evaluate; "
    "evaluate(sys.argv[1], sys.argv[2], binarize_predictions=True)"
)
IMPORT_ONLY = "import dinotrack.evaluation"


def build_dataset(root: Path, frames: int) -> int:
    """Fill ``root/pred`` and ``root/gt`` with sequences until ``frames`` frames; returns how many sequences."""
    sources = _davis_sequences() or [None]
    count = total = 0
    while total < frames:
        source = sources[count % len(sources)]
        name = f"seq{count:02d}"
        total += _copy_davis(source, root, name) if source else _synthesise(root, name, count)
        count += 1
    return count


def _davis_sequences() -> list[str]:
    annotations = DATA / "DAVIS" / "Annotations" / "480p"
    if not (annotations.is_dir() and (DATA / "osvos17").is_dir()):
        return []
    return sorted(p.name for p in annotations.iterdir() if (DATA / "osvos17" / p.name).is_dir())


def _copy_davis(source: str, root: Path, name: str) -> int:
    shutil.copytree(DATA / "DAVIS" / "Annotations" / "480p" / source, root / "gt" / name)
    shutil.copytree(DATA / "osvos17" / source, root / "pred" / name)
    return len(list((root / "gt" / name).glob("*.png")))


def _synthesise(root: Path, name: str, seed: int) -> int:
    """A disc crossing the frame; the prediction is the disc shifted and slightly larger."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    for folder in ("gt", "pred"):
        (root / folder / name).mkdir(parents=True)
    for t in range(SYNTHETIC_LENGTH):
        centre_x, centre_y, radius = 100 + 9 * t, 240 + 60 * np.sin(t / 9), 60 + 20 * rng.random()
        gt = (cols - centre_x) ** 2 + (rows - centre_y) ** 2 <= radius**2
        pred = (cols - centre_x - 4) ** 2 + (rows - centre_y) ** 2 <= (radius + 3) ** 2
        write_label_map(root / "gt" / name / f"{t:05d}.png", gt.astype(np.uint8))
        write_label_map(root / "pred" / name / f"{t:05d}.png", pred.astype(np.uint8))
    return SYNTHETIC_LENGTH


def time_process(code: str, *args: str) -> float:
    """Wall-clock seconds of ``python -c code args`` in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=800, help="frames to build (at least)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sequences = build_dataset(root, args.frames)
        frames = sum(1 for _ in (root / "gt").glob("*/*.png"))
        kind = "DAVIS copies" if _davis_sequences() else "synthetic"
        start_up = min(time_process(IMPORT_ONLY) for _ in range(args.repeats))
        total = min(time_process(EVALUATE, str(root / "pred"), str(root / "gt")) for _ in range(args.repeats))
    print(f"{'dataset':<28}{sequences} sequences, {frames} frames of {WIDTH}x{HEIGHT} ({kind})")
    print(f"{'start-up (import)':<28}{start_up:.2f} s")
    print(f"{'evaluate, end to end':<28}{total:.2f} s")
    print(f"{'per frame, after start-up':<28}{1000 * (total - start_up) / frames:.2f} ms")


if __name__ == "__main__":
    main()
