"""The tracking session: keyframe masks in, probabilities and label maps out.

A :class:`Tracker` holds the propagation state of one video and does no file
I/O. Feed it frames in order with their features; give it a mask on the
first frame (and on any later keyframe). The core verbs work on
probabilities, so that a caller can fuse or score them before deciding:

    probs = tracker.propagate(features)   # [M, h, w] float32, channel c = tracker.labels[c]
    ids = tracker.decode(probs, rgb)      # [H, W] uint8 label map with the caller's ids

:meth:`Tracker.step` is both; :meth:`Tracker.process` also takes a keyframe
mask when the frame has one; :meth:`Tracker.track` runs a whole stream:

    tracker = Tracker(TrackConfig(), extractor=FeatureExtractor(backbone, ...))
    for index, ids in tracker.track(frames, masks={0: first_mask}):
        ...

Every verb switches gradients off itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from dinotrack.features import FeatureExtractor
from dinotrack.masks import object_ids
from dinotrack.propagate import LabelPropagator, labels_to_probs
from dinotrack.refine import probs_to_ids
from dinotrack.sources import Frame
from dinotrack.structs import TrackConfig, UsageError


class Tracker:
    """One video's label propagation state (first frame, recent keyframes, queue)."""

    def __init__(self, config: TrackConfig, *, extractor: FeatureExtractor | None = None) -> None:
        self.config = config
        self.extractor = extractor
        self.propagator = LabelPropagator(
            context=config.context,
            radius=config.radius,
            topk=config.topk,
            temperature=config.temperature,
            neighbourhood=config.neighbourhood,
            keyframe_bound=config.keyframe_bound,
        )
        self.labels: list[int] = [0]  # channel -> object id; channel 0 is the background
        self.retired: set[int] = set()

    @property
    def started(self) -> bool:
        return bool(self.propagator.keyframes)

    @property
    def objects(self) -> list[int]:
        """The object ids tracked now: every id given so far but those a later keyframe ended."""
        return [label for label in self.labels[1:] if label not in self.retired]

    @torch.inference_mode()
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

    @torch.inference_mode()
    def propagate(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities of the next frame from its ``[h, w, D]`` features: ``[M, h, w]`` float32.

        Channel ``c`` is object id ``self.labels[c]`` (channel 0 the
        background); each patch's probabilities sum to 1. The frame joins
        the context.
        """
        if not self.started:
            raise UsageError("The first frame needs a mask: call add_mask (or pass masks={0: ...}) first.")
        return self.propagator.step(features)

    @torch.inference_mode()
    def decode(self, probs: torch.Tensor, rgb: np.ndarray, *, labels: Sequence[int] | None = None) -> np.ndarray:
        """``[M, h, w]`` probabilities + the ``[H, W, 3] uint8`` frame -> ``[H, W] uint8`` ids.

        Channel ``c`` is id ``labels[c]`` (default: this tracker's :attr:`labels`;
        give them for probabilities fused from two trackers).
        """
        return probs_to_ids(
            probs,
            self.labels if labels is None else list(labels),
            tuple(rgb.shape[:2]),
            upsample=self.config.upsample,
            minmax=self.config.minmax,
            refine=self.config.refine,
            guide=rgb,
        )

    def step(self, rgb: np.ndarray, features: torch.Tensor) -> np.ndarray:
        """Propagate to the next frame: ``[H, W, 3] uint8`` + ``[h, w, D]`` -> ``[H, W] uint8`` ids."""
        return self.decode(self.propagate(features), rgb)

    def process(self, rgb: np.ndarray, features: torch.Tensor, mask: np.ndarray | None = None) -> np.ndarray:
        """The next frame's ``[H, W] uint8`` ids: ``mask`` itself when given (a keyframe), else :meth:`step`."""
        return self.add_mask(mask, features) if mask is not None else self.step(rgb, features)

    def state_dict(self) -> dict:
        """Everything needed to continue this video later: labels and the bounded context (tensors, lists)."""
        return {"labels": list(self.labels), "retired": sorted(self.retired), **self.propagator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (e.g. loaded with ``torch.load(..., weights_only=True)``)."""
        self.labels = list(state["labels"])
        self.retired = set(state["retired"])
        self.propagator.load_state_dict(state)

    def track(
        self,
        frames: Iterable[Frame] | Iterable[tuple[Frame, torch.Tensor]],
        masks: Mapping[int, np.ndarray],
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame index, [H, W] uint8 ids)`` for every frame, lazily.

        ``frames``: :class:`~dinotrack.sources.Frame` objects (features are
        computed with the tracker's extractor) or ``(frame, features)`` pairs
        (e.g. from a feature cache). ``masks``: keyframe masks by frame index
        (anything with ``get``); the first frame must have one.
        """
        pairs = frames if self.extractor is None else self.extractor(frames)
        for frame, features in pairs:
            yield frame.index, self.process(frame.rgb, features, masks.get(frame.index))
