"""From patch probabilities to a full-resolution label map (ALGORITHM.md §5).

``refine="none"`` is the reference: upsample each label's probabilities to
the frame size, normalise each by its own min and max over the frame, take
the argmax, and map channels back to object ids. Channels are handled one at
a time, so a 4K frame costs a few full-resolution float planes, whatever the
number of objects.

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
CONTESTED_CELL = 255
"""Marks contested cells in the map of cell winners (channels are 0..M-1, M <= 255)."""
POINT_BUDGET = 1 << 18
"""Pixels times labels scored at once (each needs about 100 bytes of work space)."""


def upsample_channel(probs: torch.Tensor, size: tuple[int, int], mode: Upsample) -> torch.Tensor:
    """``[h, w]`` float → ``[H, W]`` float32 (bilinear, half-pixel centres, or nearest)."""
    align = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(probs[None, None].float(), size=size, mode=mode, **align)[0, 0]


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
    if refine == "colour":
        if guide is None or tuple(guide.shape) != (*size, 3):
            raise ValueError(f"refine='colour' needs the frame, [{size[0]}, {size[1]}, 3] uint8, as guide")
        channel = colour_refined_channels(probs, _as_tensor(guide, probs.device), minmax=minmax)
    else:
        channel = _upsampled_channels(probs, size, upsample=upsample, minmax=minmax)
    lookup = torch.tensor(labels, dtype=torch.uint8, device=probs.device)
    return lookup[channel.long()].cpu().numpy()


def _upsampled_channels(probs: torch.Tensor, size: tuple[int, int], *, upsample: Upsample, minmax: bool) -> torch.Tensor:
    """The reference output: ``[H, W] uint8`` winning channel of the upsampled (min-max normalised) probabilities."""
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


def colour_refined_channels(probs: torch.Tensor, guide: torch.Tensor, *, minmax: bool = True) -> torch.Tensor:
    """Winning channel per pixel with colour refinement (see the module docstring).

    ``probs``: ``[M, h, w]`` float; ``guide``: ``[H, W, 3] uint8`` on the same
    device. With ``minmax``, each channel is normalised by its min and max
    over the patch grid, in the log domain (see :func:`log_minmax`). Returns
    ``[H, W] uint8``.

    Only pixels of contested cells (see :func:`contested_cells`) are scored;
    every other pixel takes its cell's only probable label.
    """
    size = guide.shape[:2]
    probs = log_minmax(probs) if minmax else probs.float()
    cells = (min(size[0], CELLS_PER_PATCH * probs.shape[1]), min(size[1], CELLS_PER_PATCH * probs.shape[2]))
    cell_probs = F.interpolate(probs[None], size=cells, mode="bilinear", align_corners=False)[0]
    models = colour_models(cell_probs, guide).flatten(0, 1)
    winner = cell_probs.max(0).indices.to(torch.uint8).masked_fill_(contested_cells(cell_probs), CONTESTED_CELL)
    channel = F.interpolate(winner[None, None], size=size, mode="nearest")[0, 0]
    pixels = (channel.view(-1) == CONTESTED_CELL).nonzero()[:, 0]
    chunk = max(1 << 12, POINT_BUDGET // probs.shape[0])
    for part in pixels.split(chunk):
        channel.view(-1)[part] = _point_channels(probs, models, guide, part)
    return channel


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


def colour_models(cell_probs: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Each label's local colour model on the cell grid: ``[M, 5, ch, cw]`` float32.

    ``cell_probs``: ``[M, ch, cw]`` probabilities on the cell grid. Over a
    window of one patch, each cell weighted by the label's probability to the
    power :data:`SUPPORT_POWER`, the colours (RGB in [0, 1]) have a mean and
    a variance ``v`` per component. Channels 0-2 hold the mean, channel 3
    ``1 / (2 v)`` and channel 4 ``-1.5 log v``, so that a colour's
    log-likelihood is ``-|colour - mean|² * c3 + c4`` (up to a constant).
    """
    cells = cell_probs.shape[1:]
    colours = torch.stack([F.adaptive_avg_pool2d(guide[None, :, :, k].float(), cells)[0] for k in range(3)]) / 255
    support = cell_probs.clamp(0, 1) ** SUPPORT_POWER + SUPPORT_FLOOR
    weighted = torch.cat([support, support * (colours * colours).sum(0), *(support * colour for colour in colours)])
    sums = _box_mean(weighted, CELLS_PER_PATCH).unflatten(0, (5, -1))  # [5, M, ch, cw]
    mean = sums[2:] / sums[0]
    variance = ((sums[1] / sums[0] - (mean * mean).sum(0)) / 3).clamp_min(0) + VARIANCE_FLOOR
    return torch.cat([mean, (0.5 / variance)[None], (-1.5 * variance.log())[None]]).transpose(0, 1)


def _point_channels(probs: torch.Tensor, models: torch.Tensor, guide: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Winning channel of the pixels at flat indices ``pixels`` ``[N] int64``: ``[N] uint8``.

    ``models``: :func:`colour_models` flattened to ``[M * 5, ch, cw]``.
    """
    size = guide.shape[:2]
    ys, xs = pixels // size[1], pixels % size[1]
    colours = guide[ys, xs].T.float() / 255  # [3, N]
    model = _bilinear_at(models, ys, xs, size).unflatten(0, (-1, 5))  # [M, 5, N]
    distance = (colours - model[:, :3]).square_().sum(1)  # [M, N]
    log_likelihood = model[:, 4] - distance * model[:, 3]
    prior = _bilinear_at(probs, ys, xs, size).clamp_min_(PROBABILITY_FLOOR).log_()
    return (prior + COLOUR_WEIGHT * log_likelihood).max(0).indices.to(torch.uint8)


def _bilinear_at(grid: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``grid`` ``[C, h, w]`` upsampled bilinearly to ``size`` (half-pixel centres), read at pixels ``(ys, xs)``: ``[C, N]``."""
    width = grid.shape[2]
    top, bottom, down = _neighbours(ys, grid.shape[1], size[0])
    left, right, across = _neighbours(xs, width, size[1])
    flat = grid.flatten(1)
    corners = flat.index_select(1, torch.cat([top * width + left, top * width + right, bottom * width + left, bottom * width + right]))
    upper_left, upper_right, lower_left, lower_right = corners.chunk(4, dim=1)
    return torch.lerp(torch.lerp(upper_left, upper_right, across), torch.lerp(lower_left, lower_right, across), down)


def _neighbours(pixels: torch.Tensor, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid indices before and after each pixel's centre along one axis, and the weight of the one after."""
    position = ((pixels + 0.5) * (source / target) - 0.5).clamp_min(0)
    before = position.floor().long().clamp_max(source - 1)
    return before, (before + 1).clamp_max(source - 1), position - before


def _box_mean(planes: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2 radius + 1)``-square window, borders averaged over what is inside: ``[C, h, w]``.

    Differences of running sums along each axis, so the cost does not grow
    with ``radius``.
    """
    for dim in (1, 2):
        length = planes.shape[dim]
        sums = planes.cumsum(dim)
        before = torch.zeros_like(sums.narrow(dim, 0, 1)).expand(*_along(dim, radius + 1, sums.shape))
        after = sums.narrow(dim, length - 1, 1).expand(*_along(dim, radius, sums.shape))
        padded = torch.cat([before, sums, after], dim)
        index = torch.arange(length, device=planes.device)
        count = (index + radius).clamp_max(length - 1) - (index - radius).clamp_min(0) + 1
        window = padded.narrow(dim, 2 * radius + 1, length) - padded.narrow(dim, 0, length)
        planes = window / count.view(_along(dim, length, (1, 1, 1)))
    return planes


def _along(dim: int, length: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with ``length`` at ``dim``."""
    return tuple(length if axis == dim else size for axis, size in enumerate(shape))


def _as_tensor(guide: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(guide, np.ndarray):
        guide = torch.from_numpy(np.ascontiguousarray(guide))
    return guide.to(device)
