"""From patch probabilities to a full-resolution label map (ALGORITHM.md §5).

Upsample each label's probabilities to the frame size, normalise each by its
own min and max over the frame, take the argmax, and map channels back to
object ids. Channels are handled one at a time, so a 4K frame costs a few
full-resolution float planes, whatever the number of objects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dinotrack.structs import Upsample


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
) -> np.ndarray:
    """Label map of a frame from its patch probabilities.

    ``probs``: ``[M, h, w]`` float; channel ``c`` is object id ``labels[c]``.
    Returns ``[H, W] uint8`` ids on the CPU. Ties go to the lower channel, as
    ``argmax`` does.
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
    lookup = torch.tensor(labels, dtype=torch.uint8, device=probs.device)
    return lookup[channel.long()].cpu().numpy()
