"""Plain data shared by every stage: the error type and the tracking settings.

This module imports nothing from dinotrack; every other module may import it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal


class DinotrackError(Exception):
    """A failure a user can fix. The message says what went wrong and what to do.

    ``exit_code`` is 1 for failures at run time; :class:`UsageError` uses 2.
    The CLI prints the message (no traceback) and exits with ``exit_code``.
    """

    exit_code = 1


class UsageError(DinotrackError):
    """A bad argument or input file given by the user (exit status 2)."""

    exit_code = 2


MAX_SHORT_SIDE = 4096
"""Largest ``--short-side`` accepted (the paper uses 960); beyond it a frame's features only exhaust memory."""


def check_short_side(short_side: int) -> None:
    """A :class:`UsageError` unless ``short_side`` is a number of pixels in 1..MAX_SHORT_SIDE."""
    if not 0 < short_side <= MAX_SHORT_SIDE:
        raise UsageError(
            f"--short-side must be a positive number of pixels, at most {MAX_SHORT_SIDE} (got {short_side!r}). "
            "Frames are resized so that their short side has this length; the paper uses 960."
        )


Neighbourhood = Literal["circle", "square"]
FirstMask = Literal["nearest", "area"]
Upsample = Literal["nearest", "bilinear"]
Refine = Literal["none", "colour"]
Fusion = Literal["distance", "confidence"]


@dataclass(frozen=True)
class TrackConfig:
    """Every setting of the propagation, from first mask to output pixels.

    ``paper`` (see :data:`PRESETS`) is ALGORITHM.md exactly; ``default`` differs
    only where the oracle evaluation (``scripts/oracle_eval.py``) measured a gain.
    ``keyframe_bound``: besides the first keyframe, how many of the most recent
    later keyframes stay in the context (the published algorithm has only a
    first frame, so it does not depend on this). ``fusion``: how a frame
    between two keyframes weighs the forward and the backward pass (see
    :mod:`dinotrack.fusion`; the published algorithm tracks forward only).
    """

    short_side: int = 480
    context: int = 7
    radius: float = 12.0
    topk: int = 5
    temperature: float = 0.2
    neighbourhood: Neighbourhood = "circle"
    first_mask: FirstMask = "nearest"
    upsample: Upsample = "bilinear"
    minmax: bool = True
    refine: Refine = "none"
    keyframe_bound: int = 4
    fusion: Fusion = "distance"

    def __post_init__(self) -> None:
        check_short_side(self.short_side)
        checks = [
            ("--context", self.context, self.context >= 0, "must be 0 or more frames"),
            ("--keyframe-bound", self.keyframe_bound, self.keyframe_bound >= 0, "must be 0 or more keyframes"),
            ("--radius", self.radius, 0 <= self.radius < math.inf, "must be 0 or more patches, and finite"),
            ("--topk", self.topk, self.topk >= 1, "must be at least 1"),
            ("--temperature", self.temperature, 0 < self.temperature < math.inf, "must be greater than 0, and finite"),
            ("neighbourhood", self.neighbourhood, self.neighbourhood in ("circle", "square"), "must be 'circle' or 'square'"),
            ("first_mask", self.first_mask, self.first_mask in ("nearest", "area"), "must be 'nearest' or 'area'"),
            ("upsample", self.upsample, self.upsample in ("nearest", "bilinear"), "must be 'nearest' or 'bilinear'"),
            ("refine", self.refine, self.refine in ("none", "colour"), "must be 'none' or 'colour'"),
            ("fusion", self.fusion, self.fusion in ("distance", "confidence"), "must be 'distance' or 'confidence'"),
            ("refine", self.refine, self.refine != "colour" or self.upsample == "bilinear",
             "'colour' interpolates bilinearly: it needs upsample 'bilinear'"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise UsageError(f"{name} {rule} (got {value!r}).")

    def replace(self, **changes: object) -> "TrackConfig":
        """A copy with ``changes`` applied; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


OVERLAY_MAX_SIDE = 1920
"""The overlay's default longest side in pixels: 1080p and smaller frames keep their size, 4K ones
are halved (see the README's Performance section for the encoding cost by size)."""

PRESETS: dict[str, TrackConfig] = {
    "paper": TrackConfig(),
    "default": TrackConfig(first_mask="area", refine="colour"),
}


def preset(name: str) -> TrackConfig:
    """The named preset's settings; a :class:`UsageError` lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}."
        ) from None
