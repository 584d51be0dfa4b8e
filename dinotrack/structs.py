"""Plain data shared by every stage: the error type and the tracking settings.

This module imports nothing from dinotrack; every other module may import it.
"""

from __future__ import annotations

import dataclasses
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


Neighbourhood = Literal["circle", "square"]
FirstMask = Literal["nearest", "area"]
Upsample = Literal["nearest", "bilinear"]
Refine = Literal["none", "guided"]


@dataclass(frozen=True)
class TrackConfig:
    """Every setting of the propagation, from first mask to output pixels.

    ``paper`` (see :data:`PRESETS`) is ALGORITHM.md exactly; ``default`` differs
    only where the oracle evaluation (``scripts/oracle_eval.py``) measured a gain.
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

    def __post_init__(self) -> None:
        checks = [
            (self.short_side > 0, "--short-side must be a positive number of pixels"),
            (self.context >= 0, "--context must be 0 or more frames"),
            (self.radius >= 0, "--radius must be 0 or more patches"),
            (self.topk >= 1, "--topk must be at least 1"),
            (self.temperature > 0, "--temperature must be greater than 0"),
            (self.neighbourhood in ("circle", "square"), "neighbourhood must be 'circle' or 'square'"),
            (self.first_mask in ("nearest", "area"), "first_mask must be 'nearest' or 'area'"),
            (self.upsample in ("nearest", "bilinear"), "upsample must be 'nearest' or 'bilinear'"),
            (self.refine in ("none", "guided"), "refine must be 'none' or 'guided'"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"{message} (got {self!r}).")

    def replace(self, **changes: object) -> "TrackConfig":
        """A copy with ``changes`` applied; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrackConfig] = {
    "paper": TrackConfig(),
    "default": TrackConfig(),
}


def preset(name: str) -> TrackConfig:
    """The named preset's settings; a :class:`UsageError` lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}."
        ) from None
