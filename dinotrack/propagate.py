"""Label propagation by feature similarity over a bounded memory (ALGORITHM.md §3-4).

Tensors in, soft masks out; no I/O. Only context patches inside the spatial
neighbourhood of a query are ever compared with it (see
:func:`windowed_similarity`). This gives the literal algorithm's result (full similarity matrix,
then masks) at a fraction of its cost and memory.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dinotrack.structs import FirstMask, Neighbourhood


def neighbourhood_offsets(radius: float, shape: Neighbourhood) -> torch.Tensor:
    """The ``(dy, dx)`` offsets a query may look at: ``[n_off, 2] int64``, row-major.

    ``circle``: Euclidean distance <= radius; ``square``: Chebyshev distance <= radius.
    """
    reach = int(math.floor(radius))
    steps = torch.arange(-reach, reach + 1)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    if shape == "circle":
        inside = (dy * dy + dx * dx).double() <= radius * radius
    else:
        inside = torch.ones_like(dy, dtype=torch.bool)
    return torch.stack([dy[inside], dx[inside]], dim=1)


def labels_to_probs(
    ids: np.ndarray, labels: list[int], grid: tuple[int, int], *, mode: FirstMask
) -> torch.Tensor:
    """One-hot probabilities of a label map on the patch grid: ``[M, h, w] float32``.

    ``ids`` is ``[H, W] uint8``; channel ``c`` holds label ``labels[c]`` (labels[0]
    is the background, 0). ``nearest`` samples one pixel per patch with
    nearest-exact (the reference; objects smaller than a patch can vanish);
    ``area`` gives each label the fraction of the patch it covers.
    """
    id_tensor = torch.from_numpy(np.ascontiguousarray(ids))
    if mode == "nearest":
        small = F.interpolate(id_tensor[None, None].float(), size=grid, mode="nearest-exact")[0, 0]
        return torch.stack([(small == label).float() for label in labels])
    channels = [
        F.interpolate((id_tensor == label)[None, None].float(), size=grid, mode="area")[0, 0]
        for label in labels
    ]
    probs = torch.stack(channels)
    return probs / probs.sum(0, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class _Window:
    """Precomputed indexing for one grid size and neighbourhood."""

    grid: tuple[int, int]
    tile: int
    rows: tuple[tuple[int, int], ...]  # (dy, half): the offsets dy, -half..half, in order
    neighbour: torch.Tensor  # [h*w, n_off] int64: flat index of each neighbour (clamped)
    valid: torch.Tensor  # [h*w, n_off] bool: the neighbour lies inside the grid


def _build_window(grid: tuple[int, int], offsets: torch.Tensor, tile: int, device: torch.device) -> _Window:
    h, w = grid
    rows = tuple(
        (int(dy), int(offsets[offsets[:, 0] == dy, 1].max()))
        for dy in torch.unique_consecutive(offsets[:, 0])
    )
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ny = qy.reshape(-1, 1) + offsets[:, 0]
    nx = qx.reshape(-1, 1) + offsets[:, 1]
    valid = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    neighbour = ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)
    return _Window(grid, tile, rows, neighbour.to(device), valid.to(device))


def windowed_similarity(query: torch.Tensor, key: torch.Tensor, window: _Window) -> torch.Tensor:
    """Similarity of each query patch with its neighbourhood in one context frame.

    ``query``, ``key``: ``[h, w, D]`` float. Returns ``[h*w, n_off]`` float,
    offsets in :func:`neighbourhood_offsets` order, ``-inf`` where the
    neighbour falls outside the grid.

    For each row offset ``dy``, runs of ``tile`` queries along a row are
    multiplied with the run of key patches they can reach (``tile + 2*half``
    wide). The key runs are strided views of one padded copy of ``key``: its
    row stride is a whole number of tiles, so every run of every row is one
    fixed stride apart and a single batched matmul covers the frame without
    copying. Reads that spill past a row's end land on patches outside the
    grid, which are masked.
    """
    h, w, dim = query.shape
    t = window.tile
    reach = max(max(abs(dy), half) for dy, half in window.rows)
    runs = -(-(w + reach) // t)
    stride = runs * t
    padded_key = key.new_zeros(h + 2 * reach + 1, stride, dim)
    padded_key[reach : reach + h, reach : reach + w] = key
    padded_query = query.new_zeros(h, stride, dim)
    padded_query[:, :w] = query
    query_runs = padded_query.reshape(h * runs, t, dim)
    parts = []
    for dy, half in window.rows:
        width = t + 2 * half
        start = padded_key[reach + dy :, reach - half :]
        key_runs = start.as_strided((h * runs, width, dim), (t * dim, dim, 1), start.storage_offset())
        products = torch.bmm(query_runs, key_runs.transpose(1, 2))  # [h*runs, t, width]
        diagonal = products.as_strided((h * runs, t, 2 * half + 1), (t * width, width + 1, 1))
        parts.append(diagonal.reshape(h, stride, 2 * half + 1)[:, :w])
    sim = torch.cat(parts, dim=2).reshape(h * w, -1)
    return sim.masked_fill(~window.valid, float("-inf"))


class LabelPropagator:
    """Propagates soft labels frame by frame from a bounded context.

    Context = every keyframe (features + given probabilities, kept for good)
    plus a FIFO queue of the last ``context`` propagated frames. Memory does
    not grow with the video: ``(keyframes + context) * h * w * (D + M)`` floats.
    """

    def __init__(
        self,
        *,
        context: int = 7,
        radius: float = 12.0,
        topk: int = 5,
        temperature: float = 0.2,
        neighbourhood: Neighbourhood = "circle",
        tile: int = 8,
    ) -> None:
        self.topk = topk
        self.temperature = temperature
        self.tile = tile
        self.offsets = neighbourhood_offsets(radius, neighbourhood)
        self.keyframes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=context)
        self._window: _Window | None = None

    @property
    def num_labels(self) -> int:
        return self.keyframes[-1][1].shape[0] if self.keyframes else 0

    def add_keyframe(self, features: torch.Tensor, probs: torch.Tensor) -> None:
        """Make a frame with known labels permanent context and restart the queue.

        ``features``: ``[h, w, D]`` float, L2-normalised; ``probs``: ``[M, h, w]``
        float with the same label channels as earlier keyframes (see
        :meth:`resize_labels`).
        """
        if self.keyframes and probs.shape[0] != self.num_labels:
            raise ValueError(f"keyframe has {probs.shape[0]} label channels, expected {self.num_labels}")
        self.keyframes.append((features, probs))
        self.queue.clear()

    def resize_labels(self, total: int, retired: list[int]) -> None:
        """Give every stored probability map ``total`` label channels.

        New channels are appended and start at zero (a label that first appears
        in a later keyframe); channels listed in ``retired`` are zeroed in the
        whole context (a label that a later keyframe no longer contains).
        """
        def remap(probs: torch.Tensor) -> torch.Tensor:
            grown = torch.zeros((total, *probs.shape[1:]), dtype=probs.dtype, device=probs.device)
            grown[: probs.shape[0]] = probs
            grown[retired] = 0
            return grown

        self.keyframes = [(f, remap(p)) for f, p in self.keyframes]
        self.queue = deque(((f, remap(p)) for f, p in self.queue), maxlen=self.queue.maxlen)

    def step(self, features: torch.Tensor) -> torch.Tensor:
        """Propagate labels to a new frame and push it into the queue.

        ``features``: ``[h, w, D]`` float, L2-normalised. Returns ``[M, h, w]``
        float32 probabilities that sum to 1 per patch.
        """
        if not self.keyframes:
            raise RuntimeError("add a keyframe before propagating")
        probs = self.predict(features)
        self.queue.append((features, probs))
        return probs

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Like :meth:`step` but leaves the context untouched."""
        h, w, _ = features.shape
        window = self._window_for((h, w), features.device)
        context = [*self.keyframes, *self.queue]
        values, slots = [], []
        k = min(self.topk, window.neighbour.shape[1])
        for frame_number, (key, _) in enumerate(context):
            sim = windowed_similarity(features, key.to(features.dtype), window)
            top = sim.topk(k, dim=1)
            values.append(top.values)
            slots.append(top.indices + frame_number * window.neighbour.shape[1])
        values, slots = torch.cat(values, 1), torch.cat(slots, 1)
        top = values.topk(min(self.topk, values.shape[1]), dim=1)
        slots = slots.gather(1, top.indices)  # [h*w, k] over (frame, offset)
        weights = torch.softmax(top.values.float() / self.temperature, dim=1)
        n_off = window.neighbour.shape[1]
        frame_of, offset_of = slots // n_off, slots % n_off
        patch = window.neighbour.gather(1, offset_of)
        context_probs = torch.stack([p.flatten(1).T for _, p in context])  # [n_ctx, h*w, M]
        chosen = context_probs[frame_of, patch].float()  # [h*w, k, M]
        probs = (weights.unsqueeze(2) * chosen).sum(1)
        probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
        return probs.T.reshape(-1, h, w)

    def _window_for(self, grid: tuple[int, int], device: torch.device) -> _Window:
        if self._window is None or self._window.grid != grid or self._window.neighbour.device != device:
            self._window = _build_window(grid, self.offsets, self.tile, device)
        return self._window
