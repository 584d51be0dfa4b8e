"""dinotrack/refine.py as it was before the band (commit d7c8d77), kept as the reference.

The paper path upsamples every channel to a full-resolution float plane; the
colour path scores every pixel of the contested cells one by one, with its
bilinear lookups and ``adaptive_avg_pool2d`` colours. Slow and memory hungry
on purpose: dinotrack's label maps must equal these bit for bit. The tuned
constants and ``log_minmax`` are dinotrack's own, so that retuning moves both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dinotrack.refine import (
    CELLS_PER_PATCH,
    COLOUR_WEIGHT,
    CONTESTED,
    PROBABILITY_FLOOR,
    SUPPORT_FLOOR,
    SUPPORT_POWER,
    VARIANCE_FLOOR,
    log_minmax,
)


def reference_ids(probs: torch.Tensor, labels: list[int], size: tuple[int, int], *, upsample: str = "bilinear",
                  minmax: bool = True) -> np.ndarray:
    """The paper path: each channel upsampled to ``size`` in full, min-max normalised, argmax. ``[H, W] uint8``."""
    best = torch.empty(0)
    channel = torch.zeros(size, dtype=torch.long)
    for index in range(probs.shape[0]):
        align = {"align_corners": False} if upsample == "bilinear" else {}
        plane = F.interpolate(probs[index][None, None].float(), size=size, mode=upsample, **align)[0, 0]
        if minmax:
            low, high = plane.min(), plane.max()
            plane = (plane - low) / (high - low).clamp_min(1e-12)
        if index == 0:
            best = plane
            continue
        better = plane > best
        best = torch.where(better, plane, best)
        channel.masked_fill_(better, index)
    return np.asarray(labels, dtype=np.uint8)[channel.numpy()]


def reference_colour_ids(probs: torch.Tensor, labels: list[int], guide: np.ndarray, *, minmax: bool = True) -> np.ndarray:
    """Colour refinement, every contested pixel scored on its own. ``guide``: ``[H, W, 3] uint8``; ``[H, W] uint8``."""
    frame = torch.from_numpy(np.ascontiguousarray(guide))
    size = frame.shape[:2]
    probs = log_minmax(probs) if minmax else probs.float()
    cells = (min(size[0], CELLS_PER_PATCH * probs.shape[1]), min(size[1], CELLS_PER_PATCH * probs.shape[2]))
    cell_probs = F.interpolate(probs[None], size=cells, mode="bilinear", align_corners=False)[0]
    models = _colour_models(cell_probs, frame).flatten(0, 1)
    contested = _box_mean((cell_probs >= CONTESTED).float(), 1).gt(0).sum(0) >= 2
    winner = cell_probs.max(0).indices.masked_fill_(contested, -1)
    channel = F.interpolate(winner[None, None].float(), size=size, mode="nearest")[0, 0].long()
    pixels = (channel.view(-1) < 0).nonzero()[:, 0]
    channel.view(-1)[pixels] = _point_channels(probs, models, frame, pixels)
    return np.asarray(labels, dtype=np.uint8)[channel.numpy()]


def _colour_models(cell_probs: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    cells = cell_probs.shape[1:]
    colours = torch.stack([F.adaptive_avg_pool2d(frame[None, :, :, k].float(), cells)[0] for k in range(3)]) / 255
    support = cell_probs.clamp(0, 1) ** SUPPORT_POWER + SUPPORT_FLOOR
    weighted = torch.cat([support, support * (colours * colours).sum(0), *(support * colour for colour in colours)])
    sums = _box_mean(weighted, CELLS_PER_PATCH).unflatten(0, (5, -1))
    mean = sums[2:] / sums[0]
    variance = ((sums[1] / sums[0] - (mean * mean).sum(0)) / 3).clamp_min(0) + VARIANCE_FLOOR
    return torch.cat([mean, (0.5 / variance)[None], (-1.5 * variance.log())[None]]).transpose(0, 1)


def _point_channels(probs: torch.Tensor, models: torch.Tensor, frame: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    size = frame.shape[:2]
    ys, xs = pixels // size[1], pixels % size[1]
    colours = frame[ys, xs].T.float() / 255
    model = _bilinear_at(models, ys, xs, size).unflatten(0, (-1, 5))
    distance = (colours - model[:, :3]).square_().sum(1)
    log_likelihood = model[:, 4] - distance * model[:, 3]
    prior = _bilinear_at(probs, ys, xs, size).clamp_min_(PROBABILITY_FLOOR).log_()
    return (prior + COLOUR_WEIGHT * log_likelihood).max(0).indices


def _bilinear_at(grid: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    width = grid.shape[2]
    top, bottom, down = _neighbours(ys, grid.shape[1], size[0])
    left, right, across = _neighbours(xs, width, size[1])
    flat = grid.flatten(1)
    upper_left, upper_right, lower_left, lower_right = (
        flat[:, row * width + column] for row, column in ((top, left), (top, right), (bottom, left), (bottom, right))
    )
    return torch.lerp(torch.lerp(upper_left, upper_right, across), torch.lerp(lower_left, lower_right, across), down)


def _neighbours(pixels: torch.Tensor, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    position = ((pixels + 0.5) * (source / target) - 0.5).clamp_min(0)
    before = position.floor().long().clamp_max(source - 1)
    return before, (before + 1).clamp_max(source - 1), position - before


def _box_mean(planes: torch.Tensor, radius: int) -> torch.Tensor:
    for dim in (1, 2):
        length = planes.shape[dim]
        sums = planes.cumsum(dim)
        shape = list(sums.shape)
        before = torch.zeros(*shape[:dim], radius + 1, *shape[dim + 1:])
        after = sums.narrow(dim, length - 1, 1).expand(*shape[:dim], radius, *shape[dim + 1:])
        padded = torch.cat([before, sums, after], dim)
        index = torch.arange(length)
        count = (index + radius).clamp_max(length - 1) - (index - radius).clamp_min(0) + 1
        window = padded.narrow(dim, 2 * radius + 1, length) - padded.narrow(dim, 0, length)
        planes = window / count.view([length if axis == dim else 1 for axis in range(3)])
    return planes
