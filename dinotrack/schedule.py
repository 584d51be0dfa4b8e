"""The plan of a run over its keyframes: which pass tracks each frame, and with what weight.

Keyframes cut a run's frames into stretches. With keyframes ``k0 < k1 < ...``:

- the frames before ``k0`` are tracked backward from ``k0`` (the same
  algorithm on the reversed order);
- the frames between two keyframes ``a < b`` are tracked forward from ``a``
  and, with direction ``both``, also backward from ``b``; the two
  probability maps are fused (see :mod:`dinotrack.fusion`);
- the frames after the last keyframe are tracked forward from it.

A frame that a backward pass reaches waits (on disk) until its stretch's
closing keyframe comes; every other frame is done as soon as it is read.
No I/O and no tensors here.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

Direction = Literal["forward", "both"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)


@dataclass(frozen=True)
class FramePlan:
    """How frame ``index`` (not a keyframe) is tracked.

    ``after``: the keyframe before it that the forward pass comes from
    (``None``: no forward pass). ``before``: the keyframe after it that a
    backward pass comes from (``None``: no backward pass; the frame is done
    when read).
    """

    index: int
    after: int | None
    before: int | None

    @property
    def waits(self) -> bool:
        """Whether the frame waits for the backward pass of its stretch."""
        return self.before is not None

    def distance_weights(self) -> tuple[float, float]:
        """``(forward, backward)`` weights, each side's share by nearness: the nearer keyframe counts more."""
        if self.before is None:
            return 1.0, 0.0
        if self.after is None:
            return 0.0, 1.0
        span = self.before - self.after
        return (self.before - self.index) / span, (self.index - self.after) / span


class Schedule:
    """The passes of a run with keyframes at ``keyframes`` (frame indices, at least one) in ``direction``."""

    def __init__(self, keyframes: Iterable[int], direction: Direction) -> None:
        self.keyframes = sorted(set(keyframes))
        if not self.keyframes:
            raise ValueError("a schedule needs at least one keyframe")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS} (got {direction!r})")
        self.direction = direction

    def plan(self, index: int) -> FramePlan:
        """Frame ``index``'s passes (it must not be a keyframe)."""
        position = bisect.bisect_left(self.keyframes, index)
        after = self.keyframes[position - 1] if position > 0 else None
        before = self.keyframes[position] if position < len(self.keyframes) else None
        if after is not None and self.direction == "forward":
            before = None
        return FramePlan(index, after, before)
