"""Where a run's results go: each sink writes one file or folder of the output.

A sink takes every frame's :class:`Prediction` in order and is closed once
at the end (also after an interrupt or a failure, when it must leave only
whole files). :class:`PngMasks` writes DAVIS-style palette PNGs and
:class:`OverlayVideo` a video whose pictures a painter draws:
:class:`PlainPainter` (the prediction, with each object's area and
confidence), :class:`EvaluatedPainter` (against the ground truth, with J and
F, or prediction | ground truth side by side). A sink whose file cannot be
resumed from what is on disk (``replays``) is fed the predictions already
written again when a run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import cv2
import numpy as np

from dinotrack.coco import COCO_FILE, CocoWriter
from dinotrack.evaluation import read_ids, score_frame
from dinotrack.masks import object_ids, write_label_map
from dinotrack.render import (
    ROW_HEIGHT,
    TIMELINE_HEIGHT,
    Caption,
    Timeline,
    caption_band,
    caption_rows,
    evaluated_overlay,
    labelled,
    overlay,
    side_by_side,
    with_bands,
)
from dinotrack.sources import Frame, VideoWriter
from dinotrack.structs import UsageError

OverlayMode = Literal["plain", "evaluated", "side-by-side"]


@dataclass(frozen=True)
class Prediction:
    """One frame's output: ``ids``, the ``[H, W] uint8`` label map, and ``confidence``,
    ``{object id: value in [0, 1]}`` for each object tracked on it (see :mod:`dinotrack.confidence`)."""

    ids: np.ndarray
    confidence: Mapping[int, float]


class MaskSink(Protocol):
    """Receives one prediction per frame; ``file`` names what it writes inside the run's folder."""

    file: ClassVar[str]
    stage: ClassVar[str]  # the name its seconds are recorded under in run.json
    replays: ClassVar[bool]

    def pixels(self, frame: Frame) -> Frame:
        """What :meth:`write` needs of ``frame`` (called as the frame is queued for the sink)."""
        ...

    def write(self, frame: Frame, prediction: Prediction) -> None: ...

    def close(self) -> None: ...


class PngMasks:
    """``masks/<frame stem>.png``: indexed PNGs with the DAVIS palette, each written whole."""

    file = "masks"
    stage = "write_masks"
    replays = False

    def __init__(self, output: Path) -> None:
        self.folder = output / self.file

    def pixels(self, frame: Frame) -> Frame:
        return frame.without_pixels()

    def path(self, stem: str) -> Path:
        return self.folder / f"{stem}.png"

    def write(self, frame: Frame, prediction: Prediction) -> None:
        """Write the frame's PNG; the folder must exist (a vanished one is an error, not recreated)."""
        write_label_map(self.path(frame.stem), prediction.ids)

    def close(self) -> None:
        pass


class Painter(Protocol):
    """Draws one overlay picture per frame, in order; ``size`` is the pictures' ``(H, W)``, ``picture``
    the ``(H, W)`` of the frame in it (either of full size, or already :func:`_fitted_rgb` to ``picture``)."""

    mode: OverlayMode
    size: tuple[int, int]
    picture: tuple[int, int]

    def paint(self, frame: Frame, prediction: Prediction) -> np.ndarray: ...


class OverlayVideo:
    """``overlay.mp4``: a painter's pictures at the source's fps, one per frame."""

    file = "overlay.mp4"
    stage = "overlay"
    replays = True

    def __init__(self, output: Path, fps: float, painter: Painter) -> None:
        self.painter = painter
        self.video = VideoWriter(output / self.file, fps, painter.size)

    def pixels(self, frame: Frame) -> Frame:
        """The frame shrunk to the picture's size (area-averaged) when that is smaller: 6 MB instead of 25 at 4K."""
        return Frame(frame.index, frame.stem, _fitted_rgb(self.painter.picture, frame.rgb))

    def write(self, frame: Frame, prediction: Prediction) -> None:
        self.video.write(self.painter.paint(frame, prediction))

    def close(self) -> None:
        self.video.close()

    def describe(self) -> dict[str, object]:
        """For ``run.json``: the mode, the codec, the pictures' ``[H, W]`` and the frames written."""
        return {
            "mode": self.painter.mode, "codec": self.video.codec, "size": list(self.painter.size),
            "frames": self.video.frames_written,
        }


def picture_size(frame_size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``(H, W)`` of an overlay's picture of a frame: the frame's, shrunk with its aspect kept so that
    the long side is at most ``max_side`` (``None``: the frame's size)."""
    height, width = frame_size
    if max_side is None or max(height, width) <= max_side:
        return frame_size
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _fitted(size: tuple[int, int], rgb: np.ndarray, *label_maps: np.ndarray) -> tuple[np.ndarray, ...]:
    """``rgb`` (area-averaged) and the ``[H, W] uint8`` label maps (nearest) at ``size``; each unchanged at its own size."""
    small = [ids if ids.shape == size else cv2.resize(ids, size[::-1], interpolation=cv2.INTER_NEAREST) for ids in label_maps]
    return (_fitted_rgb(size, rgb), *small)


def _fitted_rgb(size: tuple[int, int], rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8`` ``rgb`` area-averaged to ``size``; unchanged at that size."""
    return rgb if rgb.shape[:2] == size else cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)


class _Bands:
    """The caption and timeline below each picture, sized once for the objects known at the start."""

    def __init__(self, width: int, frames: int | None, objects: int) -> None:
        self.width = width
        self.rows = caption_rows(width, objects)
        self.timeline = Timeline(width, frames)
        self.height = (1 + self.rows) * ROW_HEIGHT + TIMELINE_HEIGHT

    def around(self, picture: np.ndarray, index: int, caption: Caption, values: Mapping[int, float]) -> np.ndarray:
        return with_bands(picture, caption_band(caption, self.width, self.rows), self.timeline.add(index, values))


class PlainPainter:
    """The prediction tinted (:func:`~dinotrack.render.overlay`); the caption gives each object's
    area (% of the frame) and confidence, the timeline plots the confidence.

    ``max_side``: the picture is drawn at :func:`picture_size` (the figures
    in the caption still come from the full-size mask)."""

    mode: OverlayMode = "plain"

    def __init__(
        self, frame_size: tuple[int, int], frames: int | None, objects: Sequence[int], *, max_side: int | None = None
    ) -> None:
        self.picture = picture_size(frame_size, max_side)
        self.bands = _Bands(self.picture[1], frames, len(objects))
        self.size = (self.picture[0] + self.bands.height, self.picture[1])

    def paint(self, frame: Frame, prediction: Prediction) -> np.ndarray:
        ids = prediction.ids
        percent = np.bincount(ids.ravel(), minlength=256) * (100.0 / ids.size)
        entries = {label: f"{percent[label]:.1f}%  conf {value:.2f}" for label, value in prediction.confidence.items()}
        caption = Caption(f"frame {frame.stem}", entries)
        picture, small_ids = _fitted(self.picture, frame.rgb, ids)
        picture = labelled(overlay(picture, small_ids), picture, small_ids)
        return self.bands.around(picture, frame.index, caption, prediction.confidence)


class GroundTruth:
    """Ground-truth masks read as their frames come: ``folder/<frame stem>.png``, scored as :func:`~dinotrack.evaluation.evaluate` scores them.

    ``objects`` are the ids of the first mask (in name order), the objects
    the metrics score. Checked at once: the folder must hold masks of the frames' size.
    """

    def __init__(self, folder: Path, frame_size: tuple[int, int]) -> None:
        self.folder = folder
        files = sorted(folder.glob("*.png"))
        if not files:
            raise UsageError(f"--gt {folder} holds no PNG masks. Give the folder of ground-truth PNG masks named like the frames.")
        first = read_ids(files[0], ground_truth=True)
        if first.shape != frame_size:
            raise UsageError(
                f"Ground truth {files[0]} is {first.shape[1]}x{first.shape[0]}, but the frames are "
                f"{frame_size[1]}x{frame_size[0]}. Give ground-truth masks at the frames' size."
            )
        self.objects = object_ids(first)
        self.frame_size = frame_size

    def get(self, stem: str) -> np.ndarray | None:
        """The ``[H, W] uint8`` ids of frame ``stem``'s mask; ``None`` when it has none."""
        path = self.folder / f"{stem}.png"
        if not path.is_file():
            return None
        ids = read_ids(path, ground_truth=True)
        if ids.shape != self.frame_size:
            raise UsageError(
                f"Ground truth {path} is {ids.shape[1]}x{ids.shape[0]}, but the frames are "
                f"{self.frame_size[1]}x{self.frame_size[0]}. All ground-truth masks must have the frames' size."
            )
        return ids


class EvaluatedPainter:
    """The prediction against the ground truth: :func:`~dinotrack.render.evaluated_overlay`
    (``side_by_side``: prediction | ground truth); the caption gives each object's J and F
    on the frame, the timeline plots each object's (J + F) / 2. Frames without
    ground truth show the plain overlay and say so. ``max_side``: each
    picture is drawn at :func:`picture_size` (J and F still come from the
    full-size masks)."""

    def __init__(
        self,
        frame_size: tuple[int, int],
        frames: int | None,
        gt: GroundTruth,
        *,
        side: bool = False,
        max_side: int | None = None,
    ) -> None:
        self.gt = gt
        self.side = side
        self.mode: OverlayMode = "side-by-side" if side else "evaluated"
        self.picture = picture_size(frame_size, max_side)
        width = self.picture[1] * (2 if side else 1)
        self.bands = _Bands(width, frames, len(gt.objects))
        self.size = (self.picture[0] + self.bands.height, width)

    def paint(self, frame: Frame, prediction: Prediction) -> np.ndarray:
        gt = self.gt.get(frame.stem)
        title = f"frame {frame.stem}"
        if gt is None:
            caption = Caption(title, note="no ground truth")
            return self.bands.around(self._picture(frame.rgb, prediction.ids, None), frame.index, caption, {})
        scores = score_frame(prediction.ids, gt, self.gt.objects)
        caption = Caption(title, {label: f"J {j:.3f}  F {f:.3f}" for label, (j, f) in scores.items()}, legend=not self.side)
        values = {label: (j + f) / 2 for label, (j, f) in scores.items()}
        return self.bands.around(self._picture(frame.rgb, prediction.ids, gt), frame.index, caption, values)

    def _picture(self, rgb: np.ndarray, ids: np.ndarray, gt: np.ndarray | None) -> np.ndarray:
        if gt is None:
            rgb, ids = _fitted(self.picture, rgb, ids)
        else:
            rgb, ids, gt = _fitted(self.picture, rgb, ids, gt)
        if self.side:
            return side_by_side(rgb, ids, gt)
        return labelled(overlay(rgb, ids) if gt is None else evaluated_overlay(rgb, ids, gt), rgb, ids)


class CocoAnnotations:
    """``annotations.coco.json``: every frame's objects as COCO RLE (see :mod:`dinotrack.coco`).

    Only the RLE strings are kept until :meth:`save`, which the run calls once
    it is complete: an interrupted or failed run leaves no annotations file.
    ``file_name`` gives the name frame ``index`` has in the file.
    """

    file = COCO_FILE
    stage = "export_coco"
    replays = True

    def __init__(self, output: Path, file_name: Callable[[int], str], labels: Mapping[int, str]) -> None:
        self.path = output / self.file
        self.file_name = file_name
        self.writer = CocoWriter(labels)

    def pixels(self, frame: Frame) -> Frame:
        return frame.without_pixels()

    def write(self, frame: Frame, prediction: Prediction) -> None:
        self.writer.add(self.file_name(frame.index), prediction.ids)

    def close(self) -> None:
        pass

    def save(self) -> None:
        """Write the file, whole."""
        self.writer.write(self.path)


SINK_TYPES: tuple[type[MaskSink], ...] = (PngMasks, OverlayVideo, CocoAnnotations)
"""Every kind of sink, so that the files a run may leave are known."""
