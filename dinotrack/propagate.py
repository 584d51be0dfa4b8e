"""Label propagation by feature similarity over a bounded memory (ALGORITHM.md §3-4).

Tensors in, soft masks out; no I/O. On large grids only context patches
inside the spatial neighbourhood of a query are ever compared with it (see
:func:`windowed_similarity`); on small ones, where the neighbourhood covers
most of the grid, one dense product per context frame with the outside
masked is faster (see :func:`dense_similarity` and :data:`DENSE_MAX_RATIO`).
Both give the literal algorithm's result (full similarity matrix, then
masks) at a fraction of its cost and memory.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

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


BLOCK_ROWS = 16
"""Query rows per block in :func:`windowed_similarity` (60x107 grid: 39 -> 33 ms a context frame)."""


@dataclass(frozen=True)
class _Window:
    """Precomputed indexing for one grid size and neighbourhood.

    Queries and keys are laid out row by row with a row length of ``stride``
    (whole tiles covering ``w``, zero-filled past ``w``); keys get ``margin``
    zero rows above and below, so every read of :func:`windowed_similarity`
    stays inside the buffer.
    """

    grid: tuple[int, int]
    tile: int
    stride: int
    margin: int
    rows: tuple[tuple[int, int], ...]  # (dy, half): the offsets dy, -half..half, in order
    neighbour: torch.Tensor  # [h*w, n_off] int64: flat index of each neighbour (clamped)
    outside: torch.Tensor  # [h*stride, n_off] bool: padding query, or neighbour outside the grid


def _build_window(grid: tuple[int, int], offsets: torch.Tensor, tile: int, device: torch.device) -> _Window:
    h, w = grid
    rows = tuple(
        (int(dy), int(offsets[offsets[:, 0] == dy, 1].max()))
        for dy in torch.unique_consecutive(offsets[:, 0])
    )
    reach = max(max(abs(dy), half) for dy, half in rows)
    stride = -(-w // tile) * tile
    margin = reach + -(-reach // stride)
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ny = qy.reshape(-1, 1) + offsets[:, 0]
    nx = qx.reshape(-1, 1) + offsets[:, 1]
    valid = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    neighbour = ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)
    outside = torch.ones(h, stride, len(offsets), dtype=torch.bool)
    outside[:, :w] = ~valid.reshape(h, w, -1)
    return _Window(grid, tile, stride, margin, rows, neighbour.to(device), outside.reshape(h * stride, -1).to(device))


def lay_out_query(query: torch.Tensor, window: _Window) -> torch.Tensor:
    """``[h, w, D]`` -> ``[h * stride / tile, tile, D]``: runs of ``tile`` queries along rows."""
    h, w, dim = query.shape
    padded = query.new_zeros(h, window.stride, dim)
    padded[:, :w] = query
    return padded.reshape(-1, window.tile, dim)


def lay_out_key(key: torch.Tensor, window: _Window) -> torch.Tensor:
    """``[h, w, D]`` -> ``[(h + 2 * margin) * stride, D]``: rows of ``stride`` patches, zero-padded."""
    h, w, dim = key.shape
    padded = key.new_zeros(h + 2 * window.margin, window.stride, dim)
    padded[window.margin : window.margin + h, :w] = key
    return padded.reshape(-1, dim)


def windowed_similarity(query_runs: torch.Tensor, key_rows: torch.Tensor, window: _Window) -> torch.Tensor:
    """Similarity of each query patch with its neighbourhood in one context frame.

    ``query_runs`` and ``key_rows`` come from :func:`lay_out_query` and
    :func:`lay_out_key`. Returns ``[h*stride, n_off]`` float: row ``y*stride + x``
    holds query ``(y, x)``'s similarities in :func:`neighbourhood_offsets` order,
    ``-inf`` where the neighbour falls outside the grid; rows with ``x >= w``
    are padding (all ``-inf``).

    For each row offset ``dy``, every run of ``tile`` queries is multiplied with
    the run of key patches it can reach (``tile + 2*half`` wide). Since the row
    length is a whole number of tiles, the key runs of all queries are one fixed
    stride apart in ``key_rows``: one strided view, one batched matmul, no copy.
    Reads that spill past a row's end land on padding or on patches of the
    next row; both fall outside the neighbourhood and are masked. Queries go
    in blocks of :data:`BLOCK_ROWS` rows, so that the products stay in cache.
    """
    t = window.tile
    runs = query_runs.shape[0]
    sim = key_rows.new_empty(runs * t, window.outside.shape[1])
    sim_runs = sim.view(runs, t, -1)
    block = BLOCK_ROWS * window.stride // t
    for first in range(0, runs, block):
        last = min(first + block, runs)
        _fill_block(query_runs[first:last], key_rows, window, first, sim_runs[first:last])
    return sim.masked_fill_(window.outside, float("-inf"))


def _fill_block(
    query_runs: torch.Tensor, key_rows: torch.Tensor, window: _Window, first: int, out: torch.Tensor
) -> None:
    """:func:`windowed_similarity` of the query runs ``first...`` into ``out`` ``[runs, tile, n_off]``."""
    t, stride, dim = window.tile, window.stride, key_rows.shape[1]
    runs = query_runs.shape[0]
    column = 0
    for dy, half in window.rows:
        width, span = t + 2 * half, 2 * half + 1
        offset = key_rows.storage_offset() + ((window.margin + dy) * stride - half + first * t) * dim
        key_runs = key_rows.as_strided((runs, width, dim), (t * dim, dim, 1), offset)
        products = torch.bmm(query_runs, key_runs.transpose(1, 2))  # [runs, t, width]
        out[:, :, column : column + span] = products.as_strided((runs, t, span), (t * width, width + 1, 1))
        column += span


DENSE_MAX_RATIO = 3.0
"""Score densely when the grid has at most this many patches per neighbourhood offset.

Measured on one CPU thread, D=384, radius 12 circle (441 offsets), 8 context
frames, CPU ms per frame dense / windowed: 15x27 grid 21 / 76, 20x36 64 / 132,
25x45 182 / 195, 30x54 390 / 264, 35x62 717 / 356.
"""

ScoringPath = Literal["auto", "dense", "windowed"]


@dataclass(frozen=True)
class _Dense:
    """The dense path's mask for one grid size: ``outside`` ``[h*w, h*w] bool``,
    True where key patch j is outside query patch i's neighbourhood."""

    grid: tuple[int, int]
    outside: torch.Tensor


def _build_dense(grid: tuple[int, int], offsets: torch.Tensor, device: torch.device) -> _Dense:
    h, w = grid
    outside = torch.ones(h * w, h * w, dtype=torch.bool)
    queries = torch.arange(h * w)
    qy, qx = queries // w, queries % w
    for dy, dx in offsets.tolist():
        ny, nx = qy + dy, qx + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        outside[queries[inside], (ny * w + nx)[inside]] = False
    return _Dense(grid, outside.to(device))


def dense_similarity(query: torch.Tensor, key: torch.Tensor, dense: _Dense) -> torch.Tensor:
    """Similarity of each query patch with every key patch: ``[h*w, D]`` x ``[h*w, D]`` -> ``[h*w, h*w]``,
    ``-inf`` outside the neighbourhood."""
    return (query @ key.T).masked_fill_(dense.outside, float("-inf"))


class LabelPropagator:
    """Propagates soft labels frame by frame from a bounded context.

    Context = the first keyframe (features + given probabilities, kept for
    good), the ``keyframe_bound`` most recent later keyframes, and a FIFO
    queue of the last ``context`` propagated frames. Memory and the cost per
    frame do not grow with the video: at most
    ``(1 + keyframe_bound + context) * h * w * (D + M)`` floats.
    """

    def __init__(
        self,
        *,
        context: int = 7,
        radius: float = 12.0,
        topk: int = 5,
        temperature: float = 0.2,
        neighbourhood: Neighbourhood = "circle",
        keyframe_bound: int = 4,
        tile: int = 4,
        path: ScoringPath = "auto",
    ) -> None:
        """``path``: ``dense`` or ``windowed`` scoring (same results); ``auto`` picks by grid size."""
        self.topk = topk
        self.temperature = temperature
        self.keyframe_bound = keyframe_bound
        self.tile = tile
        self.path = path
        self.offsets = neighbourhood_offsets(radius, neighbourhood)
        self.keyframes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=context)
        self._window: _Window | None = None
        self._dense: _Dense | None = None
        self._key_cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # (features, lay_out_key)

    @property
    def num_labels(self) -> int:
        return self.keyframes[-1][1].shape[0] if self.keyframes else 0

    def add_keyframe(self, features: torch.Tensor, probs: torch.Tensor) -> None:
        """Make a frame with known labels context and restart the queue.

        ``features``: ``[h, w, D]`` float, L2-normalised; ``probs``: ``[M, h, w]``
        float with the same label channels as earlier keyframes (see
        :meth:`resize_labels`). The first keyframe stays for good; of the later
        ones, the oldest leaves when more than ``keyframe_bound`` are kept.
        """
        if self.keyframes and probs.shape[0] != self.num_labels:
            raise ValueError(f"keyframe has {probs.shape[0]} label channels, expected {self.num_labels}")
        self.keyframes.append((features, probs))
        if len(self.keyframes) > 1 + self.keyframe_bound:
            del self.keyframes[1]
        self.queue.clear()

    def state_dict(self) -> dict[str, list[list[torch.Tensor]]]:
        """The context as plain lists of ``[features, probs]`` tensors (``torch.save``-able, weights-only loadable)."""
        return {
            "keyframes": [list(pair) for pair in self.keyframes],
            "queue": [list(pair) for pair in self.queue],
        }

    def load_state_dict(self, state: dict[str, list[list[torch.Tensor]]]) -> None:
        """Continue from :meth:`state_dict`."""
        self.keyframes = [tuple(pair) for pair in state["keyframes"]]
        self.queue.clear()
        self.queue.extend(tuple(pair) for pair in state["queue"])
        self._key_cache = []

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
        context = [*self.keyframes, *self.queue]
        if self.dense_for((h, w)):
            values, frame_of, patch = self._dense_top(features, context)
        else:
            values, frame_of, patch = self._windowed_top(features, context)
        weights = torch.softmax(values.float() / self.temperature, dim=1)
        context_probs = torch.stack([p.flatten(1).T for _, p in context])  # [n_ctx, h*w, M]
        chosen = context_probs[frame_of, patch].float()  # [h*w, k, M]
        probs = (weights.unsqueeze(2) * chosen).sum(1)
        probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
        return probs.T.reshape(-1, h, w)

    def dense_for(self, grid: tuple[int, int]) -> bool:
        """Whether :meth:`predict` scores a grid of this size densely."""
        if self.path != "auto":
            return self.path == "dense"
        return grid[0] * grid[1] <= DENSE_MAX_RATIO * len(self.offsets)

    def _dense_top(
        self, features: torch.Tensor, context: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The joint top-k by :func:`dense_similarity`: values, context frame and patch, each ``[h*w, k]``."""
        h, w, dim = features.shape
        dense = self._dense_mask((h, w), features.device)
        query = features.reshape(h * w, dim)
        scores = (dense_similarity(query, key.to(features.dtype).reshape(h * w, dim), dense) for key, _ in context)
        values, slots = self._joint_topk(scores)
        return values, slots // (h * w), slots % (h * w)

    def _windowed_top(
        self, features: torch.Tensor, context: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The joint top-k by :func:`windowed_similarity`: values, context frame and patch, each ``[h*w, k]``."""
        h, w, _ = features.shape
        window = self._window_for((h, w), features.device)
        query_runs = lay_out_query(features, window)
        scores = (windowed_similarity(query_runs, key_rows, window) for key_rows in self._key_layouts(context, window, features.dtype))
        values, slots = self._joint_topk(scores)
        values, slots = (x.view(h, window.stride, -1)[:, :w].reshape(h * w, -1) for x in (values, slots))
        n_off = window.neighbour.shape[1]
        return values, slots // n_off, window.neighbour.gather(1, slots % n_off)

    def _joint_topk(self, scores: Iterator[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-k over all context frames of ``[queries, width]`` scores each:
        values and slots ``frame * width + column``, each ``[queries, k]``."""
        values, slots = [], []
        for frame_number, score in enumerate(scores):
            width = score.shape[1]
            top = score.topk(min(self.topk, width), dim=1)
            values.append(top.values)
            slots.append(top.indices + frame_number * width)
        values, slots = torch.cat(values, 1), torch.cat(slots, 1)
        top = values.topk(min(self.topk, values.shape[1]), dim=1)
        return top.values, slots.gather(1, top.indices)

    def _key_layouts(
        self, context: list[tuple[torch.Tensor, torch.Tensor]], window: _Window, dtype: torch.dtype
    ) -> list[torch.Tensor]:
        """:func:`lay_out_key` of each context frame's features, each made once while in context.

        The cache holds the features it was made from, so an ``id`` found in it
        cannot belong to another tensor.
        """
        cached = {id(features): rows for features, rows in self._key_cache}
        layouts = []
        for features, _ in context:
            rows = cached.get(id(features))
            if rows is None or rows.dtype != dtype:
                rows = lay_out_key(features.to(dtype), window)
            layouts.append(rows)
        self._key_cache = [(features, rows) for (features, _), rows in zip(context, layouts)]
        return layouts

    def _window_for(self, grid: tuple[int, int], device: torch.device) -> _Window:
        if self._window is None or self._window.grid != grid or self._window.neighbour.device != device:
            self._window = _build_window(grid, self.offsets, self.tile, device)
            self._key_cache = []
        return self._window

    def _dense_mask(self, grid: tuple[int, int], device: torch.device) -> _Dense:
        if self._dense is None or self._dense.grid != grid or self._dense.outside.device != device:
            self._dense = _build_dense(grid, self.offsets, device)
        return self._dense
