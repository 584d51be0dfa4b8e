"""The overlay modes per frame on one thread: ``--overlay plain``, ``evaluated`` and ``side-by-side``.

Each mode is its painter (``dinotrack.sinks``) drawing the whole picture: the
ground-truth PNG read, J and F, the picture, its caption and timeline (not the
H.264 encoding, the same for every mode of one width). The frames are the first
sequence of the footage at 854x480 with its ground truth, written as PNGs; the
prediction is the ground truth shifted by ``SHIFT`` pixels, so every object has
missed and wrongly claimed pixels. The short side plays no part (run it with one).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bench.common import FOOTAGE, FRAME_SIZE, Footage, Table, Workspace, median_ms, timed, verdict
from dinotrack.masks import write_label_map
from dinotrack.sinks import EvaluatedPainter, GroundTruth, Painter, PlainPainter, Prediction
from dinotrack.sources import Frame

FRAMES = 50
SHIFT = 8
"""Pixels by which the ground truth is shifted to make a prediction with errors."""
EVALUATED_TARGET = 10.0
"""ms of CPU per 854x480 frame that the evaluated overlay may cost above the plain one."""


def table(work: Workspace, short_side: int) -> Table:
    """Each overlay mode's ms per frame, and the evaluated one's cost above the plain one."""
    footage = FOOTAGE.first_only()
    gt_folder = _ground_truth(work.root / f"gt-{footage.name}", footage)
    frames = [Frame(index, f"{index:05d}", rgb) for index, rgb in enumerate(footage.frames(FRAMES))]
    truth = GroundTruth(gt_folder, FRAME_SIZE)
    predictions = [Prediction(np.roll(truth.get(frame.stem), SHIFT, axis=1), dict.fromkeys(truth.objects, 0.9))
                   for frame in frames]
    painters: dict[str, Callable[[], Painter]] = {
        "plain": lambda: PlainPainter(FRAME_SIZE, FRAMES, truth.objects),
        "evaluated": lambda: EvaluatedPainter(FRAME_SIZE, FRAMES, truth),
        "side-by-side": lambda: EvaluatedPainter(FRAME_SIZE, FRAMES, truth, side=True),
    }
    result = Table(
        f"Overlay modes on one thread: {footage.describe()}, {len(truth.objects)} object(s), prediction shifted "
        f"{SHIFT} px (any S)",
        ("--overlay", "ms/frame", "CPU ms/frame", "notes"),
    )
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        cpu = {}
        for mode, make in painters.items():
            painter = make()
            timings = [timed(painter.paint, frame, prediction)[1] for frame, prediction in zip(frames, predictions)]
            cpu[mode] = 1000 * statistics.median(timing.cpu for timing in timings)
            result.add(mode, *median_ms(timings), f"whole picture, median of {FRAMES} frames")
    finally:
        cv2.setNumThreads(threads)
    extra = cpu["evaluated"] - cpu["plain"]
    result.add("evaluated - plain", "", f"{extra:.1f}", f"CPU ms; {verdict(extra, EVALUATED_TARGET, at_most=True)}")
    return result


def _ground_truth(folder: Path, footage: Footage) -> Path:
    """The footage's first ``FRAMES`` ground-truth masks as PNGs named like the frames (written once)."""
    if not folder.is_dir():
        folder.mkdir()
        for index, ids in enumerate(footage.masks(FRAMES)):
            write_label_map(folder / f"{index:05d}.png", ids)
    return folder
