"""Where a backbone runs: a device name checked against this machine."""

from __future__ import annotations

import torch

from dinotrack.structs import UsageError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must exist here."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"Unknown device {device!r}: use --device auto, cpu, cuda, cuda:N or mps.") from None
    available = {
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
    }.get(resolved.type, lambda: True)
    if not available():
        raise UsageError(
            f"--device {device} was asked for, but this machine has no {resolved.type.upper()} device that "
            "PyTorch can use. Run with --device cpu (or --device auto to pick the best available)."
        )
    return resolved
