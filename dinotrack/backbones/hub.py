"""Weights from the Hugging Face hub, through huggingface_hub's own API.

The cached copy comes first (``try_to_load_from_cache``, no network). Without
one, ``hf_hub_download`` fetches the file, or with ``HF_HUB_OFFLINE`` set only
looks in the cache (``local_files_only``). Before downloading, one metadata
request without retries checks that the hub answers: ``hf_hub_download``
retries a refused connection with back-off (23 s with huggingface_hub 2.4),
and dinotrack must say within seconds that the weights cannot be had.

huggingface_hub reads its settings (``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_ENDPOINT``) from the environment once, when it is first
imported; :func:`_hub_settings` reads them again, with huggingface_hub's own
code, so that a program or a test that sets them later is obeyed.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

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

    settings = _hub_settings()
    cache_dir = settings.HF_HUB_CACHE
    cached = try_to_load_from_cache(spec.hub_id, HUB_FILENAME, cache_dir=cache_dir)
    if isinstance(cached, str):
        return Path(cached)
    offline = settings.HF_HUB_OFFLINE
    if not offline:
        _check_hub_answers(spec, cache_dir, settings.ENDPOINT)
    try:
        file = hf_hub_download(
            spec.hub_id, HUB_FILENAME, cache_dir=cache_dir, endpoint=settings.ENDPOINT,
            etag_timeout=HUB_TIMEOUT_S, local_files_only=offline,
        )
    except OSError as error:  # huggingface_hub's cache and HTTP errors are OSErrors
        reason = "HF_HUB_OFFLINE is set" if offline else f"the download failed ({first_sentence(error)})"
        raise DinotrackError(_no_weights_message(spec, cache_dir, reason)) from None
    return Path(file)


def _hub_settings() -> ModuleType:
    """A fresh copy of ``huggingface_hub.constants``, computed from the environment as it is now.

    The module's own code runs again (it only reads environment variables), so
    the cache folder, the offline flag and the endpoint follow huggingface_hub's
    rules, not a copy of them; the imported module is left as it is.
    """
    found = importlib.util.find_spec("huggingface_hub.constants")
    settings = importlib.util.module_from_spec(found)
    with warnings.catch_warnings():  # the imported module gave its warnings already
        warnings.simplefilter("ignore")
        found.loader.exec_module(settings)
    return settings


def _check_hub_answers(spec: BackboneSpec, cache_dir: str, endpoint: str) -> None:
    """One metadata request for the spec's weights, without retries; a :class:`DinotrackError` when it fails."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(spec.hub_id, HUB_FILENAME, endpoint=endpoint), timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError as error:  # the hub answered: no such repository, gated, or down
        reason = f"{endpoint} refused the request ({first_sentence(error)})"
    except Exception as error:  # no answer: huggingface_hub passes on its HTTP client's own errors
        reason = f"{endpoint} cannot be reached ({type(error).__name__}: {first_sentence(error)})"
    else:
        return
    raise DinotrackError(_no_weights_message(spec, cache_dir, reason))


def _no_weights_message(spec: BackboneSpec, cache_dir: str, reason: str) -> str:
    return (
        f"Cannot get the weights of {spec.name}: {reason}, and {spec.hub_id} is not in the Hugging Face "
        f"cache at {cache_dir}. Either pass --weights PATH with {meta_file_phrase(spec)} or a "
        f"timm-format .safetensors; or, on a machine with network access, download {HUB_FILENAME} of "
        f"https://huggingface.co/{spec.hub_id} into that cache (HF_HOME or HF_HUB_CACHE choose the "
        "cache; HF_HUB_OFFLINE=1 makes dinotrack use the cache only, without trying the network)."
    )
