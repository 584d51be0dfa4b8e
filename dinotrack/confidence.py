"""How sure the tracker is of each object, frame by frame, without ground truth.

**Confidence** of object ``o`` on a propagated frame: the mean, over the
pixels the output mask gives to ``o``, of ``o``'s *margin*: its propagated
probability minus the highest probability of any other label (background
included), computed per patch and upsampled bilinearly to the pixels as
the masks' decoding upsamples the probabilities:

    margin_o(patch) = p_o(patch) - max_{l != o} p_l(patch)              in [-1, 1]
    confidence_o = mean over the pixels of o's mask of upsampled margin_o  clipped to [0, 1]

1 means every pixel of the object lies where the propagation gives it to
``o`` alone; 0 that the object has no pixel, or that where it was drawn
another label is on average at least as probable (the mask's per-label
normalisation and colour refinement can draw an object where its raw
probability is not the highest). A keyframe's objects have confidence 1
(their mask is given). Objects not tracked on a frame (not yet given, or
ended by a keyframe) have none. How well it predicts the true J is measured
in the README (``scripts/oracle_eval.py --confidence``).

**Low-confidence frames** are where an object's confidence drops sharply:
frame ``t`` (not a keyframe) is flagged for ``o`` when ``confidence_o(t)``
is more than :data:`DROP` below the median of ``o``'s confidence over the
:data:`WINDOW` frames before it that are not keyframes (at least
:data:`MIN_HISTORY` of them). Only the first frame of each run of flagged
frames is listed: it is where the track started to go wrong, the candidate
keyframe to annotate (``--mask DIR``). A keyframe restarts the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

DROP = 0.15
"""How far below its recent median an object's confidence must fall to flag a frame."""
WINDOW = 10
"""Frames (keyframes excluded) whose median is an object's recent confidence."""
MIN_HISTORY = 3
"""Frames of history an object needs before a drop can be flagged."""
KEYFRAME_CONFIDENCE = 1.0


def patch_margins(probs: torch.Tensor) -> np.ndarray:
    """Each label's margin per patch: ``[M, h, w]`` probabilities -> ``[M, h, w] float32`` in [-1, 1] (host).

    ``margin[c] = probs[c] - max over the other channels``. ``M >= 2``.
    """
    top = probs.float().topk(2, dim=0)
    runner_up = torch.where(top.indices[0] == torch.arange(len(probs), device=probs.device)[:, None, None],
                            top.values[1], top.values[0])
    return (probs.float() - runner_up).cpu().numpy()


def object_confidence(probs: torch.Tensor, labels: Sequence[int], ids: np.ndarray,
                      tracked: Iterable[int] | None = None) -> dict[int, float]:
    """Confidence of each tracked object on a propagated frame (see the module docstring).

    ``probs``: ``[M, h, w]`` probabilities, channel ``c`` = object id
    ``labels[c]`` (channel 0 the background); ``ids``: the frame's
    ``[H, W] uint8`` output label map. ``tracked``: the object ids to score
    (default: ``labels[1:]``). Returns ``{object id: confidence in [0, 1]}``.
    """
    margins = patch_margins(probs)
    size = (ids.shape[1], ids.shape[0])
    scores = {}
    for label in labels[1:] if tracked is None else tracked:
        mask = (ids == label).view(np.uint8)
        if not mask.any():
            scores[label] = 0.0
            continue
        margin = cv2.resize(margins[labels.index(label)], size, interpolation=cv2.INTER_LINEAR)
        scores[label] = min(max(cv2.mean(margin, mask=mask)[0], 0.0), 1.0)
    return scores


def keyframe_confidence(objects: Iterable[int]) -> dict[int, float]:
    """A keyframe's objects are as given: confidence 1 each."""
    return dict.fromkeys(objects, KEYFRAME_CONFIDENCE)


class ConfidenceLog:
    """Each object's confidence by frame index, ``None`` where it was not tracked; grows frame by frame.

    ``series``: what :meth:`as_record` gave before (``{"<id>": [value or None, ...]}``),
    to continue a resumed run.
    """

    def __init__(self, series: Mapping[str, Sequence[float | None]] | None = None) -> None:
        self.series: dict[int, list[float | None]] = {int(key): list(values) for key, values in (series or {}).items()}

    def add(self, index: int, confidence: Mapping[int, float]) -> None:
        """Record frame ``index``'s ``{object id: confidence}`` (a frame given again replaces the old values)."""
        for label, value in confidence.items():
            values = self.series.setdefault(label, [])
            values.extend([None] * (index + 1 - len(values)))
            values[index] = round(value, 4)

    def at(self, index: int) -> dict[int, float]:
        """Frame ``index``'s ``{object id: confidence}``."""
        return {label: values[index] for label, values in self.series.items()
                if index < len(values) and values[index] is not None}

    def as_record(self, frames: int) -> dict[str, list[float | None]]:
        """``{"<id>": [confidence or None] * frames}`` for ``run.json``."""
        return {str(label): (values + [None] * frames)[:frames] for label, values in sorted(self.series.items())}


@dataclass(frozen=True)
class Drop:
    """A sharp drop: object ``object_id`` on frame ``index``, ``confidence`` against a recent median ``before``."""

    index: int
    object_id: int
    confidence: float
    before: float


def sharp_drops(log: ConfidenceLog, keyframes: Iterable[int]) -> list[Drop]:
    """The low-confidence frames of every object (see the module docstring), by frame then object."""
    keyframes = set(keyframes)
    drops = [drop for label, values in log.series.items() for drop in _object_drops(label, values, keyframes)]
    return sorted(drops, key=lambda drop: (drop.index, drop.object_id))


def _object_drops(label: int, values: Sequence[float | None], keyframes: set[int]) -> list[Drop]:
    history: list[float] = []
    drops: list[Drop] = []
    flagged_before = False
    for index, value in enumerate(values):
        if index in keyframes:
            history.clear()  # a keyframe resets the track: what came before says nothing of what follows
        if value is None or index in keyframes:
            flagged_before = False
            continue
        recent = history[-WINDOW:]
        before = float(np.median(recent)) if len(recent) >= MIN_HISTORY else None
        flagged = before is not None and value < before - DROP
        if flagged and not flagged_before:
            drops.append(Drop(index, label, value, round(before, 4)))
        flagged_before = flagged
        history.append(value)
    return drops
