"""The oracle ceiling: track DAVIS with patch features made from the ground truth.

With perfect features, whatever a preset loses is lost in quantising the first
mask to the patch grid, in propagation and in upsampling patch probabilities
to pixels, never in the backbone. This script measures that loss for the
``paper`` and ``default`` presets side by side.

Oracle features: each patch's feature is the fraction of its pixels per label
(``labels_to_probs(..., mode="area")``), padded with zeros to ``--dim``
dimensions, L2-normalised, on the patch grid of ``--short-side`` (as
``dinotrack.features.patch_grid`` computes it), written in the feature-cache
format. ``--noise SIGMA`` adds Gaussian noise of root-mean-square norm SIGMA (spread
evenly over all ``--dim`` dimensions, so most of it is orthogonal to the
label directions, as random perturbations of high-dimensional features are)
before normalising: a stand-in for imperfect features. ``--drift SIGMA``
adds noise that persists: a random walk per patch whose steps have RMS
norm SIGMA (spread over all dimensions like the independent noise), so
that each patch's error builds up over the frames as real feature errors
do, and drift, which independent noise hides, shows. Each sequence is
tracked with ``dinotrack.pipeline.track_video`` from the feature cache and
scored with ``dinotrack.evaluation.evaluate`` (what ``dinotrack evaluate``
runs). With ``--keyframe-every K`` the ground truth of every K-th frame is
given as a keyframe (a mask folder); those frames are then left out of the
scores, since their output is the ground truth itself. ``--direction``
tracks with each direction (``forward``, ``both``: see ``dinotrack track
--direction``), one row each.

    PYTHONPATH=. python scripts/oracle_eval.py                       # S=480 and 960, noise 0, 1, 1.5
    PYTHONPATH=. python scripts/oracle_eval.py --short-side 480 --noise 1 --keyframe-every 10
    PYTHONPATH=. python scripts/oracle_eval.py --variant paper:first_mask=area --sequences dog
    PYTHONPATH=. python scripts/oracle_eval.py --short-side 480 --noise 1 1.5 --preset default --confidence
    PYTHONPATH=. python scripts/oracle_eval.py --short-side 480 --noise 1 --drift 0.15 --keyframe-every 10 20 50 \
        --preset default --direction forward both

With ``--confidence`` the table gains how well the tracking confidence
(``dinotrack.confidence``, recorded per object and frame in ``run.json``)
predicts the true per-frame J: Spearman's rank correlation over every scored
frame of every object (keyframes left out), pooled over the sequences
("ρ all") and within each sequence.

It reads ``../shared/data/DAVIS`` (``JPEGImages/480p`` and ``Annotations/480p``)
next to the repository and prints a markdown table: J, F and J&F-Mean (in %)
per preset and setting, plus the tracker's time per frame (propagation and
output refinement; run it on an idle machine for meaningful times).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dinotrack.evaluation import ObjectResult, Scores, evaluate
from dinotrack.features import patch_grid
from dinotrack.masks import object_ids, read_label_map
from dinotrack.pipeline import RunOptions, track_video
from dinotrack.propagate import labels_to_probs
from dinotrack.structs import PRESETS, DinotrackError, TrackConfig

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "DAVIS"
PATCH_SIZE = 16


@dataclass(frozen=True)
class Setting:
    """One feature condition: grid size, noise level, drift per frame, keyframe spacing (0: first frame only)."""

    short_side: int
    noise: float
    drift: float
    keyframe_every: int

    @property
    def label(self) -> str:
        keyframes = f"every {self.keyframe_every}" if self.keyframe_every else "first"
        return f"| {self.short_side} | {self.noise:g} | {self.drift:g} | {keyframes} "


@dataclass
class Tracked:
    """One sequence tracked: each object's scores (keyframes left out), propagation seconds per frame,
    and ``(confidence, J)`` of every scored object and frame."""

    scores: list[Scores]
    seconds: float
    pairs: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """A configuration to compare: a preset name, or ``base:field=value,...``."""

    name: str
    options: RunOptions


def parse_variant(spec: str) -> Row:
    """``"paper:first_mask=area,minmax=false"`` → the paper preset with those fields changed."""
    base, _, changes = spec.partition(":")
    if base not in PRESETS:
        raise SystemExit(f"--variant {spec!r}: unknown preset {base!r} (known: {', '.join(PRESETS)}).")
    types = {f.name: f.type for f in dataclasses.fields(TrackConfig)}
    values: dict[str, object] = {}
    for change in filter(None, changes.split(",")):
        key, _, text = change.partition("=")
        if key not in types:
            raise SystemExit(f"--variant {spec!r}: TrackConfig has no field {key!r} (fields: {', '.join(types)}).")
        values[key] = _parse_value(text)
    return Row(spec, RunOptions(preset=base, overlay="none", tweaks=values))


def _parse_value(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def oracle_features(ids: np.ndarray, labels: list[int], grid: tuple[int, int], *, dim: int, noise: float,
                    generator: torch.Generator, walk: torch.Tensor | None = None) -> np.ndarray:
    """Label fractions per patch, zero-padded to ``dim``, plus noise of RMS norm ``noise`` and the
    persistent ``walk`` (``[h, w, dim]``, if any): ``[h, w, dim] float16``, L2-normalised."""
    fractions = labels_to_probs(ids, labels, grid, mode="area").permute(1, 2, 0)
    features = F.pad(fractions, (0, dim - len(labels)))
    features = features + noise / dim**0.5 * torch.randn(features.shape, generator=generator)
    if walk is not None:
        features = features + walk
    return F.normalize(features, dim=-1).numpy().astype(np.float16)


def write_oracle_cache(folder: Path, gt_dir: Path, setting: Setting, *, dim: int, seed: int) -> Path:
    """Write the oracle feature cache of one sequence (see the module docstring); returns ``folder``."""
    files = sorted(gt_dir.glob("*.png"))
    maps = [read_label_map(file) for file in files]
    labels = [0, *sorted(set().union(*(object_ids(ids) for ids in maps)))]
    if dim < len(labels):
        raise SystemExit(f"--dim {dim} is smaller than the {len(labels)} labels of {gt_dir.name}.")
    frame_size = maps[0].shape
    grid = patch_grid(frame_size, setting.short_side, PATCH_SIZE)
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    walk = torch.zeros(*grid, dim) if setting.drift else None  # no draws without drift: the noise stays as it was
    for file, ids in zip(files, maps):
        if walk is not None:
            walk += setting.drift / dim**0.5 * torch.randn(walk.shape, generator=generator)
        features = oracle_features(ids, labels, grid, dim=dim, noise=setting.noise, generator=generator, walk=walk)
        np.save(folder / f"{file.stem}.npy", features)
    meta = {"model": "oracle", "patch_size": PATCH_SIZE, "short_side": setting.short_side, "grid": list(grid),
            "frame_size": list(frame_size), "dim": dim, "frames": len(files), "dtype": "float16"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def keyframe_folder(gt_dir: Path, every: int, folder: Path) -> Path:
    """A mask folder holding copies of the ground truth of frames 0, every, 2*every, ..."""
    folder.mkdir(parents=True)
    for file in sorted(gt_dir.glob("*.png"))[::every]:
        shutil.copy(file, folder / file.name)
    return folder


def track_and_score(sequence: str, row: Row, setting: Setting, cache: Path, work: Path) -> Tracked:
    """Track one sequence from its oracle cache and score it over the frames that are not keyframes."""
    frames = DAVIS / "JPEGImages" / "480p" / sequence
    gt_dir = DAVIS / "Annotations" / "480p" / sequence
    mask = keyframe_folder(gt_dir, setting.keyframe_every, work / "keyframes") if setting.keyframe_every else gt_dir / "00000.png"
    output = work / "run"
    run = track_video(frames, mask, output, row.options, features=cache)
    report = evaluate(output / "masks", gt_dir)
    stems = [file.stem for file in sorted(gt_dir.glob("*.png"))]
    keyframes = set(stems[:: setting.keyframe_every]) if setting.keyframe_every else {stems[0]}
    scores = [_without(result, keyframes) for result in report.objects]
    confidence = run.record.confidence or {}
    position = {stem: index for index, stem in enumerate(stems)}
    pairs = [
        (confidence[str(result.object_id)][position[frame]], j)
        for result in report.objects
        for frame, j in zip(result.frames, result.j)
        if frame not in keyframes and confidence[str(result.object_id)][position[frame]] is not None
    ]
    shutil.rmtree(work)
    return Tracked(scores, run.seconds.get("propagate", 0.0) / max(run.frames_done, 1), pairs)


def _without(result: ObjectResult, keyframes: set[str]) -> Scores:
    keep = np.array([frame not in keyframes for frame in result.frames])
    return Scores.of_frames(result.j[keep], result.f[keep])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-side", type=int, nargs="+", default=[480, 960], help="grid sizes S (default 480 960)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.0, 1.5], help="noise norms (default 0 1 1.5)")
    parser.add_argument("--drift", type=float, nargs="+", default=[0.0],
                        help="RMS norm of each frame's step of the persistent per-patch random walk (default 0)")
    parser.add_argument("--direction", nargs="+", default=["both"], choices=["forward", "both"],
                        help="directions to track with, one row each (default both)")
    parser.add_argument("--keyframe-every", type=int, nargs="+", default=[0],
                        help="give the ground truth of every K-th frame as a keyframe (0: first frame only)")
    parser.add_argument("--preset", nargs="+", default=["paper", "default"], choices=sorted(PRESETS))
    parser.add_argument("--variant", action="append", default=[], metavar="PRESET:FIELD=VALUE,...",
                        help="an extra row: a preset with some TrackConfig fields changed (repeatable)")
    parser.add_argument("--sequences", nargs="+", help="DAVIS sequences to use (default: all)")
    parser.add_argument("--dim", type=int, default=32, help="feature dimensions, label fractions padded with zeros")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="add one J&F column per sequence")
    parser.add_argument("--confidence", action="store_true",
                        help="add Spearman's correlation of the tracking confidence with the true per-frame J")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    annotations = DAVIS / "Annotations" / "480p"
    if not annotations.is_dir() or not (DAVIS / "JPEGImages" / "480p").is_dir():
        sys.exit(f"DAVIS data not found at {DAVIS}: this script needs JPEGImages/480p and Annotations/480p there.")
    sequences = args.sequences or sorted(p.name for p in annotations.iterdir() if p.is_dir())
    unknown = [s for s in sequences if not (annotations / s).is_dir()]
    if unknown:
        sys.exit(f"Unknown sequence(s) {', '.join(unknown)}; {annotations} holds {', '.join(sorted(p.name for p in annotations.iterdir()))}.")
    try:
        rows = [Row(name, RunOptions(preset=name, overlay="none")) for name in args.preset]
        rows += [parse_variant(spec) for spec in args.variant]
    except DinotrackError as error:
        sys.exit(f"--variant: {error}")
    rows = [Row(f"{row.name} {direction}" if len(args.direction) > 1 else row.name, row.options.replace(direction=direction))
            for row in rows for direction in args.direction]
    settings = [Setting(s, n, d, k) for s in args.short_side for n in args.noise for d in args.drift for k in args.keyframe_every]
    torch.set_grad_enabled(False)

    header = "| S | noise | drift | keyframes | preset | J | F | J&F | ms/frame |"
    if args.verbose:
        header += "".join(f" {s} |" for s in sequences)
    if args.confidence:
        header += " ρ all |" + "".join(f" ρ {s} |" for s in sequences)
    print(header)
    print("|" + "---|" * (header.count("|") - 1), flush=True)
    with tempfile.TemporaryDirectory(prefix="dinotrack-oracle-") as temporary:
        root = Path(temporary)
        for setting in settings:
            caches = {s: write_oracle_cache(root / "cache" / s, annotations / s, setting, dim=args.dim, seed=args.seed)
                      for s in sequences}
            for row in rows:
                results = [track_and_score(s, row, setting, caches[s], root / "work") for s in sequences]
                print(_table_row(setting, row, results, verbose=args.verbose, confidence=args.confidence), flush=True)
            shutil.rmtree(root / "cache")


def _table_row(setting: Setting, row: Row, results: list[Tracked], *, verbose: bool, confidence: bool) -> str:
    """One markdown row; every object of every sequence weighs the same in J, F and J&F."""
    overall = Scores.average([scores for result in results for scores in result.scores])
    ms = 1000 * float(np.mean([result.seconds for result in results]))
    cells = [f"{100 * overall.j_mean:.1f}", f"{100 * overall.f_mean:.1f}", f"**{100 * overall.jf_mean:.1f}**", f"{ms:.0f}"]
    if verbose:
        cells += [f"{100 * Scores.average(result.scores).jf_mean:.1f}" for result in results]
    if confidence:
        cells += [_spearman([pair for result in results for pair in result.pairs])]
        cells += [_spearman(result.pairs) for result in results]
    return setting.label + f"| {row.name} | " + " | ".join(cells) + " |"


def _spearman(pairs: list[tuple[float, float]]) -> str:
    """Spearman's rank correlation of ``(confidence, J)`` pairs, with how many there are."""
    from scipy.stats import spearmanr

    confidence, j = np.array(pairs, dtype=np.float64).reshape(-1, 2).T
    return f"{spearmanr(confidence, j).statistic:.2f} (n={len(pairs)})" if len(pairs) > 2 else "–"


if __name__ == "__main__":
    main()
