"""From patch probabilities to a full-resolution label map (ALGORITHM.md §5).

``refine="none"`` is the reference: upsample each label's probabilities to
the frame size, normalise each by its own min and max over the frame, take
the argmax, and map channels back to object ids. On the CPU the result is
computed without full-resolution planes, bit for bit: a pixel's winner can
only be open near where the upsampled probabilities change winner, so
labels are decided on the coarse grid wherever the bilinear values cannot
change it, and values are computed at full resolution only in that band,
with the kernel's own arithmetic (see :class:`Arithmetic`). The min and max
come from the few places that can reach them. So a 4K frame costs about
what an 854x480 one does, plus its uint8 label map. Elsewhere (another
device, tiny frames) the planes are computed in full, one channel at a time.

``refine="colour"`` lets the frame itself place the boundaries inside the
band where the upsampled probabilities hesitate. Each label's probabilities
are first normalised by their min and max in the log domain. Around every
pixel, each label gets a colour model: the mean and variance of the frame's
colours over the cells that the label's probabilities claim, within one
patch (statistics on a grid of 4x4 cells per patch). A pixel's score for a
label is the log of its bilinearly upsampled probability plus a small
multiple of the log-likelihood of its colour under the label's model. Far
from boundaries the probabilities dominate; where they are close, the colour
decides. Where two labels' colours are alike (low contrast) or spread
(texture), the likelihoods are flat and the probabilities decide, which keeps
it from the losses of plain guided filters on DAVIS. Only pixels of cells
where two labels are probable are scored, in chunks, so the cost follows the
length of the boundaries and memory stays bounded for 4K frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dinotrack.structs import Refine, Upsample

CELLS_PER_PATCH = 4
"""Colour statistics are gathered on a grid this many times finer than the patch grid."""
COLOUR_WEIGHT = 0.1
"""Weight of the colour log-likelihood against the log-probability (measured with scripts/oracle_eval.py)."""
SUPPORT_POWER = 4.0
"""A label's colour model weighs each cell by its probability to this power: confident cells count most."""
SUPPORT_FLOOR = 1e-3
"""Weight every cell adds to every label's model: a label absent nearby gets the window's overall colours."""
VARIANCE_FLOOR = 1e-3
"""Added to each colour variance (colours in [0, 1]), so flat regions do not give unbounded likelihoods."""
PROBABILITY_FLOOR = 1e-4
"""Probabilities are clamped to this before the log."""
CONTESTED = 0.01
"""A label is probable in a cell from this probability on (after normalisation); cells with two are refined."""
POINT_BUDGET = 1 << 16
"""Pixels times labels scored at once (about 100 bytes of work space each; of 2**14 to 2**18, 2**16 and 2**17 were
fastest at 854x480 and 4K, one thread, as the work stays in cache)."""
POOL_PIXELS = 1 << 20
"""Frame pixels per integral image in :func:`cell_colours` (12 MB of int32 sums)."""
BAND_BUDGET = 1 << 16
"""Pixels times labels computed at once in the band of the bilinear path (about 80 bytes of work space each)."""
SLACK = 2.0**-20
"""Bound, relative to its inputs, on the rounding of the kernel's second pass and of :func:`_bounds` (8 x 2**-24)."""
TINY = 2.0**-140
"""Absolute bound on the same for subnormal values."""
SMALL_OUTPUT = 128
"""``F.interpolate`` runs another CPU kernel when output height plus width is at most this (UpSampleKernel.cpp)."""
PROBE_GRID, PROBE_SIZE, PROBE_CHANNELS = (9, 13), (233, 311), 3
"""The random planes on which :func:`kernel_arithmetic` recognises the kernel's rounding."""


def probs_to_ids(
    probs: torch.Tensor,
    labels: list[int],
    size: tuple[int, int],
    *,
    upsample: Upsample = "bilinear",
    minmax: bool = True,
    refine: Refine = "none",
    guide: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Label map of a frame from its patch probabilities.

    ``probs``: ``[M, h, w]`` float; channel ``c`` is object id ``labels[c]``.
    ``size``: ``(H, W)``. ``guide``: the frame, ``[H, W, 3] uint8`` RGB, needed
    by ``refine="colour"`` (which interpolates bilinearly whatever
    ``upsample`` says). Returns ``[H, W] uint8`` ids on the CPU. Ties go to
    the lower channel, as ``argmax`` does.
    """
    lookup = torch.tensor(labels, dtype=torch.uint8, device=probs.device)
    if refine == "colour":
        if guide is None or tuple(guide.shape) != (*size, 3):
            raise ValueError(f"refine='colour' needs the frame, [{size[0]}, {size[1]}, 3] uint8, as guide")
        ids = colour_refined_ids(probs, _as_tensor(guide, probs.device), lookup, minmax=minmax)
    elif upsample == "nearest" and probs.device.type == "cpu":
        ids = _nearest_ids(probs, size, lookup, minmax=minmax)
    elif _banded_applies(probs, size):
        ids = _banded_ids(probs, size, lookup, minmax=minmax, arithmetic=kernel_arithmetic())
    else:
        ids = _relabel(_upsampled_channels(probs, size, upsample=upsample, minmax=minmax), lookup)
    return ids.cpu().numpy()


def upsample_channel(probs: torch.Tensor, size: tuple[int, int], mode: Upsample) -> torch.Tensor:
    """``[h, w]`` float → ``[H, W]`` float32 (bilinear, half-pixel centres, or nearest)."""
    align = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(probs[None, None].float(), size=size, mode=mode, **align)[0, 0]


def _upsampled_channels(probs: torch.Tensor, size: tuple[int, int], *, upsample: Upsample, minmax: bool) -> torch.Tensor:
    """The reference output: ``[H, W] uint8`` winning channel of the upsampled (min-max normalised) probabilities.

    Full-resolution planes, one channel at a time: what the other paths
    reproduce bit for bit, and what runs where they do not apply (another
    device, tiny frames).
    """
    best = torch.empty(0)
    channel = torch.zeros(size, dtype=torch.uint8, device=probs.device)
    for index in range(probs.shape[0]):
        plane = upsample_channel(probs[index], size, upsample)
        if minmax:
            low, high = plane.min(), plane.max()
            plane = (plane - low) / (high - low).clamp_min(1e-12)
        if index == 0:
            best = plane
            continue
        better = plane > best
        best = torch.where(better, plane, best)
        channel.masked_fill_(better, index)
    return channel


def _relabel(channel: torch.Tensor, lookup: torch.Tensor) -> torch.Tensor:
    """``lookup[channel]`` for a ``[H, W] uint8`` map, a block of rows at a time: ``[H, W] uint8``.

    The indices are widened to int32 a block at a time, never as a full plane.
    """
    ids = torch.empty_like(channel)
    rows = max(1, POINT_BUDGET // max(1, channel.shape[1]))
    for source, target in zip(channel.split(rows), ids.split(rows)):
        target.copy_(lookup.index_select(0, source.flatten().int()).view_as(source))
    return ids


def _nearest_ids(probs: torch.Tensor, size: tuple[int, int], lookup: torch.Tensor, *, minmax: bool) -> torch.Tensor:
    """The reference output with ``upsample="nearest"``, decided on the patch grid: ``[H, W] uint8`` ids.

    Every pixel copies one grid value, so the winner is the grid point's,
    and the min and max run over the grid points that some pixel copies.
    """
    rows, columns = _nearest_sources(probs.shape[1], size[0]), _nearest_sources(probs.shape[2], size[1])
    values = probs.float()
    if minmax:
        sampled = values.index_select(1, rows.unique()).index_select(2, columns.unique()).flatten(1)
        low, high = sampled.amin(1)[:, None, None], sampled.amax(1)[:, None, None]
        values = (values - low) / (high - low).clamp_min(1e-12)
    grid_ids = lookup[_first_argmax(values).long()]
    return grid_ids.index_select(0, rows).index_select(1, columns)


@functools.lru_cache(maxsize=16)
def _nearest_sources(source: int, target: int) -> torch.Tensor:
    """The grid index each of ``target`` pixels copies in nearest upsampling, from the kernel itself: ``[target] int64``."""
    index = torch.arange(source, dtype=torch.float32)[None, None, :, None]
    return F.interpolate(index, size=(target, 1), mode="nearest")[0, 0, :, 0].long()


def _first_argmax(values: torch.Tensor) -> torch.Tensor:
    """Index of the largest of ``values`` ``[M, ...]`` along dim 0: ``[...] uint8``.

    Ties go to the lower index, and the comparisons are the reference's.
    """
    best = values[0]
    channel = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    for index in range(1, values.shape[0]):
        better = values[index] > best
        best = torch.where(better, values[index], best)
        channel.masked_fill_(better, index)
    return channel


# The band: the reference output, full-resolution values only where the winner is open.
#
# PyTorch's CPU kernel computes a bilinear pixel in two passes: along the
# row, t = combine(p[r, j0], b0, p[r, j1], b1) for the two grid rows r0, r1
# around the pixel, then combine(t0, a0, t1, a1) across them, where combine
# is ``t0 * w0 + t1 * w1`` rounded as the compiled kernel rounds it (on x86
# builds with FMA: ``fma(t0, w0, t1 * w1)``). The first pass is cheap and is
# taken from ``F.interpolate`` itself, to (h, W). Output rows between the
# same two grid rows form a row cell; a unit is one column of one row cell.
# A unit's values mix its two first-pass values by its rows' weights, give
# or take the rounding of the second pass (:func:`_bounds`), and
# normalising is monotone. So a unit whose lowest possible value for one
# channel beats every other channel's highest possible value is decided
# without computing a pixel. Only the other units' pixels are computed, with
# the kernel's arithmetic reproduced exactly, and in chunks.


@dataclass(frozen=True)
class Arithmetic:
    """How the CPU bilinear kernel of ``F.interpolate`` rounds in float32, found by :func:`kernel_arithmetic`.

    ``fused_index``: the source coordinate ``scale * (y + 0.5) - 0.5`` is one
    fused multiply-add. ``fused``: which product of ``t0 * w0 + t1 * w1`` is
    fused with the addition (0 or 1), or ``None`` when every step rounds.
    """

    fused_index: bool
    fused: int | None


@dataclass(frozen=True)
class _Rows:
    """Output rows grouped into row cells (runs of rows between the same two grid rows).

    ``top``, ``bottom``: ``[K] int64`` grid rows of each cell; ``start``,
    ``count``: ``[K] int64`` its first row and number of rows; ``cell``:
    ``[H] int64`` each row's cell; ``w_top``, ``w_bottom``: ``[H] float32``
    each row's weights (``w_top`` is ``1 - w_bottom``, rounded); ``w_range``:
    ``[2, K] float32``, the least and the largest ``w_bottom`` of each cell.
    """

    top: torch.Tensor
    bottom: torch.Tensor
    start: torch.Tensor
    count: torch.Tensor
    cell: torch.Tensor
    w_top: torch.Tensor
    w_bottom: torch.Tensor
    w_range: torch.Tensor


def _banded_applies(probs: torch.Tensor, size: tuple[int, int]) -> bool:
    """Whether :func:`_banded_ids` reproduces the reference here.

    It reproduces the generic CPU kernel, which ``F.interpolate`` runs
    unless output height plus width is at most 128 (for both its passes);
    the probe must have recognised the kernel's arithmetic, and the
    probabilities must be finite (its bounds assume so).
    """
    small = min(size[0], probs.shape[1]) + size[1] <= SMALL_OUTPUT
    return (
        probs.device.type == "cpu"
        and not small
        and kernel_arithmetic() is not None
        and bool(torch.isfinite(probs).all())
    )


def _banded_ids(
    probs: torch.Tensor, size: tuple[int, int], lookup: torch.Tensor, *, minmax: bool, arithmetic: Arithmetic
) -> torch.Tensor:
    """The reference output with ``upsample="bilinear"``, computed in the band only: ``[H, W] uint8`` ids.

    ``probs``: ``[M, h, w]`` float on the CPU. See the comment above
    :class:`Arithmetic` for how.
    """
    rows = _row_cells(probs.shape[1], size[0], arithmetic)
    across = F.interpolate(probs.float()[:, None], size=(probs.shape[1], size[1]), mode="bilinear", align_corners=False)
    top, bottom = across[:, 0].index_select(1, rows.top), across[:, 0].index_select(1, rows.bottom)  # [M, K, W]
    lower, upper = _bounds(top, bottom, rows)
    low, scale = _normaliser(top, bottom, lower, upper, rows, arithmetic) if minmax else (None, None)
    winner, open_units = _unit_winners(lower, upper, low, scale)
    ids = lookup[winner.long()].index_select(0, rows.cell)
    cells, columns = open_units.nonzero(as_tuple=True)
    for part in _chunks(_take(rows.count, cells), BAND_BUDGET // probs.shape[0]):
        unit, y = _unit_pixels(cells[part], rows)
        x = _take(columns[part], unit)
        units = _take(cells[part], unit) * size[1] + x
        values = _pixel_values(top.flatten(1).index_select(1, units), bottom.flatten(1).index_select(1, units),
                               rows, y, arithmetic)
        if minmax:
            values = (values - low[:, :, 0]) / scale[:, :, 0]
        ids.view(-1).index_copy_(0, y * size[1] + x, lookup.index_select(0, _first_argmax(values).long()))
    return ids


@functools.lru_cache(maxsize=16)
def _row_cells(source: int, target: int, arithmetic: Arithmetic) -> _Rows:
    """The grid rows, weights and row cells of ``target`` output rows from ``source`` grid rows, as the kernel has them."""
    if source == target:
        top = bottom = torch.arange(target)
        w_bottom = torch.zeros(target)
    else:
        scale = torch.tensor(source, dtype=torch.float32) / target
        centre = torch.arange(target, dtype=torch.float32) + 0.5
        if arithmetic.fused_index:  # exact in float64 (a product of two floats, plus 0.5), then rounded once
            real = (scale.double() * centre.double() - 0.5).float()
        else:
            real = scale * centre - 0.5
        real = real.clamp_min(0)
        top = real.floor().long().clamp_max(source - 1)
        w_bottom = (real - top).clamp(0, 1)
        bottom = top + (top < source - 1).long()
    _, cell, count = torch.unique_consecutive(top, return_inverse=True, return_counts=True)
    start = torch.cumsum(count, 0) - count
    ranges = [torch.zeros(len(count)).scatter_reduce(0, cell, w_bottom, reduce, include_self=False)
              for reduce in ("amin", "amax")]
    return _Rows(top[start], bottom[start], start, count, cell, 1 - w_bottom, w_bottom, torch.stack(ranges))


def _pixel_values(
    top: torch.Tensor, bottom: torch.Tensor, rows: _Rows, y: torch.Tensor, arithmetic: Arithmetic
) -> torch.Tensor:
    """The kernel's bilinear values at pixels in rows ``y`` ``[N] int64``: ``[M, N] float32``.

    ``top``, ``bottom``: ``[M, N] float32`` first-pass values of each pixel's
    two grid rows.
    """
    w_top, w_bottom = _take(rows.w_top, y), _take(rows.w_bottom, y)
    if arithmetic.fused is None:
        return top * w_top + bottom * w_bottom
    if arithmetic.fused == 1:
        top, w_top, bottom, w_bottom = bottom, w_bottom, top, w_top
    return _fma(top, w_top, bottom * w_bottom)


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to float32, as a fused multiply-add does: float32 in, float32 out.

    The product is exact in float64; the sum is rounded to odd in float64
    (TwoSum gives its exact error), after which rounding to float32 is
    correct (Boldo and Melquiond, "Emulation of FMA and correctly rounded
    sums", 2008).
    """
    product, addend = a.double() * b.double(), c.double()
    total = product + addend
    virtual = total - product
    error = (product - (total - virtual)) + (addend - virtual)
    even = (total.view(torch.int64) & 1) == 0
    away = torch.where(error > 0, torch.inf, -torch.inf).double()
    return torch.where((error != 0) & even, torch.nextafter(total, away), total).float()


def _unit_pixels(cells: torch.Tensor, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels of units in row cells ``cells`` ``[U] int64``: each pixel's unit and row, ``[N] int64`` each."""
    unit, row = _expand(_take(rows.count, cells))
    return unit, _take(_take(rows.start, cells), unit) + row


def _chunks(sizes: torch.Tensor, budget: int) -> list[slice]:
    """Consecutive slices of items with ``sizes`` ``[U] int64``, each of about ``budget`` in total (at least one item)."""
    ends = torch.cumsum(sizes, 0)
    group = torch.div(ends - sizes, max(1, budget), rounding_mode="floor")
    bounds = torch.cumsum(torch.unique_consecutive(group, return_counts=True)[1], 0).tolist()
    return [slice(begin, end) for begin, end in zip([0, *bounds[:-1]], bounds)]


def _bounds(top: torch.Tensor, bottom: torch.Tensor, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of the kernel's values in each unit: ``[..., K, W] float32`` each, like ``top``.

    A value is ``top + (bottom - top) * w`` with ``w`` the row's
    ``w_bottom``, up to rounding: its least and largest over the cell's range
    of ``w``, widened by what the kernel's roundings and these bounds' own
    can add (:data:`SLACK` of the magnitudes, :data:`TINY` below the normal
    range). Rounding is monotonic, and symmetric: the bounds of ``-top``,
    ``-bottom`` are these, negated and swapped.
    """
    low, high = rows.w_range[:, :, None]
    rise = bottom - top
    margin = (top.abs() + bottom.abs()) * SLACK + TINY
    rising = rise >= 0
    least, most = torch.where(rising, rise * low, rise * high), torch.where(rising, rise * high, rise * low)
    return top + least - margin, top + most + margin


def _normaliser(
    top: torch.Tensor, bottom: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, rows: _Rows, arithmetic: Arithmetic
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's min over the full-resolution plane and ``(max - min).clamp_min(1e-12)``: ``[M, 1, 1] float32`` each.

    ``top``, ``bottom``: ``[M, K, W]`` first-pass values; ``lower``,
    ``upper``: their :func:`_bounds`. Exact, from the units whose values
    could reach the extremes (see :func:`_maxima`).
    """
    largest = _maxima(torch.cat([top, -top]), torch.cat([bottom, -bottom]), torch.cat([lower, -upper]),
                      torch.cat([upper, -lower]), rows, arithmetic)
    high, low = largest.chunk(2)
    low = -low
    return low[:, None, None], (high - low).clamp_min(1e-12)[:, None, None]


def _maxima(
    top: torch.Tensor, bottom: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, rows: _Rows, arithmetic: Arithmetic
) -> torch.Tensor:
    """The largest value of each plane at full resolution, exactly: ``[P] float32``.

    ``top``, ``bottom``: ``[P, K, W]`` first-pass values of each unit's grid
    rows; ``lower``, ``upper``: their :func:`_bounds`. A unit's values grow
    with both first-pass values, so every unit of a cell is capped by a flat
    unit (both values equal) at the cell's largest first-pass value, and the
    flat units of one cell by the largest of them; both caps are computed on
    the cell's rows (:func:`_flat_maxima`). Where the flat units reach the
    cap, as on plateaus, that is the maximum. Elsewhere the other units that
    could beat both what the flat units reach and what some unit surely
    reaches are computed, each distinct triple of cell and first-pass values
    once. Rounding is symmetric, so the maxima of ``-top``, ``-bottom`` are
    the minima, negated.
    """
    planes, cells = top.shape[:2]
    reached = _flat_maxima(torch.where(top == bottom, top, -torch.inf).amax(2), rows, arithmetic).amax(1)
    ceiling = _flat_maxima(torch.maximum(top, bottom).amax(2), rows, arithmetic).amax(1)
    surely = lower.amax((1, 2))
    candidate = (top != bottom) & (upper >= surely[:, None, None]) & (upper > reached[:, None, None])
    plane, cell, column = (candidate & (reached < ceiling)[:, None, None]).nonzero(as_tuple=True)
    keys, first, second = _distinct(plane * cells + cell, top[plane, cell, column], bottom[plane, cell, column],
                                    planes * cells)
    largest = reached.clone()
    for part in _chunks(_take(rows.count, keys % cells), BAND_BUDGET):
        unit, y = _unit_pixels(keys[part] % cells, rows)
        values = _pixel_values(_take(first[part], unit)[None], _take(second[part], unit)[None], rows, y, arithmetic)[0]
        largest.scatter_reduce_(0, _take(keys[part] // cells, unit), values, "amax")
    return largest


def _flat_maxima(values: torch.Tensor, rows: _Rows, arithmetic: Arithmetic) -> torch.Tensor:
    """The largest value, over each cell's rows, of a unit whose two first-pass values are both ``values``.

    ``values``: ``[P, K] float32``, ``-inf`` for none. Returns ``[P, K] float32``.
    """
    present = values[:, rows.cell] > -torch.inf  # [P, H]
    flat = torch.where(present, values[:, rows.cell], 0)
    computed = _pixel_values(flat, flat, rows, torch.arange(len(rows.cell)), arithmetic)
    cell = rows.cell.expand_as(computed)
    return torch.full_like(values, -torch.inf).scatter_reduce(1, cell, torch.where(present, computed, -torch.inf), "amax")


def _distinct(
    cells: torch.Tensor, first: torch.Tensor, second: torch.Tensor, num_cells: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct triples among ``[N]`` keys (int64, below ``num_cells``) and value pairs (float32, bit for bit)."""
    pairs = (first.view(torch.int32).long() << 32) | (second.view(torch.int32).long() & 0xFFFFFFFF)
    _, pair = torch.unique(pairs, return_inverse=True)
    distinct = torch.unique(pair * num_cells + cells)
    sample = torch.empty(len(pairs), dtype=torch.long).scatter_(0, pair, torch.arange(len(pairs)))
    sample = sample[torch.div(distinct, num_cells, rounding_mode="floor")]
    return distinct % num_cells, first[sample], second[sample]


def _unit_winners(
    lower: torch.Tensor, upper: torch.Tensor, low: torch.Tensor | None, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's winning channel where it is decided, and which units are open: ``[K, W] uint8``, ``[K, W] bool``.

    ``lower``, ``upper``: ``[M, K, W]`` bounds of the units' values
    (:func:`_bounds`); ``low``, ``scale``: the normalisation (``None``:
    none), monotonic. A unit is decided when one channel's lowest possible
    value beats every other's highest.
    """
    if low is not None:
        upper, lower = (upper - low) / scale, (lower - low) / scale
    best, winner = lower.max(0)
    rival = upper.scatter(0, winner[None], -torch.inf).amax(0)
    return winner.to(torch.uint8), ~(best > rival)


@functools.cache
def kernel_arithmetic() -> Arithmetic | None:
    """The :class:`Arithmetic` that reproduces ``F.interpolate`` bilinear on this CPU, or ``None``.

    Probed once per process on random planes: each candidate computes
    every pixel the way the band does, and the first that equals the
    kernel's output bit for bit is used.
    """
    generator = torch.Generator().manual_seed(0)
    probe = torch.rand(PROBE_CHANNELS, *PROBE_GRID, generator=generator) ** 3
    expected = F.interpolate(probe[:, None], size=PROBE_SIZE, mode="bilinear", align_corners=False)[:, 0]
    for arithmetic in (Arithmetic(True, 0), Arithmetic(True, 1), Arithmetic(False, None), Arithmetic(True, None),
                       Arithmetic(False, 0), Arithmetic(False, 1)):
        if torch.equal(_full_plane(probe, PROBE_SIZE, arithmetic), expected):
            return arithmetic
    return None


def _full_plane(probs: torch.Tensor, size: tuple[int, int], arithmetic: Arithmetic) -> torch.Tensor:
    """Every pixel of ``probs`` ``[M, h, w]`` upsampled the way the band computes them: ``[M, H, W] float32``."""
    rows = _row_cells(probs.shape[1], size[0], arithmetic)
    across = F.interpolate(probs.float()[:, None], size=(probs.shape[1], size[1]), mode="bilinear",
                           align_corners=False)[:, 0]
    y = torch.arange(size[0])
    return _pixel_values(across[:, rows.top[rows.cell]].flatten(1), across[:, rows.bottom[rows.cell]].flatten(1),
                         rows, y.repeat_interleave(size[1]), arithmetic).view(-1, *size)


def colour_refined_ids(
    probs: torch.Tensor, guide: torch.Tensor, lookup: torch.Tensor, *, minmax: bool = True
) -> torch.Tensor:
    """Label map with colour refinement (see the module docstring): ``[H, W] uint8`` ids.

    ``probs``: ``[M, h, w]`` float; ``guide``: ``[H, W, 3] uint8`` on the same
    device; ``lookup``: ``[M] uint8`` the id of each channel. With
    ``minmax``, each channel is normalised by its min and max over the patch
    grid, in the log domain (see :func:`log_minmax`).

    Every pixel first takes its cell's most probable label (nearest
    upsampling of the cell grid); then the pixels of contested cells (see
    :func:`contested_cells`) are scored, a run of rows at a time (see :class:`_Runs`).
    """
    size = tuple(guide.shape[:2])
    probs = log_minmax(probs) if minmax else probs.float()
    layout = _colour_layout(tuple(probs.shape[1:]), size, probs.device)
    cell_probs = F.interpolate(probs[None], size=layout.cells, mode="bilinear", align_corners=False)[0]
    models = _Grid(colour_models(cell_probs, cell_colours(guide, layout.cells)).flatten(0, 1), *layout.cell_grid)
    priors = _Grid(probs, *layout.patch_grid)
    ids = lookup[cell_probs.max(0).indices].index_select(1, layout.columns).index_select(0, layout.rows)
    contested = contested_cells(cell_probs).nonzero()
    for part in contested.split(max(1, POINT_BUDGET // (probs.shape[0] * layout.pixels_per_cell))):
        y, x = layout.pixels(part)
        pixels = (y * size[1] + x).flatten()
        channel = _block_channels(models, priors, guide.reshape(-1, 3), y, x, pixels)
        ids.view(-1).index_copy_(0, pixels, lookup.index_select(0, channel.flatten().int()))
    return ids


@dataclass(frozen=True)
class _ColourLayout:
    """What colour refinement needs that depends only on the grid and frame sizes (cached per size).

    ``cells``: the cell grid ``(ch, cw)``; ``rows``, ``columns``: ``[H]``,
    ``[W] int64`` the cell of each pixel row and column under nearest
    upsampling; ``cell_grid``, ``patch_grid``: where each pixel row and
    column reads the cell grid and the patch grid (:func:`_axis_neighbours`);
    ``runs``: the cells' pixel rows in runs (:class:`_Runs`);
    ``cell_columns``: ``[cw, S] int64`` the pixel columns of each cell
    column, the last repeated to the widest's count.
    """

    cells: tuple[int, int]
    rows: torch.Tensor
    columns: torch.Tensor
    cell_grid: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]
    patch_grid: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]
    runs: _Runs
    cell_columns: torch.Tensor

    @property
    def pixels_per_cell(self) -> int:
        """Pixels computed for one cell, padding included."""
        return self.runs.of_cell.shape[1] * self.runs.size * self.cell_columns.shape[1]

    def pixels(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pixels of ``cells`` ``[C, 2] int64``: rows ``[R, X]`` (one run per column) and columns ``[X]``, int64.

        A cell's pixels are each of its runs by each of its columns; padding
        repeats some, which then are computed, and written, twice.
        """
        runs = self.runs.of_cell.index_select(0, cells[:, 0])[:, :, None]  # [C, runs, 1]
        columns = self.cell_columns.index_select(0, cells[:, 1])[:, None, :]  # [C, 1, S]
        shape = (len(cells), runs.shape[1], columns.shape[2])
        return self.runs.pixels(runs.expand(shape).flatten()), columns.expand(shape).flatten()


@functools.lru_cache(maxsize=8)
def _colour_layout(grid: tuple[int, int], size: tuple[int, int], device: torch.device) -> _ColourLayout:
    cells = (min(size[0], CELLS_PER_PATCH * grid[0]), min(size[1], CELLS_PER_PATCH * grid[1]))
    rows, columns = (_nearest_sources(n, target).to(device) for n, target in zip(cells, size))
    cell_grid, patch_grid = (tuple(_axis_neighbours(n, target, device) for n, target in zip(shape, size))
                             for shape in (cells, grid))
    runs = _Runs.of(rows, cells[0], (cell_grid[0][0], patch_grid[0][0]))
    count = torch.bincount(columns, minlength=cells[1])
    return _ColourLayout(cells, rows, columns, cell_grid, patch_grid, runs, _padded_spans(count))


def _padded_spans(count: torch.Tensor) -> torch.Tensor:
    """``[N, max(count)] int64``: row ``i`` holds the ``count[i]`` consecutive indices of item ``i``, the last repeated.

    ``count``: ``[N] int64``, items laid out one after another.
    """
    steps = torch.arange(int(count.max()), device=count.device)
    return (torch.cumsum(count, 0) - count)[:, None] + torch.minimum(steps, (count - 1).clamp_min(0)[:, None])


@dataclass(frozen=True)
class _Runs:
    """The pixel rows of each cell row, in runs that lie between the same two grid rows of every grid.

    Bilinear interpolation then shares its inner (horizontal) lerps across a
    run's rows. ``start``, ``count``: ``[G] int64`` first pixel row and
    length of each run; ``of_cell``: ``[ch, n] int64`` the runs of each cell
    row, the last repeated to the most any has; ``size``: runs longer than
    the usual (median) length are split, and shorter ones are padded to it
    by repeating their last row.
    """

    start: torch.Tensor
    count: torch.Tensor
    of_cell: torch.Tensor
    size: int

    @classmethod
    def of(cls, cell: torch.Tensor, cells: int, before: tuple[torch.Tensor, ...]) -> _Runs:
        """From each pixel row's cell row (``[H] int64``, ascending) and the grid row before it on each grid."""
        new = torch.zeros_like(cell, dtype=torch.bool)
        new[0] = True
        for key in (cell, *before):
            new[1:] |= key[1:] != key[:-1]
        start = new.nonzero()[:, 0]
        count = torch.diff(start, append=start.new_tensor([len(cell)]))
        size = int(count.median())  # longer runs (at the borders, where positions clamp) become several
        pieces = torch.div(count + size - 1, size, rounding_mode="floor")
        run, piece = _expand(pieces)
        start, count = start[run] + piece * size, torch.minimum(count[run] - piece * size, count.new_tensor(size))
        return cls(start, count, _padded_spans(torch.bincount(cell[start], minlength=cells)), size)

    def pixels(self, runs: torch.Tensor) -> torch.Tensor:
        """``[size, G] int64``: the pixel rows of ``runs`` down each column, repeating each run's last."""
        steps = torch.arange(self.size, device=runs.device)[:, None]
        return _take(self.start, runs) + torch.minimum(steps, _take(self.count, runs) - 1)


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For items with ``counts`` ``[N] int64``: the item of each of their parts, and the part's rank in it."""
    item = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    return item, torch.arange(len(item), device=counts.device) - _take(torch.cumsum(counts, 0) - counts, item)


@dataclass(frozen=True)
class _Grid:
    """Planes on a grid ``[P, gh, gw]`` float32, with where each output row and column reads them.

    ``rows``: grid rows before and after each pixel row and the weight of
    the one after, ``[H]`` each (:func:`_axis_neighbours`); ``columns``
    likewise, ``[W]``.
    """

    planes: torch.Tensor
    rows: tuple[torch.Tensor, ...]
    columns: tuple[torch.Tensor, ...]

    def at(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The planes upsampled bilinearly (half-pixel centres) at pixels ``(y, x)``: ``[P, R, X]``.

        ``y``: ``[R, X]`` rows of one :class:`_Runs` run per column, ``x``:
        ``[X]`` int64 columns. Computed as ``lerp(lerp(ul, ur, across),
        lerp(ll, lr, across), down)`` from each pixel's four grid neighbours,
        as :func:`_axis_neighbours` places them; a run's rows share the inner lerps.
        """
        top, bottom, down = _take(self.rows[0], y[0]), _take(self.rows[1], y[0]), _take(self.rows[2], y)
        left, right, across = (_take(t, x) for t in self.columns)
        flat, width = self.planes.flatten(1), self.planes.shape[2]
        upper, lower = (
            torch.lerp(flat.index_select(1, row * width + left), flat.index_select(1, row * width + right), across)
            for row in (top, bottom)
        )  # [P, X]
        return torch.lerp(upper[:, None], lower[:, None], down)


def _block_channels(models: _Grid, probs: _Grid, colours: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                    pixels: torch.Tensor) -> torch.Tensor:
    """Winning channel of pixels ``(y, x)`` (rows ``[R, X]`` of runs, columns ``[X]``): ``[R, X] uint8``.

    ``models``: :func:`colour_models` flattened to ``[M * 5, ch, cw]``;
    ``probs``: ``[M, h, w]``; ``colours``: the frame as ``[H * W, 3] uint8``;
    ``pixels``: the same pixels as flat indices, ``[R * X] int64``.
    """
    colour = colours.index_select(0, pixels).T.float().div_(255).view(3, *y.shape)  # [3, R, X]
    model = models.at(y, x).unflatten(0, (-1, 5))  # [M, 5, R, X]
    squares = (colour - model[:, :3]).square_()
    distance = squares[:, 0] + squares[:, 1] + squares[:, 2]  # [M, R, X], summed in the order sum(1) takes
    log_likelihood = model[:, 4] - distance * model[:, 3]
    prior = probs.at(y, x).clamp_min_(PROBABILITY_FLOOR).log_()
    return _first_argmax(prior + COLOUR_WEIGHT * log_likelihood)


def _take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-d ``table``, by ``index_select`` (several times faster than indexing): ``index``'s shape."""
    return table.index_select(0, index.flatten()).view_as(index)


def log_minmax(probs: torch.Tensor) -> torch.Tensor:
    """Each channel's log-probabilities mapped linearly onto ``[log floor, 0]``: ``[M, h, w]`` float32.

    ``floor`` is :data:`PROBABILITY_FLOOR`. Like the reference's min-max
    normalisation, it lifts a label whose probabilities stay low everywhere
    (a thin or fading object), but it also stretches the label's low values,
    which the oracle evaluation measured to hold thin objects better on
    imperfect features. A constant channel becomes ``floor``, as the
    reference's turns to 0.
    """
    logs = probs.float().clamp_min(PROBABILITY_FLOOR).log()
    low = logs.amin((1, 2), keepdim=True)
    spread = (logs - low) / (logs.amax((1, 2), keepdim=True) - low).clamp_min(1e-12)
    return PROBABILITY_FLOOR ** (1 - spread)


def contested_cells(cell_probs: torch.Tensor) -> torch.Tensor:
    """``[ch, cw] bool``: cells where two labels or more reach :data:`CONTESTED`, in the cell or next to it.

    Elsewhere one label holds every pixel: the others' probabilities are too
    small for their colour models (which there are the window's overall
    colours) to win.
    """
    probable_nearby = _box_mean((cell_probs >= CONTESTED).float(), 1) > 0
    return probable_nearby.sum(0) >= 2


def cell_colours(guide: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """Mean colour of each cell, RGB in [0, 1]: ``[3, ch, cw]`` float32 on the guide's device.

    ``guide``: ``[H, W, 3] uint8``. Bit for bit what
    ``F.adaptive_avg_pool2d`` gives on the frame as float (whose windows
    ``[floor(i H / ch), ceil((i + 1) H / ch))`` may overlap by a pixel, and
    which divides each window's sum by its height, then by its width), from
    exact integer sums: integral images of bands of cell rows, so memory
    stays bounded at 4K.
    """
    import cv2  # deferred: the paper path does not need it

    frame = guide.cpu().contiguous().numpy()
    (row_start, row_end), (column_start, column_end) = (_pool_windows(n, c) for n, c in zip(frame.shape[:2], cells))
    band = max(1, POOL_PIXELS // (frame.shape[1] * max(1, int((row_end - row_start).max()))))
    sums = []
    for first in range(0, cells[0], band):
        start, end = row_start[first : first + band], row_end[first : first + band]
        integral = cv2.integral(frame[start[0] : end[-1]])
        rows = np.take(integral, end - start[0], 0) - np.take(integral, start - start[0], 0)
        sums.append(np.take(rows, column_end, 1) - np.take(rows, column_start, 1))
    heights = (row_end - row_start).astype(np.float32)[:, None, None]
    widths = (column_end - column_start).astype(np.float32)[None, :, None]
    means = torch.from_numpy(np.concatenate(sums).astype(np.float32) / heights / widths)
    return (means / 255).permute(2, 0, 1).to(guide.device)


def _pool_windows(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """First and past-the-end index of each of ``cells`` adaptive pooling windows over ``size``: ``[cells] int64`` each."""
    index = np.arange(cells)
    return index * size // cells, ((index + 1) * size + cells - 1) // cells


def colour_models(cell_probs: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Each label's local colour model on the cell grid: ``[M, 5, ch, cw]`` float32.

    ``cell_probs``: ``[M, ch, cw]`` probabilities on the cell grid;
    ``colours``: ``[3, ch, cw]`` the cells' mean colours (:func:`cell_colours`).
    Over a window of one patch, each cell weighted by the label's
    probability to the power :data:`SUPPORT_POWER`, the colours have a mean
    and a variance ``v`` per component. Channels 0-2 hold the mean, channel
    3 ``1 / (2 v)`` and channel 4 ``-1.5 log v``, so that a colour's
    log-likelihood is ``-|colour - mean|² * c3 + c4`` (up to a constant).
    """
    support = cell_probs.clamp(0, 1) ** SUPPORT_POWER + SUPPORT_FLOOR
    weighted = torch.cat([support, support * (colours * colours).sum(0), *(support * colour for colour in colours)])
    sums = _box_mean(weighted, CELLS_PER_PATCH).unflatten(0, (5, -1))  # [5, M, ch, cw]
    mean = sums[2:] / sums[0]
    variance = ((sums[1] / sums[0] - (mean * mean).sum(0)) / 3).clamp_min(0) + VARIANCE_FLOOR
    return torch.cat([mean, (0.5 / variance)[None], (-1.5 * variance.log())[None]]).transpose(0, 1)


@functools.lru_cache(maxsize=16)
def _axis_neighbours(source: int, target: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``target`` pixels along an axis of ``source`` grid points: the grid indices before and after its
    centre (``[target] int64``) and the weight of the one after (``[target] float32``), for bilinear upsampling."""
    position = ((torch.arange(target, device=device) + 0.5) * (source / target) - 0.5).clamp_min(0)
    before = position.floor().long().clamp_max(source - 1)
    return before, (before + 1).clamp_max(source - 1), position - before


def _box_mean(planes: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2 radius + 1)``-square window, borders averaged over what is inside: ``[C, h, w]``.

    Differences of running sums along each axis, so the cost does not grow
    with ``radius``.
    """
    for dim in (1, 2):
        length = planes.shape[dim]
        index = torch.arange(length, device=planes.device)
        count = (index + radius).clamp_max(length - 1) - (index - radius).clamp_min(0) + 1
        count = count.to(planes.dtype).view(_along(dim, length, (1, 1, 1)))
        planes = _window_sums(planes.cumsum(dim), dim, radius) / count
    return planes


def _window_sums(sums: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """``sums[min(i + radius, n - 1)] - sums[i - radius - 1]`` (nothing subtracted when ``i <= radius``) along ``dim``.

    Slice by slice: the running sums are neither padded nor copied.
    """
    length = sums.shape[dim]
    window = torch.empty_like(sums)
    cuts = sorted({0, length, *(min(max(cut, 0), length) for cut in (radius + 1, length - radius))})
    for begin, end in zip(cuts, cuts[1:]):
        part = window.narrow(dim, begin, end - begin)
        if end + radius <= length:
            upper = sums.narrow(dim, begin + radius, end - begin)
        else:
            upper = sums.narrow(dim, length - 1, 1).expand_as(part)
        if begin > radius:
            torch.sub(upper, sums.narrow(dim, begin - radius - 1, end - begin), out=part)
        else:
            part.copy_(upper)
    return window


def _along(dim: int, length: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with ``length`` at ``dim``."""
    return tuple(length if axis == dim else size for axis, size in enumerate(shape))


def _as_tensor(guide: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(guide, np.ndarray):
        guide = torch.from_numpy(np.ascontiguousarray(guide))
    return guide.to(device)
