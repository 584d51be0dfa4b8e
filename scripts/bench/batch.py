"""A batch of videos: Ray workers against tracking them one after another in this process.

The four shared DAVIS sequences (their frame folders, from their first
annotation, with ground truth) are tracked twice at ``S``: with
:func:`dinotrack.batch.run_batch` on a local Ray instance, then one after
another with one backbone in this process (``load_backbone`` once, then
:func:`dinotrack.pipeline.track_video` per video), which is the baseline a
batch runner has to beat. Both use ``--model`` with random weights and
write no overlay. The table gives frames/s (whole batch, Ray start-up
included), the model builds, and the engine's overhead per video: the time
between a video's dispatch and its result, less the seconds the worker
spent in ``track_video``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

from bench.common import DAVIS, Table, Workspace, describe, verdict
from dinotrack.manifest import read_jobs
from dinotrack.pipeline import load_backbone, track_video

OVERHEAD_TARGET_S = 1.0
"""Per-video overhead of the engine (scheduling, result collection) at most this."""


class Outcome(NamedTuple):
    """One runner's batch: frames tracked, wall seconds, model builds, engine seconds per video, workers."""

    frames: int
    wall: float
    builds: int = 1
    overhead: float = 0.0
    workers: int = 1

    @property
    def fps(self) -> float:
        return self.frames / self.wall


def table(work: Workspace, short_side: int) -> Table:
    """Ray batch against in-process sequential tracking of the shared sequences at ``short_side``."""
    options = work.options(short_side, weights=work.weights, overlay="none")
    jobs = read_jobs(DAVIS)
    title = (
        f"Batch of {len(jobs)} DAVIS sequences at S={short_side}, --preset {work.args.preset} "
        f"({describe(options.config)}), {work.args.model} random weights, no overlay"
    )
    result = Table(title, ("runner", "frames", "wall s", "frames/s", "model builds", "overhead per video", "notes"))
    sequential = _sequential(work.root / f"sequential{short_side}", jobs, options)
    ray = _ray(work.root / f"ray{short_side}", jobs, options)
    for name, run, note in (("in-process, one after another", sequential, "baseline"),
                            (f"Ray batch ({ray.workers} workers)", ray, verdict(ray.overhead, OVERHEAD_TARGET_S, at_most=True))):
        result.add(name, str(run.frames), f"{run.wall:.1f}", f"{run.fps:.2f}", str(run.builds), f"{1000 * run.overhead:.0f} ms", note)
    speed = ray.fps / sequential.fps
    result.add("Ray / sequential", "", "", f"{speed:.2f}", "", "", verdict(speed, 1.0, at_most=False))
    return result


def _sequential(output: Path, jobs: list, options) -> Outcome:
    """One backbone for all videos, in this process."""
    started = time.perf_counter()
    backbone = load_backbone(options)
    frames = sum(
        track_video(job.source, job.mask, output / job.name, options, gt=job.gt, backbone=backbone).frames_done
        for job in jobs
    )
    return Outcome(frames, time.perf_counter() - started)


def _ray(output: Path, jobs: list, options) -> Outcome:
    """A Ray batch on a local instance (its start-up counted in the wall time)."""
    from dinotrack.batch import run_batch

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    dispatched: dict[str, float] = {}
    overheads: list[float] = []

    def on_event(kind: str, payload: dict) -> None:
        if kind == "video_started":
            dispatched[payload["name"]] = time.perf_counter()
        elif kind == "video_finished" and payload["name"] in dispatched:
            overheads.append(time.perf_counter() - dispatched[payload["name"]] - payload["seconds"])

    started = time.perf_counter()
    record = run_batch(jobs, output, options, on_event=on_event)
    wall = time.perf_counter() - started
    frames = sum(video["frames_done"] for video in record.videos)
    return Outcome(frames, wall, record.model_loads, sum(overheads) / max(len(overheads), 1), record.workers)
