"""Bounded keyframes: with a keyframe every few frames, the cost per frame stays flat.

The footage is one DAVIS sequence looped (:data:`ONE_SEQUENCE`: the first,
blackswan, 50 frames; or the sample clip), so that the long video's frames
are the short one's again and only the context can make them cost more. The ground truth of every ``--keyframe-every``-th frame is
given as keyframes (a ``--mask DIR`` folder), and ``track_video`` runs from a
feature cache, so that what is timed is what keyframes can make grow
(propagation), beside the per-frame work that does not grow (decoding the
frames, turning probabilities into label maps, writing PNGs; no overlay).
The cache holds oracle features as ``scripts/oracle_eval.py`` makes them
(label fractions per patch plus noise, :data:`ORACLE_DIM` dimensions), or,
with ``--keyframe-features backbone``, the features of ``--model`` written
once by the library's ``extract_features``.

A short and a long video (``--keyframe-frames``, 150 and 300 frames) run
with the preset's keyframe bound and, for contrast, with an effectively
unbounded one (:data:`UNBOUNDED`). With the bound, the long video may take
at most :data:`FLAT_TARGET` times the short one's time per frame (2.3x the
time for twice the frames). The context at the end (first keyframe, kept
keyframes, queue) is the tracker's own bookkeeping, replayed with the run's
keyframes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.common import FOOTAGE, FRAME_SIZE, Row, Table, Workspace, describe, timed, verdict
from dinotrack.features import FeatureCacheWriter, patch_grid
from dinotrack.masks import object_ids, write_label_map
from dinotrack.pipeline import extract_features, track_video
from dinotrack.structs import TrackConfig
from dinotrack.tracker import Tracker
from oracle_eval import PATCH_SIZE, oracle_features

ONE_SEQUENCE = FOOTAGE.first_only()
UNBOUNDED = 1000
"""A keyframe bound no run here reaches."""
FLAT_TARGET = 1.15
"""The long video's time per frame within this factor of the short one's."""
ORACLE_DIM = 32
"""Dimensions of the oracle features (oracle_eval.py's default)."""
ORACLE_NOISE = 1.0
"""RMS norm of the noise added to the oracle features (as in the README's oracle table)."""


@dataclass(frozen=True)
class KeyframeRun:
    """One ``track_video`` from the cache: frames, wall and CPU seconds, seconds in the Tracker, context at the end."""

    frames: int
    wall: float
    cpu: float
    tracker: float
    context: str


def table(work: Workspace, short_side: int) -> Table:
    """The short and the long video, with the preset's keyframe bound and unbounded, at ``short_side``."""
    config = work.config(short_side)
    title = (
        f"Keyframes every {work.args.keyframe_every} frames at S={short_side}, --preset {work.args.preset} "
        f"({describe(config)}): track_video on {ONE_SEQUENCE.describe()}, from {work.args.keyframe_features} features, "
        "no overlay"
    )
    result = Table(title, ("keyframe bound", "frames", "wall s", "ms/frame", "CPU s", "Tracker.process s", "context at end", "notes"))
    counts = sorted(work.args.keyframe_frames)
    cache = write_cache(work, short_side, counts[-1])
    bounds = (config.keyframe_bound, UNBOUNDED)
    runs: dict[tuple[int, int], list[KeyframeRun]] = {(bound, count): [] for bound in bounds for count in counts}
    run_tracking(work, short_side, cache, bounds[0], counts[0])  # warm-up: first-call costs, not timed
    for _ in range(work.args.repeats):  # alternated, so that all see the same drifts in load
        for bound, count in runs:
            runs[bound, count].append(run_tracking(work, short_side, cache, bound, count))
    for bound in bounds:
        best = [min(runs[bound, count], key=lambda run: run.wall) for count in counts]
        for run in best:
            result.add(*_run_row(bound, run))
        result.add(*_ratio_row(bound, best, contrast=bound == UNBOUNDED))
    return result


def _run_row(bound: int, run: KeyframeRun) -> Row:
    per_frame = f"{1000 * run.wall / run.frames:.1f}"
    return (str(bound), str(run.frames), f"{run.wall:.2f}", per_frame, f"{run.cpu:.2f}", f"{run.tracker:.2f}", run.context)


def _ratio_row(bound: int, runs: list[KeyframeRun], *, contrast: bool) -> Row:
    """The longest run's times over the shortest's, the wall time's checked against the flat-cost target."""
    short, long = runs[0], runs[-1]
    ratio = long.wall / short.wall
    target = FLAT_TARGET * long.frames / short.frames
    note = "for contrast" if contrast else verdict(ratio, round(target, 2), at_most=True)
    cpu, tracker = long.cpu / short.cpu, long.tracker / short.tracker
    return (str(bound), f"{long.frames} / {short.frames}", f"{ratio:.2f}", "", f"{cpu:.2f}", f"{tracker:.2f}", "", note)


def run_tracking(work: Workspace, short_side: int, cache: Path, bound: int, count: int) -> KeyframeRun:
    """``track_video`` on the first ``count`` frames with keyframes every ``--keyframe-every``, from ``cache``."""
    options = work.options(short_side, keyframe_bound=bound, overlay="none")
    output = work.root / f"keyframes-run-{count}-{bound}"
    masks = keyframe_folder(work, count)
    report, timing = timed(
        lambda: track_video(work.clip(count, ONE_SEQUENCE), masks, output, options, features=cache, overwrite=True),
        device=work.device,
    )
    context = context_at_end(options.config, report.record.keyframes, report.frames_done)
    return KeyframeRun(report.frames_done, timing.wall, timing.cpu, report.seconds["propagate"], context)


def context_at_end(config: TrackConfig, keyframes: list[int], frames: int) -> str:
    """The context a :class:`Tracker` holds after ``frames`` frames with these keyframes, as
    ``"10 (3 keyframes + 7 queued)"``: the tracker's bookkeeping replayed on one-patch features."""
    tracker = Tracker(config)
    features, ids = torch.ones(1, 1, 1), np.ones((1, 1), dtype=np.uint8)
    for index in range(frames):
        if index in keyframes:
            tracker.add_mask(ids, features)
        else:
            tracker.propagate(features)
    state = tracker.state_dict()
    kept, queued = len(state["keyframes"]), len(state["queue"])
    return f"{kept + queued} ({kept} keyframes + {queued} queued)"


def keyframe_folder(work: Workspace, count: int) -> Path:
    """A ``--mask DIR`` folder with the ground truth of every ``--keyframe-every``-th of the first ``count`` frames."""
    folder = work.root / f"keyframes-{count}"
    if not folder.exists():
        folder.mkdir()
        for index, ids in enumerate(ONE_SEQUENCE.masks(count)):
            if index % work.args.keyframe_every == 0:
                write_label_map(folder / f"{index:05d}.png", ids)
    return folder


def write_cache(work: Workspace, short_side: int, count: int) -> Path:
    """The feature cache of the first ``count`` frames at ``short_side``: oracle or backbone features."""
    folder = work.root / f"features-{work.args.keyframe_features}-{short_side}"
    if work.args.keyframe_features == "backbone":
        extract_features(work.clip(count, ONE_SEQUENCE), folder, work.options(short_side), backbone=work.backbone)
    else:
        write_oracle_cache(folder, short_side, count)
    return folder


def write_oracle_cache(folder: Path, short_side: int, count: int) -> None:
    """Oracle features of the ground truth of the first ``count`` frames, in the feature-cache format."""
    labels = [0, *sorted(set().union(*map(object_ids, ONE_SEQUENCE.masks(count))))]
    grid = patch_grid(FRAME_SIZE, short_side, PATCH_SIZE)
    meta = {
        "model": "oracle", "patch_size": PATCH_SIZE, "short_side": short_side, "grid": list(grid),
        "frame_size": list(FRAME_SIZE), "dim": ORACLE_DIM, "frames": count,
    }  # fmt: skip
    writer = FeatureCacheWriter(folder, meta)
    generator = torch.Generator().manual_seed(0)
    for index, ids in enumerate(ONE_SEQUENCE.masks(count)):
        features = oracle_features(ids, labels, grid, dim=ORACLE_DIM, noise=ORACLE_NOISE, generator=generator)
        writer.write(f"{index:05d}", torch.from_numpy(features))
    writer.close(complete=True)
