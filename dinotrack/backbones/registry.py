"""Backbone names: the table of DINOv3 specs and the registry that looks them up.

A :class:`BackboneSpec` is plain data: which timm architecture to build, where
its published weights live and how to normalise its input. The registry maps
names to specs; it starts with the DINOv3 family below. Where a registration
cannot reach (a subprocess, a Ray worker), pass the spec itself or its import
path ``"package.module:ATTRIBUTE"`` instead of a name.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dinotrack.structs import UsageError

LVD1689M_MEAN = (0.485, 0.456, 0.406)
LVD1689M_STD = (0.229, 0.224, 0.225)
SAT493M_MEAN = (0.430, 0.411, 0.296)
SAT493M_STD = (0.213, 0.156, 0.143)


@dataclass(frozen=True)
class BackboneSpec:
    """One named backbone: its timm architecture, its weights and its input normalisation.

    ``timm_name`` is a timm architecture (``timm.create_model`` name) and
    ``timm_kwargs`` overrides its arguments (empty for the published models).
    ``hub_id`` is the Hugging Face repository of timm-format weights (``None``:
    no published weights). ``meta_file`` is the name of Meta's original
    checkpoint, quoted in error messages. ``mean`` and ``std`` are per RGB
    channel for images scaled to [0, 1]. Token order out of the ViT:
    ``num_prefix_tokens`` (CLS + 4 registers), then the patches row by row.
    """

    name: str
    timm_name: str
    hub_id: str | None
    params: str
    dim: int
    depth: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int = 16
    num_prefix_tokens: int = 5
    timm_kwargs: Mapping[str, object] = field(default_factory=dict)
    meta_file: str | None = None


_BUILTIN_SPECS = (
    BackboneSpec(
        name="vits16", timm_name="vit_small_patch16_dinov3_qkvb",
        hub_id="timm/vit_small_patch16_dinov3_qkvb.lvd1689m", params="21M", dim=384, depth=12,
        mean=LVD1689M_MEAN, std=LVD1689M_STD, meta_file="dinov3_vits16_pretrain_lvd1689m-08c60483.pth",
    ),
    BackboneSpec(
        name="vits16plus", timm_name="vit_small_plus_patch16_dinov3_qkvb",
        hub_id="timm/vit_small_plus_patch16_dinov3_qkvb.lvd1689m", params="29M", dim=384, depth=12,
        mean=LVD1689M_MEAN, std=LVD1689M_STD, meta_file="dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth",
    ),
    BackboneSpec(
        name="vitb16", timm_name="vit_base_patch16_dinov3_qkvb",
        hub_id="timm/vit_base_patch16_dinov3_qkvb.lvd1689m", params="86M", dim=768, depth=12,
        mean=LVD1689M_MEAN, std=LVD1689M_STD, meta_file="dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth",
    ),
    BackboneSpec(
        name="vitl16", timm_name="vit_large_patch16_dinov3_qkvb",
        hub_id="timm/vit_large_patch16_dinov3_qkvb.lvd1689m", params="300M", dim=1024, depth=24,
        mean=LVD1689M_MEAN, std=LVD1689M_STD, meta_file="dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth",
    ),
    BackboneSpec(
        name="vith16plus", timm_name="vit_huge_plus_patch16_dinov3_qkvb",
        hub_id="timm/vit_huge_plus_patch16_dinov3_qkvb.lvd1689m", params="840M", dim=1280, depth=32,
        mean=LVD1689M_MEAN, std=LVD1689M_STD, meta_file="dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth",
    ),
    BackboneSpec(
        name="vit7b16", timm_name="vit_7b_patch16_dinov3",
        hub_id="timm/vit_7b_patch16_dinov3.lvd1689m", params="6.7B", dim=4096, depth=40,
        mean=LVD1689M_MEAN, std=LVD1689M_STD, meta_file="dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth",
    ),
    BackboneSpec(
        name="vitl16-sat", timm_name="vit_large_patch16_dinov3_qkvb",
        hub_id="timm/vit_large_patch16_dinov3_qkvb.sat493m", params="300M", dim=1024, depth=24,
        mean=SAT493M_MEAN, std=SAT493M_STD, meta_file="dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth",
    ),
    BackboneSpec(
        name="vit7b16-sat", timm_name="vit_7b_patch16_dinov3",
        hub_id="timm/vit_7b_patch16_dinov3.sat493m", params="6.7B", dim=4096, depth=40,
        mean=SAT493M_MEAN, std=SAT493M_STD, meta_file="dinov3_vit7b16_pretrain_sat493m-a6675841.pth",
    ),
)

_REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _BUILTIN_SPECS}


def register_backbone(spec: BackboneSpec) -> None:
    """Add ``spec`` to the registry; a name that is already taken raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"A backbone named {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec


def unregister_backbone(name: str) -> BackboneSpec:
    """Remove the backbone called ``name`` from the registry and return its spec."""
    return _REGISTRY.pop(_registered(name).name)


def list_backbones() -> list[BackboneSpec]:
    """Every registered backbone, in registration order."""
    return list(_REGISTRY.values())


def get_backbone_spec(model: str | BackboneSpec) -> BackboneSpec:
    """The spec that ``model`` stands for.

    ``model`` is a registered name; or a :class:`BackboneSpec`, returned as it is;
    or an import path ``"package.module:ATTRIBUTE"`` naming a spec, imported now.
    The last two need no registration, so they work in a subprocess or a Ray
    worker that never ran the caller's :func:`register_backbone`. Anything else
    raises a :class:`UsageError` that says what to pass.
    """
    if isinstance(model, BackboneSpec):
        return model
    if _IMPORT_PATH.fullmatch(model):
        return _imported_spec(model)
    return _registered(model)


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _registered(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(_unknown_model_message(name)) from None


def _imported_spec(path: str) -> BackboneSpec:
    """The :class:`BackboneSpec` at ``package.module:ATTRIBUTE``."""
    module_name, attribute = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(_import_path_message(path, f"Python cannot import {module_name} ({error})")) from None
    if not hasattr(module, attribute):
        raise UsageError(_import_path_message(path, f"the module {module_name} has no attribute {attribute}"))
    spec = getattr(module, attribute)
    if not isinstance(spec, BackboneSpec):
        raise UsageError(_import_path_message(path, f"it is a {type(spec).__name__}, not a BackboneSpec"))
    return spec


def _import_path_message(path: str, problem: str) -> str:
    return (
        f"Cannot use the model {path!r}: {problem}. An import path package.module:ATTRIBUTE must name a "
        "BackboneSpec in a module that Python can import here (installed, or on PYTHONPATH), as in "
        "--model dinotrack.testing:TINY; or pass a registered name (see `dinotrack models`)."
    )


def _unknown_model_message(name: str) -> str:
    message = f"Unknown model {name!r}. Known models: {', '.join(_REGISTRY)} (see `dinotrack models`)."
    if "/" in name or "\\" in name or name.endswith((".pth", ".pt", ".safetensors", ".bin")):
        message += (
            f" {name!r} looks like a file: pass it with --weights {name} and choose its "
            "architecture with --model (for example --model vits16)."
        )
    elif ":" in name:
        message += " An import path of a BackboneSpec is written package.module:ATTRIBUTE."
    return message
