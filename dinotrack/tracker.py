"""The tracking session: keyframe masks in, one label map per frame out.

A :class:`Tracker` holds the propagation state of one video and does no file
I/O. Feed it frames in order with their features; give it a mask on the
first frame (and on any later keyframe). It answers each frame with a
``[H, W] uint8`` label map carrying the caller's object ids.

    tracker = Tracker(TrackConfig(), extractor=FeatureExtractor(backbone, ...))
    for index, ids in tracker.track(frames, masks={0: first_mask}):
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

from dinotrack.features import FeatureExtractor
from dinotrack.masks import object_ids
from dinotrack.propagate import LabelPropagator, labels_to_probs
from dinotrack.refine import probs_to_ids
from dinotrack.sources import Frame
from dinotrack.structs import TrackConfig, UsageError


class Tracker:
    """One video's label propagation state (first frame, keyframes, queue)."""

    def __init__(self, config: TrackConfig, *, extractor: FeatureExtractor | None = None) -> None:
        self.config = config
        self.extractor = extractor
        self.propagator = LabelPropagator(
            context=config.context,
            radius=config.radius,
            topk=config.topk,
            temperature=config.temperature,
            neighbourhood=config.neighbourhood,
        )
        self.labels: list[int] = [0]  # channel -> object id; channel 0 is the background
        self.retired: set[int] = set()

    @property
    def started(self) -> bool:
        return bool(self.propagator.keyframes)

    def add_mask(self, ids: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Make this frame a keyframe with the given ``[H, W] uint8`` label map.

        ``features``: the frame's ``[h, w, D]`` features. Ids new to the video
        are tracked from here on; ids tracked so far but absent here stop.
        Returns ``ids`` (a keyframe's output is its mask).
        """
        present = object_ids(ids)
        if not self.started and not present:
            raise UsageError(
                "The first frame's mask holds no object: every pixel is background (0). "
                "Give a mask in which each object to track has its own non-zero id."
            )
        new = [label for label in present if label not in self.labels]
        gone = [label for label in self.labels[1:] if label not in present and label not in self.retired]
        self.labels += new
        self.retired = (self.retired | set(gone)) - set(present)
        if self.started:
            retired_channels = [self.labels.index(label) for label in self.retired]
            self.propagator.resize_labels(len(self.labels), retired_channels)
        grid = tuple(features.shape[:2])
        probs = labels_to_probs(ids, self.labels, grid, mode=self.config.first_mask).to(features.device)
        self.propagator.add_keyframe(features, probs)
        return ids

    def step(self, rgb: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Propagate to the next frame: ``[H, W, 3] uint8`` + ``[h, w, D]`` → ``[H, W] uint8`` ids."""
        if not self.started:
            raise UsageError("The first frame needs a mask: call add_mask (or pass masks={0: ...}) first.")
        probs = self.propagator.step(features)
        return probs_to_ids(
            probs,
            self.labels,
            tuple(rgb.shape[:2]),
            upsample=self.config.upsample,
            minmax=self.config.minmax,
            refine=self.config.refine,
            guide=rgb,
        )

    def state_dict(self) -> dict:
        """Everything needed to continue this video later: labels and the bounded context (tensors, lists)."""
        return {
            "labels": list(self.labels),
            "retired": sorted(self.retired),
            "keyframes": [list(pair) for pair in self.propagator.keyframes],
            "queue": [list(pair) for pair in self.propagator.queue],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (e.g. loaded with ``torch.load(..., weights_only=True)``)."""
        self.labels = list(state["labels"])
        self.retired = set(state["retired"])
        self.propagator.keyframes = [tuple(pair) for pair in state["keyframes"]]
        self.propagator.queue.clear()
        self.propagator.queue.extend(tuple(pair) for pair in state["queue"])

    @torch.inference_mode()
    def track(
        self,
        frames: Iterable[Frame] | Iterable[tuple[Frame, torch.Tensor]],
        masks: Mapping[int, np.ndarray],
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame index, [H, W] uint8 ids)`` for every frame, lazily.

        ``frames``: :class:`~dinotrack.sources.Frame` objects (features are
        computed with the tracker's extractor) or ``(frame, features)`` pairs
        (e.g. from a feature cache). ``masks``: keyframe masks by frame index;
        the first frame must have one.
        """
        pairs = frames if self.extractor is None else self.extractor(frames)
        for frame, features in pairs:
            mask = masks.get(frame.index)
            if mask is not None:
                yield frame.index, self.add_mask(mask, features)
            else:
                yield frame.index, self.step(frame.rgb, features)
