"""The run record: one typed description of a run, written to and read from ``run.json``.

:class:`RunRecord` is written when a run starts (``status`` ``running``) and
rewritten last (``complete``, ``interrupted`` or ``failed``). Every reader of
``run.json`` (``--resume``, the batch runner, reports) goes through
:meth:`RunRecord.read`, so the file's layout lives here alone. ``schema``
counts layout changes; files written before it existed read as schema 0
(schema 2 added ``confidence`` and ``low_confidence_frames``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from dinotrack.files import atomic_write_json
from dinotrack.structs import UsageError

RUN_FILE = "run.json"
SCHEMA_VERSION = 2
Status = Literal["running", "complete", "interrupted", "failed"]
SAME_RUN_FIELDS = ("source", "mask", "preset", "model", "weights")
"""What must not change between a run and its ``--resume`` (besides the settings that decide the masks)."""
RUNTIME_SETTINGS = ("batch_size", "workers", "compile", "device")
"""Settings that change the speed, not the masks: a resume may change them."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """What a run is (inputs, settings, model, weights, versions) and how far it got.

    ``settings``: the :class:`~dinotrack.structs.TrackConfig` fields plus the
    runtime ones (batch size, workers, compile, device). ``weights``:
    ``{"source": ..., "sha256": ...}``. ``seconds``: per stage, summed over
    frames, and ``total``. ``overlay``: ``{"mode", "codec", "size", "frames"}`` when one was
    written. ``confidence``: ``{"<object id>": [value or None per frame]}``
    (see :mod:`dinotrack.confidence`); ``low_confidence_frames``: the frames
    where an object's confidence dropped sharply, each ``{"index", "frame"
    (its name), "object", "confidence", "before"}``.
    """

    source: str
    mask: str
    preset: str
    settings: dict[str, object]
    model: str
    weights: dict[str, object]
    frames_total: int | None
    keyframes: list[int] = field(default_factory=list)
    status: Status = "running"
    frames_done: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    started: str = field(default_factory=utc_now)
    finished: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    overlay: dict[str, object] | None = None
    resumed_at: int | None = None
    error: str | None = None
    confidence: dict[str, list[float | None]] | None = None
    low_confidence_frames: list[dict[str, object]] | None = None
    schema: int = SCHEMA_VERSION

    def write(self, output: Path) -> None:
        """Write ``output/run.json`` atomically (fields that are ``None`` are left out)."""
        data = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        atomic_write_json(output / RUN_FILE, data)

    @classmethod
    def read(cls, output: Path) -> RunRecord:
        """The record in ``output/run.json``; a :class:`UsageError` when it is missing or unreadable."""
        path = output / RUN_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{"schema": 0, **{key: value for key, value in data.items() if key in known}})
        except (OSError, ValueError, TypeError):
            raise UsageError(
                f"{output} holds no readable {RUN_FILE}, so there is no run to continue or reuse. "
                "Run without --resume to start one."
            ) from None

    def changes_from(self, previous: RunRecord) -> list[str]:
        """``name: before -> now`` for each input or mask-deciding setting that differs from ``previous``.

        Settings are named as the CLI's options (``--short-side: 240 -> 320``).
        """
        fields = [(name, getattr(previous, name), getattr(self, name)) for name in SAME_RUN_FIELDS]
        settings = [
            (f"--{key.replace('_', '-')}", previous.settings.get(key), self.settings.get(key))
            for key in sorted(previous.settings.keys() | self.settings.keys())
            if key not in RUNTIME_SETTINGS
        ]
        return [f"{name}: {before} -> {now}" for name, before, now in fields + settings if before != now]

    def finish(self, status: Status, frames_done: int, seconds: dict[str, float]) -> None:
        """Record how the run ended; ``fps`` counts the frames done in this process (not those before a resume)."""
        total = seconds.get("total", 0.0)
        self.status = status
        self.frames_done = frames_done
        self.seconds = seconds
        self.fps = round((frames_done - (self.resumed_at or 0)) / total, 3) if total > 0 else 0.0
        self.finished = utc_now()


def library_versions() -> dict[str, str]:
    """Versions of dinotrack, Python and the libraries that decide the masks."""
    import cv2
    import numpy as np
    import timm
    import torch

    from dinotrack import __version__

    return {
        "dinotrack": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
