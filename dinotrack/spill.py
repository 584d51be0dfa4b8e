"""A stretch's frames waiting on disk for its backward pass.

A frame between two keyframes (or before the first) can only be finished
once the keyframe after it is read, and videos are read forward. Until
then, its pixels, its features and its forward probabilities wait in a
folder, one ``.npy`` file each, so that memory does not grow with the
stretch (at S=480 with a ViT-S/16, about 3 MB of disk a frame). Everything
waits exactly as it was, so that a backward pass is the forward algorithm
on the reversed order to the last bit; the probabilities channels last: they come back in
the memory layout propagation gives them, since the rounding of their
upsampling depends on it. The folder is removed when the run ends.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from dinotrack.sources import Frame

SPILL_FOLDER = ".dinotrack-stretch"
"""The spill's folder inside a run's output (hidden, removed at the end)."""


class Spill:
    """Frames waiting for their stretch's backward pass, kept in ``folder`` (created now, emptied first)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.waiting: list[tuple[int, str]] = []  # (index, stem) of each waiting frame, in frame order
        self._forward: dict[int, bool] = {}

    def put(self, frame: Frame, features: torch.Tensor, forward: torch.Tensor | None) -> None:
        """Keep ``frame`` (``[H, W, 3] uint8``), its ``[h, w, D]`` features and its ``[M, h, w]`` forward probabilities."""
        np.save(self._path(frame.index, "rgb"), frame.rgb)
        np.save(self._path(frame.index, "features"), features.cpu().numpy())
        if forward is not None:
            _save_probs(self._path(frame.index, "forward"), forward)
        self._forward[frame.index] = forward is not None
        self.waiting.append((frame.index, frame.stem))

    def put_backward(self, index: int, probs: torch.Tensor) -> None:
        """Keep frame ``index``'s ``[M, h, w]`` backward probabilities."""
        _save_probs(self._path(index, "backward"), probs)

    def rgb(self, index: int) -> np.ndarray:
        return np.load(self._path(index, "rgb"))

    def features(self, index: int, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(np.load(self._path(index, "features"))).to(device)

    def forward(self, index: int, device: torch.device) -> torch.Tensor | None:
        return _load_probs(self._path(index, "forward"), device) if self._forward[index] else None

    def backward(self, index: int, device: torch.device) -> torch.Tensor:
        return _load_probs(self._path(index, "backward"), device)

    def clear(self) -> None:
        """Forget the waiting frames and delete their files."""
        for index, _ in self.waiting:
            for kind in ("rgb", "features", "forward", "backward"):
                self._path(index, kind).unlink(missing_ok=True)
        self.waiting.clear()
        self._forward.clear()

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, index: int, kind: str) -> Path:
        return self.folder / f"{index:08d}.{kind}.npy"


def _save_probs(path: Path, probs: torch.Tensor) -> None:
    """``[M, h, w]`` probabilities, stored ``[h, w, M]``."""
    np.save(path, probs.permute(1, 2, 0).cpu().numpy())


def _load_probs(path: Path, device: torch.device) -> torch.Tensor:
    """``[M, h, w]`` probabilities over ``[h, w, M]`` memory, as :meth:`LabelPropagator.predict` lays them out."""
    return torch.from_numpy(np.load(path)).to(device).permute(2, 0, 1)
