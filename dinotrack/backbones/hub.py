"""Weights from the Hugging Face hub: the cached copy, else a download."""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from dinotrack.backbones.checkpoints import first_sentence, meta_file_phrase
from dinotrack.backbones.registry import BackboneSpec
from dinotrack.structs import DinotrackError, UsageError

HUB_FILENAME = "model.safetensors"
HUB_TIMEOUT_S = 5.0


def hub_weights_file(spec: BackboneSpec) -> Path:
    """The spec's hub weights file: from the HF cache, else downloaded; fails fast without network."""
    if spec.hub_id is None:
        raise UsageError(
            f"{spec.name} has no published weights: pass --weights PATH, or use random weights "
            "(pretrained=False)."
        )
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache_dir = _hf_cache_dir()
    cached = try_to_load_from_cache(spec.hub_id, HUB_FILENAME, cache_dir=cache_dir)
    if isinstance(cached, str):
        return Path(cached)
    if _hf_offline():
        raise DinotrackError(_no_weights_message(spec, cache_dir, "HF_HUB_OFFLINE is set"))
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint):
        raise DinotrackError(_no_weights_message(spec, cache_dir, f"{endpoint} cannot be reached"))
    try:
        file = hf_hub_download(spec.hub_id, HUB_FILENAME, cache_dir=cache_dir, etag_timeout=HUB_TIMEOUT_S)
    except OSError as error:  # huggingface_hub's HTTP and cache errors are OSErrors
        reason = f"the download failed ({first_sentence(error)})"
        raise DinotrackError(_no_weights_message(spec, cache_dir, reason)) from None
    return Path(file)


def _hf_cache_dir() -> Path:
    """The hub cache huggingface_hub uses, read from the environment now (it reads it at import)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    default_home = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(os.path.expandvars(os.environ.get("HF_HOME", str(default_home)))).expanduser() / "hub"


def _hf_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


def _reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout`` seconds.

    Runs in a daemon thread, so a hanging name lookup cannot hold the caller longer.
    """
    address = _connect_address(url)
    opened: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _connect_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)


def _no_weights_message(spec: BackboneSpec, cache_dir: Path, reason: str) -> str:
    return (
        f"Cannot get the weights of {spec.name}: {reason}, and {spec.hub_id} is not in the Hugging Face "
        f"cache at {cache_dir}. Either pass --weights PATH with {meta_file_phrase(spec)} or a "
        f"timm-format .safetensors; or, on a machine with network access, download {HUB_FILENAME} of "
        f"https://huggingface.co/{spec.hub_id} into that cache (HF_HOME or HF_HUB_CACHE choose the "
        "cache; HF_HUB_OFFLINE=1 makes dinotrack use the cache only, without trying the network)."
    )
