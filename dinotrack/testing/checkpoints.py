"""Tiny random DINOv3 checkpoints in Meta's and timm's key layouts, for tests and benchmarks.

``TINY`` is a 64-dim, 2-block, 2-head backbone on timm's vits16 architecture;
``write_meta_checkpoint`` and ``write_timm_checkpoint`` write random weights of
it (or of any spec), so that ``create_backbone(TINY, weights=path)`` and
``--model dinotrack.testing:TINY --weights PATH`` run in milliseconds, in any
process and without registration. ``register_tiny_backbone()`` also makes the
short name "tiny" known in this process. Meta's layout is written here without
Meta's code, by inverting timm's conversion key by key.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from dinotrack.backbones import (
    LVD1689M_MEAN,
    LVD1689M_STD,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
    unregister_backbone,
)
from dinotrack.backbones.checkpoints import timm_model

TINY = BackboneSpec(
    name="tiny",
    timm_name="vit_small_patch16_dinov3_qkvb",
    hub_id=None,
    params="0.1M",
    dim=64,
    depth=2,
    mean=LVD1689M_MEAN,
    std=LVD1689M_STD,
    timm_kwargs={"embed_dim": 64, "depth": 2, "num_heads": 2},
)

# timm key fragment -> Meta key fragment, for everything but the q/v biases
_TIMM_TO_META = (
    (r"^reg_token$", "storage_tokens"),
    (r"\.gamma_1$", ".ls1.gamma"),
    (r"\.gamma_2$", ".ls2.gamma"),
)
_TIMM_TO_META_SWIGLU = (
    (r"\.mlp\.fc1_g\.", ".mlp.w1."),
    (r"\.mlp\.fc1_x\.", ".mlp.w2."),
    (r"\.mlp\.fc2\.", ".mlp.w3."),
)


def register_tiny_backbone() -> BackboneSpec:
    """Register "tiny" unless it is registered already; returns its spec."""
    if TINY.name not in {spec.name for spec in list_backbones()}:
        register_backbone(TINY)
    return get_backbone_spec(TINY.name)


@contextlib.contextmanager
def registered(spec: BackboneSpec) -> Iterator[BackboneSpec]:
    """Register ``spec`` for the duration of a ``with`` block."""
    register_backbone(spec)
    try:
        yield spec
    finally:
        unregister_backbone(spec.name)


def random_timm_model(model: str | BackboneSpec = TINY, seed: int = 0) -> torch.nn.Module:
    """The timm model of the backbone ``model`` (a spec, its import path or a registered name)
    with every weight drawn from N(0, 0.2²).

    Unlike timm's initialisation (zero q/v biases, layer scale 1e-5), every tensor
    matters to the output, so a weight lost in a conversion changes the features.
    """
    vit = timm_model(get_backbone_spec(model))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in vit.state_dict().values():
            tensor.copy_(0.2 * torch.randn(tensor.shape, generator=generator))
    return vit


def meta_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights in the key layout of Meta's original DINOv3 checkpoints.

    The k third of each ``qkv.bias`` is zero and masked by ``qkv.bias_mask`` (1 for
    q and v, 0 for k); ``rope_embed.periods`` is bfloat16 and ``mask_token`` zero,
    as in Meta's files.
    """
    state = model.state_dict()
    renames = _TIMM_TO_META + (_TIMM_TO_META_SWIGLU if "blocks.0.mlp.fc1_g.weight" in state else ())
    meta: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith("attn.q_bias"):
            block = key[: -len("q_bias")]
            ones, zeros = torch.ones_like(tensor), torch.zeros_like(tensor)
            meta[block + "qkv.bias"] = torch.cat([tensor, zeros, state[block + "v_bias"]])
            meta[block + "qkv.bias_mask"] = torch.cat([ones, zeros, ones])
        elif not key.endswith("attn.v_bias"):
            for pattern, replacement in renames:
                key = re.sub(pattern, replacement, key)
            meta[key] = tensor.clone()
    meta["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    meta["rope_embed.periods"] = model.rope.periods.to(torch.bfloat16)
    return meta


def write_meta_checkpoint(path: str | Path, model: str | BackboneSpec = TINY, seed: int = 0) -> Path:
    """Write random weights of the backbone ``model`` as a Meta-layout ``.pth``; returns ``path``."""
    path = Path(path)
    torch.save(meta_state_dict(random_timm_model(model, seed)), path)
    return path


def write_timm_checkpoint(path: str | Path, model: str | BackboneSpec = TINY, seed: int = 0) -> Path:
    """Write the same random weights as :func:`write_meta_checkpoint` (same ``seed``)
    as a timm-layout ``.safetensors``; returns ``path``."""
    path = Path(path)
    state = random_timm_model(model, seed).state_dict()
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path))
    return path
