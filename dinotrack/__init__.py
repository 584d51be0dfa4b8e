"""dinotrack: follow objects through a video with DINOv3 features and label propagation.

The public API is imported lazily, so that ``dinotrack --help`` starts at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Tracker": "dinotrack.tracker",
    "TrackConfig": "dinotrack.structs",
    "evaluate": "dinotrack.evaluation",
    "write_report": "dinotrack.report",
    "extract_features": "dinotrack.pipeline",
    "track_video": "dinotrack.pipeline",
    "load_backbone": "dinotrack.pipeline",
    "RunOptions": "dinotrack.pipeline",
    "list_backbones": "dinotrack.backbones",
    "create_backbone": "dinotrack.backbones",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dinotrack' has no attribute {name!r}")
