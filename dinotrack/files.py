"""Writing files so that they appear whole or not at all.

Every result dinotrack writes goes through :func:`atomic_write`: the bytes go
to a hidden temporary file beside the target (same folder, so the same file
system), which is then renamed over the target. A reader, or a later
``--resume``, sees either the old file, the new one, or none, never half of
one. This module imports nothing from dinotrack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def partial_path(path: Path) -> Path:
    """The hidden temporary name beside ``path`` under which it is written: ``.NAME.part``."""
    return path.with_name(f".{path.name}.part")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is removed when ``write`` or the rename fails. Links are
    never followed: a stale temporary name (a file or a planted symbolic link)
    is removed first, so ``write`` creates a new file, and the rename replaces
    a link at ``path`` instead of writing through it.
    """
    path = Path(path)
    temporary = partial_path(path)
    temporary.unlink(missing_ok=True)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (paths and other objects as strings)."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str))
