"""Fusing the forward and the backward probability maps of a frame between two keyframes.

Each side comes with its own label channels (a forward pass knows the ids
of the keyframes before the frame, a backward pass those after it): both are
laid out on the union of their ids first, an id a side does not know having
probability 0 there. Then, per patch,

    fused = (w_f * p_f + w_b * p_b) / (w_f + w_b)

with ``w`` each side's share by temporal distance (``distance``: the nearer
keyframe counts more, :meth:`~dinotrack.schedule.FramePlan.distance_weights`),
or that share times each side's confidence in the patch, its margin between
the two most likely labels (``confidence``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dinotrack.structs import Fusion

MARGIN_FLOOR = 1e-3
"""Smallest confidence weight of a side, so that a patch where both sides hesitate still averages them."""


@dataclass(frozen=True)
class Side:
    """One pass's prediction of a frame: ``probs`` ``[M, h, w]`` float32, channel ``c`` = id ``labels[c]``,
    and ``weight``, its share by temporal distance."""

    probs: torch.Tensor
    labels: Sequence[int]
    weight: float


def union_labels(*sides: Side) -> list[int]:
    """Every side's ids, background first, in the order the sides give them."""
    union: list[int] = []
    for side in sides:
        union += [label for label in side.labels if label not in union]
    return union


def on_labels(side: Side, labels: Sequence[int]) -> torch.Tensor:
    """``side.probs`` laid out on ``labels``: ``[len(labels), h, w]``, zero for ids the side lacks."""
    if list(side.labels) == list(labels):
        return side.probs
    laid = side.probs.new_zeros((len(labels), *side.probs.shape[1:]))
    for channel, label in enumerate(side.labels):
        laid[labels.index(label)] = side.probs[channel]
    return laid


def margins(probs: torch.Tensor) -> torch.Tensor:
    """Each patch's margin between its two most likely labels: ``[M, h, w]`` -> ``[h, w]`` in [0, 1]."""
    if probs.shape[0] < 2:
        return torch.ones_like(probs[0])
    top = probs.topk(2, dim=0).values
    return top[0] - top[1]


def fuse(forward: Side, backward: Side, mode: Fusion) -> tuple[torch.Tensor, list[int]]:
    """The fused ``[M, h, w]`` float32 probabilities of a frame and their ids (see the module docstring)."""
    labels = union_labels(forward, backward)
    p_f, p_b = on_labels(forward, labels), on_labels(backward, labels)
    if mode == "distance":
        return forward.weight * p_f + backward.weight * p_b, labels
    w_f = forward.weight * margins(forward.probs).clamp_min(MARGIN_FLOOR)
    w_b = backward.weight * margins(backward.probs).clamp_min(MARGIN_FLOOR)
    return (w_f * p_f + w_b * p_b) / (w_f + w_b), labels
