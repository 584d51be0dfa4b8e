"""End to end: ``dinotrack track`` as a user runs it, against the backbone alone on the same frames.

The run is the CLI in a fresh Python process (interpreter and library start-up
included) on the clip of ``--frames`` frames, with ``--preset``, ``--model``
and the workspace's weights. The baseline is the library's own
``FeatureExtractor`` on the same frames, decoded beforehand (resize + forward
+ normalise): one frame at a time on torch's threads, and, where dinotrack
runs it so (a CPU with 2+ threads), several frames at a time on a share of
the threads each. The three alternate ``--repeats`` times, so that all see the
same drifts in load; the best of each counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, Row, Table, Timing, Workspace, describe, timed, tries, verdict
from dinotrack import RunOptions
from dinotrack.features import FeatureExtractor
from dinotrack.records import RunRecord
from dinotrack.sources import Frame, open_source

END_TO_END_TARGETS = {
    # (frame size, S, preset, overlay): end to end within this factor of the bare backbone, one frame at a time
    ((480, 854), 240, "default", True): 1.20,
    ((480, 854), 480, "default", True): 1.10,
    ((1080, 1920), 480, "default", True): 1.15,
    ((2160, 3840), 480, "default", True): 1.35,
    ((2160, 3840), 480, "paper", False): 1.15,
}

CHILD = """
import os, resource, sys
sys.argv[0] = "dinotrack"
try:
    from dinotrack.cli import main
    main()
finally:
    try:
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    with open(os.environ["BENCHMARK_PEAK"], "w") as peak:
        peak.write(str(kib / 1024))
"""
"""The child process: ``dinotrack`` as its console script runs it, then its peak RSS (MiB) written
to a file: the ru_maxrss that wait4 reports starts from the parent's size at the fork."""


@dataclass(frozen=True)
class ProcessRun:
    """What one ``dinotrack track`` process did: its record, and its wall, CPU seconds and peak RSS."""

    record: RunRecord
    wall: float
    cpu: float
    peak_rss_mib: float


def track_process(
    work: Workspace, source: Path, output: Path, options: RunOptions, *, mask: Path | None = None, extra: Sequence[str] = (),
) -> ProcessRun:
    """Run ``dinotrack track source`` with ``mask`` (default: the workspace's), ``options`` and ``extra``
    arguments in a fresh Python process, as a user would (``options.model`` a name or an import path,
    ``options.weights`` a file)."""
    arguments = [
        "track", str(source), "--mask", str(mask or work.mask_file), "--output", str(output), "--model", str(options.model),
        "--weights", str(options.weights), "--device", options.device, "--short-side", str(options.short_side),
        "--preset", options.preset, "--overwrite", *extra,
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        peak, errors = Path(folder) / "peak", Path(folder) / "stderr"
        environment = {**os.environ, "PYTHONPATH": str(REPO), "BENCHMARK_PEAK": str(peak)}
        if work.args.threads is not None:
            environment["OMP_NUM_THREADS"] = str(work.args.threads)
        with errors.open("w") as stderr:
            wall = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", CHILD, *arguments], env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - wall
        if status != 0:
            sys.exit(f"dinotrack {' '.join(arguments)} failed:\n{errors.read_text()[-4000:]}")
        peak_mib = float(peak.read_text())
    return ProcessRun(RunRecord.read(output), wall, usage.ru_utime + usage.ru_stime, peak_mib)


def bare_backbone(work: Workspace, extractor: FeatureExtractor, frames: list[Frame]) -> Timing:
    """Wall and CPU time of ``extractor`` over ``frames`` (decoded already)."""
    return timed(lambda: sum(1 for _ in extractor(frames)), device=work.device)[1]


def table(work: Workspace, short_side: int) -> Table:
    """``dinotrack track`` on the clip at ``short_side`` against the bare backbone."""
    options = work.options(short_side, weights=work.weights)
    title = (
        f"End to end at S={short_side}, {work.frame_size[1]}x{work.frame_size[0]}, --preset {work.args.preset}"
        f"{', --no-overlay' if work.args.no_overlay else ''} ({describe(options.config)}): "
        f"dinotrack track on {work.args.frames} frames vs the bare backbone ({work.args.model}, {work.device.type})"
    )
    result = Table(title, ("what", "speed or ratio", "CPU", "notes"))
    frames = list(open_source(work.video))
    one_at_a_time, as_run = work.extractor(short_side, workers=1), work.extractor(short_side)
    runs, bares, parallels = [], [], []
    for _ in range(work.args.repeats):  # alternated, so that all see the same drifts in load
        extra = ["--no-overlay"] if work.args.no_overlay else []
        runs.append(track_process(work, work.video, work.root / f"run{short_side}", options, extra=extra))
        bares.append(bare_backbone(work, one_at_a_time, frames))
        if as_run.workers > 1:
            parallels.append(bare_backbone(work, as_run, frames))
    target = END_TO_END_TARGETS.get((work.frame_size, short_side, work.args.preset, not work.args.no_overlay))
    result.rows += comparison_rows(runs, bares, target)
    result.rows += _parallel_rows(parallels, min(runs, key=lambda r: r.wall), as_run.workers)
    return result


def comparison_rows(runs: list[ProcessRun], bares: list[Timing], target: float | None) -> list[Row]:
    """The best run against the best bare backbone, one frame at a time, and its verdict against ``target``."""
    run, bare = min(runs, key=lambda r: r.wall), min(bares, key=lambda t: t.wall)
    frames, seconds = run.record.frames_done, run.record.seconds
    ratio = run.wall / bare.wall
    check = f"; {verdict(ratio, target, at_most=True)}" if target is not None else ""
    return [
        (
            "end to end (dinotrack track, fresh process)",
            f"{frames / run.wall:.3f} frames/s",
            f"{run.cpu:.1f} s",
            f"{frames} frames in {run.wall:.1f} s, start-up included{tries([r.wall for r in runs])}",
        ),
        (
            "bare backbone (FeatureExtractor, 1 frame at a time)",
            f"{frames / bare.wall:.3f} frames/s",
            f"{bare.cpu:.1f} s",
            f"{bare.wall:.1f} s, frames decoded beforehand{tries([t.wall for t in bares])}",
        ),
        ("end to end / bare backbone", f"{ratio:.3f}", f"{run.cpu / bare.cpu:.3f}", f"in-run {seconds['total'] / bare.wall:.3f}{check}"),
        ("stage seconds (run.json)", "", "", ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())),
        ("peak RSS, end to end", f"{run.peak_rss_mib:.0f} MiB", "", "peak RSS (VmHWM) of the process"),
    ]


def _parallel_rows(parallels: list[Timing], run: ProcessRun, workers: int) -> list[Row]:
    """The bare backbone run as dinotrack runs it on a CPU (``workers`` frames at a time), if it does."""
    if not parallels:
        return []
    best = min(parallels, key=lambda t: t.wall)
    frames = run.record.frames_done
    return [
        (
            f"bare backbone (FeatureExtractor, {workers} frames at a time)",
            f"{frames / best.wall:.3f} frames/s",
            f"{best.cpu:.1f} s",
            f"{best.wall:.1f} s{tries([t.wall for t in parallels])}; as dinotrack runs it here",
        ),
        (f"end to end / bare backbone, {workers} frames at a time", f"{run.wall / best.wall:.3f}", "", ""),
    ]
