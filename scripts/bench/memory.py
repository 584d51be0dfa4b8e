"""Peak RSS of ``dinotrack track`` against the video's length: memory must not grow with the video.

Each run is the CLI in a fresh process (see :mod:`bench.end_to_end`) with the
tiny random backbone of ``dinotrack.testing``, named by its import path
(``--model dinotrack.testing:TINY``) so that the process needs no
registration; the overlay is written. The videos are the looped clip at
the lengths of ``--memory-frames``.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Table, Workspace, describe, verdict
from bench.end_to_end import track_process
from dinotrack.testing import write_timm_checkpoint

MEMORY_TARGET = 1.1
"""Peak RSS of the long video within this factor of the short one's."""
TINY = "dinotrack.testing:TINY"


def table(work: Workspace, short_side: int) -> Table:
    """Peak RSS of ``dinotrack track`` at ``short_side`` on a short and a long video."""
    options = work.options(short_side, model=TINY, weights=tiny_weights(work.root))
    title = (
        f"Peak RSS at S={short_side}, --preset {work.args.preset} ({describe(options.config)}): dinotrack track, "
        f"tiny random backbone ({TINY}), {work.frame_size[1]}x{work.frame_size[0]} H.264, overlay on"
    )
    result = Table(title, ("frames", "peak RSS", "wall s", "notes"))
    counts = sorted(work.args.memory_frames)
    peaks = []
    for count in counts:
        run = track_process(work, work.clip(count), work.root / f"memory{count}", options)
        peaks.append(run.peak_rss_mib)
        result.add(str(run.record.frames_done), f"{run.peak_rss_mib:.0f} MiB", f"{run.wall:.1f}", "fresh process")
    ratio = peaks[-1] / peaks[0]
    result.add(f"{counts[-1]} / {counts[0]}", f"{ratio:.3f}", "", verdict(ratio, MEMORY_TARGET, at_most=True))
    return result


def tiny_weights(root: Path) -> Path:
    """The tiny backbone's random weights (seed 0), written once."""
    path = root / "tiny.safetensors"
    return path if path.exists() else write_timm_checkpoint(path)
