"""Keyframe masks by frame index, and frames named by index or by name.

A run's keyframes come from ``--mask``: one PNG (for frame 0, or the frame
``--mask-frame`` names), a folder of PNGs named like the frames, or a COCO
instances file (``.json``, see :mod:`dinotrack.coco`). However
they are stored, a run sees one small interface, :class:`Keyframes`:
the sorted frame indices that have a mask, and ``get(index)``, the mask as
``[H, W] uint8`` ids at the frame size, read when asked for. Another
format only needs to build the readers (frame index -> a function that reads
that frame's mask).

Frames are named on the command line (``--mask-frame``, ``--start``,
``--end``) by their name (a folder's file stem, ``00042`` in a video) or by
their index from 0; a name wins where both could apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from dinotrack.coco import keyframe_loaders, read_coco
from dinotrack.masks import object_ids, read_label_map
from dinotrack.sources import FrameSource
from dinotrack.structs import UsageError

log = logging.getLogger("dinotrack")

Reader = Callable[[], np.ndarray]
"""Reads one keyframe's mask: ``[H, W] uint8`` ids at the frame size."""


class Keyframes:
    """Keyframe masks by frame index, each read when its frame comes.

    The first keyframe's mask is read and checked at once (it must hold an
    object), so that a bad one fails before any output exists.
    """

    def __init__(self, readers: Mapping[int, Reader], described: str) -> None:
        if not readers:
            raise ValueError("Keyframes needs at least one mask")
        self._readers = dict(sorted(readers.items()))
        self.indices: list[int] = list(self._readers)
        self._first = self._readers[self.indices[0]]()
        if not object_ids(self._first):
            raise UsageError(
                f"The first keyframe's mask {described} holds no object: every pixel is background (0). "
                "Give a mask in which each object to track has its own non-zero id."
            )

    @property
    def first(self) -> int:
        """The index of the first frame with a mask."""
        return self.indices[0]

    def get(self, index: int) -> np.ndarray | None:
        """``[H, W] uint8`` ids of frame ``index``'s mask at the frame size; ``None`` if it has none."""
        if index == self.indices[0]:
            return self._first
        reader = self._readers.get(index)
        return reader() if reader is not None else None

    def object_ids(self) -> set[int]:
        """The ids of every keyframe's objects (each mask read once more)."""
        return {object_id for index in self.indices for object_id in object_ids(self.get(index))}


def open_keyframes(
    path: Path, source: FrameSource, *, mask_frame: int | str | None = None, frames: FrameRange | None = None,
) -> Keyframes:
    """The keyframes of ``--mask path`` for the frames of ``source`` in ``frames`` (default: all).

    ``mask_frame`` names the frame of a single mask file (default: the first frame).
    """
    is_coco = path.suffix.lower() == ".json" and not path.is_dir()
    if (path.is_dir() or is_coco) and mask_frame is not None:
        raise UsageError(
            f"--mask-frame names the frame of a single mask file, but --mask {path} holds masks named like their "
            "frames. Drop --mask-frame, or give one mask file."
        )
    if is_coco:
        readers = _coco_readers(path, source)
    else:
        files = _keyframe_files(path, source) if path.is_dir() else {
            frame_index(source, mask_frame, "--mask-frame") if mask_frame is not None else 0: path
        }
        readers = {index: partial(read_keyframe, file, source.size) for index, file in files.items()}
    frames = frames or FrameRange()
    inside = {index: reader for index, reader in readers.items() if frames.covers(index)}
    if not inside:
        raise UsageError(
            f"--mask {path} has no mask for a frame from {source.stem(frames.first)} to "
            f"{source.stem(frames.last) if frames.last is not None else 'the end'} (the frames --start and --end choose), so "
            "there is nothing to track from. Give a mask for a frame in that range, or widen the range."
        )
    if len(inside) < len(readers):
        log.info("Using the %d of %d keyframe masks inside the frame range.", len(inside), len(readers))
    first = f"{path} (frame {source.stem(min(inside))})" if path.is_dir() or is_coco else str(path)
    return Keyframes(inside, first)


def _coco_readers(path: Path, source: FrameSource) -> dict[int, Reader]:
    """The keyframes of a COCO instances file: its annotated images, matched to frames by file-name stem."""
    coco = read_coco(path)
    stems = _source_stems(source, [image.stem for image in coco.images])
    return keyframe_loaders(coco, {stem: index for index, stem in enumerate(stems)}, source.size, video=source.kind == "video")


def frame_index(source: FrameSource, frame: int | str, option: str) -> int:
    """The index of the frame that ``option`` names (a frame name or an index); a :class:`UsageError` if there is none."""
    text = str(frame).strip()
    names = {file.stem: index for index, file in enumerate(source.files)}
    if text in names:
        return names[text]
    if not text.isdigit():
        known = f"{source.stem(0)}, {source.stem(1)}, ..." if source.kind == "video" else ", ".join(list(names)[:3]) + ", ..."
        raise UsageError(
            f"{option} {frame}: {source.path} has no frame of that name. Name a frame by its index from 0, "
            f"or by its name ({known})."
        )
    index = int(text)
    count = source.frame_count
    if count is not None and index >= count:
        raise UsageError(
            f"{option} {frame} is out of range: {source.path} has {count} frames, numbered 0 to {count - 1}. "
            "Name one of those frames (by index or by name)."
        )
    return index


def _keyframe_files(folder: Path, source: FrameSource) -> dict[int, Path]:
    by_stem = {file.stem: file for file in sorted(folder.glob("*.png"))}
    if not by_stem:
        raise UsageError(
            f"--mask {folder} is a folder without PNG files. Give one frame's mask, "
            "or a folder of PNG masks named like the frames."
        )
    stems = _source_stems(source, by_stem)
    unknown = sorted(set(by_stem) - set(stems))
    if unknown:
        raise UsageError(
            f"--mask {folder} holds masks named for frames that {source.path} does not have "
            f"({', '.join(name + '.png' for name in unknown[:5])}{', ...' if len(unknown) > 5 else ''}; its frames are "
            f"{stems[0]} to {stems[-1]}). Name each mask like the frame it belongs to, or remove the others."
        )
    return {index: by_stem[stem] for index, stem in enumerate(stems) if stem in by_stem}


def _source_stems(source: FrameSource, mask_stems: Iterable[str]) -> list[str]:
    """The frames' names; for a video whose container gives no frame count, up to the last numbered mask."""
    if source.kind == "folder":
        return [file.stem for file in source.files]
    count = source.frame_count
    if count is None:
        count = 1 + max((int(stem) for stem in mask_stems if stem.isdigit()), default=0)
    return [source.stem(index) for index in range(count)]


def read_keyframe(path: Path, frame_size: tuple[int, int]) -> np.ndarray:
    """A keyframe mask as ``[H, W] uint8`` ids at the frame size (same aspect ratio: resized, with a warning)."""
    ids = read_label_map(path)
    if ids.shape == frame_size:
        return ids
    height, width = frame_size
    mask_h, mask_w = ids.shape
    if abs(mask_w * height - mask_h * width) > max(height, width):
        raise UsageError(
            f"Mask {path} is {mask_w}x{mask_h}, but the frames are {width}x{height}, a different shape. "
            "Give each mask at the frames' size (or at least their aspect ratio)."
        )
    log.warning("Mask %s is %dx%d; resizing it to the frames' %dx%d (nearest neighbour).", path, mask_w, mask_h, width, height)
    return cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class FrameRange:
    """The frames a run tracks: ``first`` to ``last``, both included (``last`` ``None``: to the end)."""

    first: int = 0
    last: int | None = None

    @property
    def whole(self) -> bool:
        """Whether the range is the whole source, as no ``--start`` and no ``--end`` give."""
        return self.first == 0 and self.last is None

    def total(self, frame_count: int | None) -> int | None:
        """How many frames the range holds, of a source of ``frame_count`` frames (``None``: unknown)."""
        last = self.last if self.last is not None else (frame_count - 1 if frame_count is not None else None)
        return None if last is None else last - self.first + 1

    def covers(self, index: int) -> bool:
        return index >= self.first and (self.last is None or index <= self.last)


def frame_range(source: FrameSource, start: int | str | None, end: int | str | None) -> FrameRange:
    """The frames ``--start`` and ``--end`` name (each a frame name or index, both included)."""
    first = frame_index(source, start, "--start") if start is not None else 0
    last = frame_index(source, end, "--end") if end is not None else None
    if last is not None and last < first:
        raise UsageError(
            f"--start {start} (frame {source.stem(first)}) comes after --end {end} (frame {source.stem(last)}): "
            "the range would hold no frame. Give a --start at or before --end."
        )
    return FrameRange(first, last)
