"""Where a run's label maps go: each sink writes one file or folder of the output.

A sink takes every frame's ``[H, W] uint8`` label map in order and is closed
once at the end (also after an interrupt or a failure, when it must leave
only whole files). :class:`PngMasks` writes DAVIS-style palette PNGs and
:class:`OverlayVideo` the tinted video. A sink whose file cannot be resumed
from what is on disk (``replays``) is fed the masks already written again
when a run resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from dinotrack.masks import write_label_map
from dinotrack.render import overlay
from dinotrack.sources import Frame, VideoWriter


class MaskSink(Protocol):
    """Receives one label map per frame; ``file`` names what it writes inside the run's folder."""

    file: ClassVar[str]
    stage: ClassVar[str]  # the name its seconds are recorded under in run.json
    replays: ClassVar[bool]

    def write(self, frame: Frame, ids: np.ndarray) -> None: ...

    def close(self) -> None: ...


class PngMasks:
    """``masks/<frame stem>.png``: indexed PNGs with the DAVIS palette, each written whole."""

    file = "masks"
    stage = "write_masks"
    replays = False

    def __init__(self, output: Path) -> None:
        self.folder = output / self.file

    def path(self, stem: str) -> Path:
        return self.folder / f"{stem}.png"

    def write(self, frame: Frame, ids: np.ndarray) -> None:
        """Write the frame's PNG; the folder must exist (a vanished one is an error, not recreated)."""
        write_label_map(self.path(frame.stem), ids)

    def close(self) -> None:
        pass


class OverlayVideo:
    """``overlay.mp4``: the frames with each object tinted and outlined, at the source's fps."""

    file = "overlay.mp4"
    stage = "overlay"
    replays = True

    def __init__(self, output: Path, fps: float, size: tuple[int, int]) -> None:
        self.video = VideoWriter(output / self.file, fps, size)

    def write(self, frame: Frame, ids: np.ndarray) -> None:
        self.video.write(overlay(frame.rgb, ids))

    def close(self) -> None:
        self.video.close()

    def describe(self) -> dict[str, object]:
        """For ``run.json``: the codec and the frames written."""
        return {"codec": self.video.codec, "frames": self.video.frames_written}


SINK_TYPES: tuple[type[MaskSink], ...] = (PngMasks, OverlayVideo)
"""Every kind of sink, so that the files a run may leave are known."""
