"""Peak RSS of tracking backward: a video with its mask on the LAST frame, long against short.

Every frame before the mask waits on disk (``dinotrack.spill``) for the
backward pass, so memory must not grow with the video. Each run is the CLI
in a fresh process (see :mod:`bench.end_to_end`) with the tiny random
backbone and small frames (the footage shrunk to 214x120), so that even the
long video runs in minutes; the overlay is written. The mask is the first
frame's ground truth given for the last frame (``--mask-frame``): what it
outlines there does not change the memory. The lengths are
``--memory-frames``.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from bench.common import FOOTAGE, FPS, Table, Workspace, describe, verdict
from bench.end_to_end import track_process
from bench.memory import MEMORY_TARGET, TINY, tiny_weights
from dinotrack.masks import write_label_map
from dinotrack.sources import VideoWriter

SMALL_SIZE = (120, 214)
"""``(H, W)`` of the frames: the footage at a quarter of its 854x480."""


def table(work: Workspace, short_side: int) -> Table:
    """Peak RSS of ``dinotrack track`` at ``short_side``, mask on the last frame, on a short and a long video."""
    options = work.options(short_side, model=TINY, weights=tiny_weights(work.root))
    title = (
        f"Backward tracking: peak RSS at S={short_side}, --preset {work.args.preset} ({describe(options.config)}), "
        f"mask on the last frame: dinotrack track, tiny random backbone ({TINY}), "
        f"{SMALL_SIZE[1]}x{SMALL_SIZE[0]} H.264, overlay on"
    )
    result = Table(title, ("frames", "peak RSS", "wall s", "notes"))
    counts = sorted(work.args.memory_frames)
    mask = _small_mask(work)
    peaks = []
    for count in counts:
        output = work.root / f"backward{count}"
        run = track_process(work, _small_clip(work, count), output, options, mask=mask,
                            extra=["--mask-frame", str(count - 1)])
        peaks.append(run.peak_rss_mib)
        result.add(str(run.record.frames_done), f"{run.peak_rss_mib:.0f} MiB", f"{run.wall:.1f}",
                   f"fresh process, {count - 1} frames tracked backward")
    ratio = peaks[-1] / peaks[0]
    result.add(f"{counts[-1]} / {counts[0]}", f"{ratio:.3f}", "", verdict(ratio, MEMORY_TARGET, at_most=True))
    return result


def _small_clip(work: Workspace, count: int) -> Path:
    """The footage's first ``count`` frames at :data:`SMALL_SIZE` (written once)."""
    path = work.root / f"small{count}.mp4"
    if not path.exists():
        with VideoWriter(path, FPS, SMALL_SIZE) as writer:
            for rgb in FOOTAGE.frames(count):
                writer.write(cv2.resize(rgb, SMALL_SIZE[::-1], interpolation=cv2.INTER_AREA))
    return path


def _small_mask(work: Workspace) -> Path:
    path = work.root / "small-mask.png"
    write_label_map(path, cv2.resize(work.mask, SMALL_SIZE[::-1], interpolation=cv2.INTER_NEAREST))
    return path
