"""DINOv3 backbones: a registry of named models and one loader for their weights.

A :class:`BackboneSpec` is plain data: which timm architecture to build, where
its published weights live and how to normalise its input. :func:`create_backbone`
is the one build path. Weights come from one of three places, and every file
goes through the same local-file loader:

* ``weights=PATH``: Meta's original ``.pth`` (converted with timm's DINOv3
  checkpoint filter) or a timm-format ``.safetensors`` / ``.pth`` state dict;
* the Hugging Face hub (``timm/...``), downloaded once into the usual HF cache;
* nothing (``pretrained=False``): random weights, for tests and timing.

The conversion of Meta's files is lossless. The q and v biases are kept: every
entry uses timm's ``_qkvb`` architecture, except ViT-7B, which Meta trained
without q/k/v biases. Meta masks the k bias with ``bias_mask``. The mask is
applied before timm's filter splits the bias, and a k bias the mask leaves
non-zero is refused (timm's attention has no k bias). Meta's checkpoints keep
the RoPE periods as bfloat16 values, and those values are used. The timm
files do not store periods; for them timm's float32 periods are rounded to
bfloat16, so both sources give the same features as Meta's own model.

timm, safetensors and huggingface_hub are imported only when a model is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import socket
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from dinotrack.structs import DinotrackError, UsageError

LVD1689M_MEAN = (0.485, 0.456, 0.406)
LVD1689M_STD = (0.229, 0.224, 0.225)
SAT493M_MEAN = (0.430, 0.411, 0.296)
SAT493M_STD = (0.213, 0.156, 0.143)

HUB_FILENAME = "model.safetensors"
HUB_TIMEOUT_S = 5.0
META_DOWNLOADS = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"


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
    return _REGISTRY.pop(get_backbone_spec(name).name)


def list_backbones() -> list[BackboneSpec]:
    """Every registered backbone, in registration order."""
    return list(_REGISTRY.values())


def get_backbone_spec(name: str) -> BackboneSpec:
    """The spec registered as ``name``; a :class:`UsageError` lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(_unknown_model_message(name)) from None


def _unknown_model_message(name: str) -> str:
    message = f"Unknown model {name!r}. Known models: {', '.join(_REGISTRY)} (see `dinotrack models`)."
    if "/" in name or "\\" in name or name.endswith((".pth", ".pt", ".safetensors", ".bin")):
        message += (
            f" {name!r} looks like a file: pass it with --weights {name} and choose its "
            "architecture with --model (for example --model vits16)."
        )
    return message


class Backbone(torch.nn.Module):
    """A frozen DINOv3 ViT that turns normalised images into unit-length patch features.

    Attributes: ``spec``; ``patch_size`` (16); ``dim`` (feature size D);
    ``mean`` and ``std`` (per RGB channel, for images in [0, 1]);
    ``weights_source`` (``"hub:<repo>"``, ``"file:<absolute path>"`` or
    ``"random"``); ``weights_sha256`` (hex digest of the weights file, ``None``
    for random weights).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: BackboneSpec,
        *,
        weights_source: str,
        weights_sha256: str | None,
    ) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        self.spec = spec
        self.patch_size = spec.patch_size
        self.dim = spec.dim
        self.mean = spec.mean
        self.std = spec.std
        self.weights_source = weights_source
        self.weights_sha256 = weights_sha256
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the weights are; inputs must be on the same device."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features of normalised images.

        ``images``: ``[B, 3, H, W]`` float32, already normalised with ``mean``
        and ``std``; H and W multiples of ``patch_size``. Returns
        ``[B, H/16, W/16, D]`` float32: the last block's output after the final
        LayerNorm, patch tokens only, each vector of unit L2 norm.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape [B, 3, H, W], got {list(images.shape)}.")
        batch, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"Image size {height}x{width} is not a multiple of {self.patch_size} pixels.")
        tokens = self.model.forward_features(images)
        patches = tokens[:, self.spec.num_prefix_tokens :].float()
        grid = patches.reshape(batch, height // self.patch_size, width // self.patch_size, -1)
        return F.normalize(grid, dim=-1)


def create_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Build the registered backbone ``name`` in eval mode on ``device``.

    ``weights``: a checkpoint file (Meta's original ``.pth`` or a timm-format
    ``.safetensors`` / ``.pth``); it takes precedence over ``pretrained``.
    Without it, ``pretrained=True`` takes the hub weights (from the HF cache
    when there, downloaded otherwise) and ``pretrained=False`` gives random weights.
    """
    spec = get_backbone_spec(name)
    target = resolve_device(device)
    if weights is not None:
        path = _existing_file(weights, spec)
        source = f"file:{path}"
    elif pretrained:
        path = _hub_weights_file(spec)
        source = f"hub:{spec.hub_id}"
    else:
        model = _timm_model(spec)
        _set_rope_periods(model, None)
        return Backbone(model.to(target), spec, weights_source="random", weights_sha256=None)
    model = _load_model(spec, path, target)
    return Backbone(model, spec, weights_source=source, weights_sha256=_sha256(path))


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


def _timm_model(spec: BackboneSpec) -> torch.nn.Module:
    """The spec's timm model with timm's random initialisation, on the CPU."""
    import timm

    return timm.create_model(spec.timm_name, pretrained=False, **{"num_classes": 0, **spec.timm_kwargs})


def _meta_device_model(spec: BackboneSpec) -> torch.nn.Module:
    """The spec's timm model without storage: shapes only, built in milliseconds."""
    with torch.device("meta"):
        return _timm_model(spec)


# --- loading a weights file ---------------------------------------------------------


def _existing_file(weights: str | Path, spec: BackboneSpec) -> Path:
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UsageError(
            f"--weights {weights}: {path} {problem}. Pass the path of a checkpoint file: "
            f"{_meta_file_phrase(spec)} or a timm-format .safetensors of the same model."
        )
    return path


def _meta_file_phrase(spec: BackboneSpec) -> str:
    if spec.meta_file is None:
        return "Meta's original .pth"
    return f"Meta's original {spec.meta_file} (requested at {META_DOWNLOADS})"


def _load_model(spec: BackboneSpec, path: Path, device: torch.device) -> torch.nn.Module:
    """The spec's timm model on ``device`` holding the weights of ``path`` (checked, lossless)."""
    from timm.models._manipulate import reinit_non_persistent_buffers

    state = _read_state_dict(path)
    model = _meta_device_model(spec)
    _check_architecture(state, model, spec, path)
    periods = state.get("rope_embed.periods")
    if "storage_tokens" in state:
        state = _from_meta_layout(state, model, path)
    _fill_zero_qv_biases(state, model)
    _check_keys(state, model, spec, path)
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    reinit_non_persistent_buffers(model)
    _set_rope_periods(model, periods)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from training-checkpoint nesting."""
    state = _unwrap(_load_file(path), path)
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise UsageError(
            f"{path} is not a state dict of tensors: {not_tensors[0]!r} holds a "
            f"{type(state[not_tensors[0]]).__name__}. Pass a file that holds the model's weights only."
        )
    return state


def _load_file(path: Path) -> object:
    """The file's content: a safetensors file's tensors, else ``torch.load`` restricted to tensors."""
    from safetensors import SafetensorError

    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        with path.open("rb") as stream:  # a stream, so torch.load does not pick a reader by the file's suffix
            return torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if _REFUSED_PICKLE.search(str(error)):
            raise _unsafe_pickle_error(path, error) from None
        raise _corrupt_file_error(path, error) from None
    except (SafetensorError, RuntimeError, EOFError, ValueError, KeyError, IndexError) as error:
        raise _corrupt_file_error(path, error) from None


# what torch's weights-only unpickler says when it meets something that is not a tensor
_REFUSED_PICKLE = re.compile(r"GLOBAL \S+|unrecognized function|Can only create new object")


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts like safetensors: an 8-byte header length, then a JSON object."""
    with path.open("rb") as stream:
        return stream.read(9)[8:] == b"{"


def _corrupt_file_error(path: Path, error: Exception) -> UsageError:
    reason = ": ".join(filter(None, (type(error).__name__, _first_sentence(error))))
    return UsageError(
        f"{path} is truncated or corrupt and cannot be read ({reason}). Download it again "
        "and compare its size (or its sha256) with the source."
    )


def _first_sentence(error: Exception) -> str:
    """The first sentence of the error's message (of its cause, for torch's weights-only wrapper)."""
    lines = str(error).rsplit("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else ""


def _unsafe_pickle_error(path: Path, error: Exception) -> UsageError:
    found = re.search(r"GLOBAL (\S+)", str(error))
    content = f"a {found.group(1)} object" if found else "Python objects that are not tensors"
    return UsageError(
        f"{path} is a pickle that holds more than tensors ({content}), so torch.load with "
        "weights_only=True refused it. dinotrack will not unpickle arbitrary objects, as that can "
        "run any code. Save only the model's state dict (torch.save(model.state_dict(), path)) "
        "or convert it to .safetensors."
    )


_NESTING_KEYS = ("model", "state_dict", "teacher", "model_ema", "module")
_PREFIXES = ("backbone.", "module.")


def _unwrap(content: object, path: Path) -> dict[str, object]:
    """The state dict inside ``content``: descends ``model``/``state_dict``/``teacher`` nests
    and strips a ``backbone.`` or ``module.`` key prefix."""
    while isinstance(content, Mapping) and "cls_token" not in content:
        inner = next((content[key] for key in _NESTING_KEYS if isinstance(content.get(key), Mapping)), None)
        if inner is None:
            break
        content = inner
    if not isinstance(content, Mapping):
        raise UsageError(f"{path} holds a {type(content).__name__}, not a state dict of weights.")
    for prefix in _PREFIXES:
        if prefix + "cls_token" in content:
            return {key[len(prefix) :]: value for key, value in content.items() if key.startswith(prefix)}
    return dict(content)


# --- architecture checks -------------------------------------------------------------


@dataclass(frozen=True)
class _Architecture:
    """What a checkpoint's tensors say about the ViT that made them."""

    dim: int
    depth: int
    patch: int
    mlp_hidden: int
    swiglu: bool
    head_dim: int | None  # known from Meta's rope_embed.periods (head_dim = 4 * len), or from a model

    def fits(self, other: _Architecture) -> bool:
        """Equal, except that an unknown ``head_dim`` fits any."""
        if None in (self.head_dim, other.head_dim):
            return dataclasses.replace(self, head_dim=other.head_dim) == other
        return self == other

    def describe(self) -> str:
        parts = [f"{self.dim}-dim", f"{self.depth} blocks"]
        if self.swiglu:
            parts.append("SwiGLU")
        if self.head_dim:
            parts.append(f"{self.dim // self.head_dim} heads")
        if self.patch != 16:
            parts.append(f"patch {self.patch}")
        return ", ".join(parts)


_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")
# the MLP's first layer: plain MLP, Meta's SwiGLU gate, timm's SwiGLU gate
_MLP_FIRST_KEYS = ("blocks.0.mlp.fc1.weight", "blocks.0.mlp.w1.weight", "blocks.0.mlp.fc1_g.weight")


def _architecture_of(state: Mapping[str, torch.Tensor]) -> _Architecture | None:
    """The architecture of a Meta- or timm-layout state dict; ``None`` if it is no DINOv3 ViT."""
    first_mlp = next((state[key] for key in _MLP_FIRST_KEYS if key in state), None)
    if "cls_token" not in state or "patch_embed.proj.weight" not in state or first_mlp is None:
        return None
    periods = state.get("rope_embed.periods")
    return _Architecture(
        dim=state["cls_token"].shape[-1],
        depth=1 + max(int(match.group(1)) for key in state if (match := _BLOCK_KEY.match(key))),
        patch=state["patch_embed.proj.weight"].shape[-1],
        mlp_hidden=first_mlp.shape[0],
        swiglu="blocks.0.mlp.w1.weight" in state or "blocks.0.mlp.fc1_g.weight" in state,
        head_dim=4 * periods.numel() if periods is not None else None,
    )


def _model_architecture(model: torch.nn.Module) -> _Architecture:
    found = _architecture_of(model.state_dict())
    return dataclasses.replace(found, head_dim=model.blocks[0].attn.head_dim)


def _check_architecture(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, spec: BackboneSpec, path: Path
) -> None:
    found = _architecture_of(state)
    if found is None:
        raise UsageError(
            f"{path} is not a DINOv3 ViT checkpoint: it has no cls_token, patch_embed and "
            f"blocks.0.mlp tensors (its first keys: {', '.join(list(state)[:5])}). Pass "
            f"{_meta_file_phrase(spec)} or a timm-format .safetensors of {spec.name}."
        )
    expected = _model_architecture(model)
    if not found.fits(expected):
        raise UsageError(
            f"{path} does not hold {spec.name} weights ({expected.describe()}): {_lookalike(found)}."
        )


def _lookalike(found: _Architecture) -> str:
    names = [
        spec.name for spec in list_backbones() if found.fits(_model_architecture(_meta_device_model(spec)))
    ]
    if not names:
        return f"it matches no registered model ({found.describe()}); see `dinotrack models`"
    guess = " or ".join(names)
    return f"this checkpoint looks like {guess} ({found.describe()}); run with --model {names[0]}"


def _check_keys(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, spec: BackboneSpec, path: Path
) -> None:
    """A :class:`UsageError` naming the keys that stop a strict load of ``state`` into ``model``."""
    expected = model.state_dict()
    shared = expected.keys() & state.keys()
    problems = {
        "missing": sorted(expected.keys() - state.keys()),
        "unexpected": sorted(state.keys() - expected.keys()),
        "wrong shape": sorted(key for key in shared if expected[key].shape != state[key].shape),
    }
    listed = [f"{kind}: {_some(keys)}" for kind, keys in problems.items() if keys]
    if listed:
        raise UsageError(
            f"{path} does not fit {spec.name} ({'; '.join(listed)}). It may come from a variant of the "
            f"model that dinotrack does not know; pass {_meta_file_phrase(spec)} or the hub weights "
            f"{spec.hub_id}."
        )


def _some(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (" ..." if len(keys) > shown else "")


# --- converting Meta's layout ------------------------------------------------------------


def _from_meta_layout(
    state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path
) -> dict[str, torch.Tensor]:
    """Meta's key layout converted to timm's, losing nothing the model's output depends on.

    Meta's effective q/k/v bias is ``qkv.bias * qkv.bias_mask``; it is computed here,
    so timm's filter (which drops ``bias_mask`` and the k third) keeps exactly the
    q and v biases Meta's model uses.
    """
    from timm.models.eva import checkpoint_filter_fn

    state = dict(state)
    has_qv_biases = model.blocks[0].attn.q_bias is not None
    for key in [key for key in state if key.endswith("attn.qkv.bias")]:
        bias = _effective_qkv_bias(state, key, path)
        if has_qv_biases:
            state[key] = bias
        elif bias.any():
            raise UsageError(
                f"{path} has non-zero q/v biases ({key}), but the chosen timm architecture has none, "
                "so loading it would change the model's output. Choose the model it was trained as."
            )
        else:
            del state[key]
    return checkpoint_filter_fn(state, model)


def _effective_qkv_bias(state: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    """``[3 * D]`` bias that Meta's attention adds; pops the key's ``bias_mask``."""
    bias = state[key]
    mask = state.pop(key.replace("qkv.bias", "qkv.bias_mask"), None)
    if mask is not None:
        if torch.isnan(mask).any():
            raise UsageError(f"{path} is corrupt: {key}_mask holds NaN (a mask never initialised).")
        bias = bias * mask.to(bias.dtype)
    if bias.chunk(3)[1].any():
        raise UsageError(
            f"{path} has a non-zero key bias in {key}. DINOv3 masks the key bias to zero and timm's "
            "attention has none, so this checkpoint cannot be loaded without changing its output."
        )
    return bias


def _fill_zero_qv_biases(state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """A checkpoint of timm's bias-free variant into a ``_qkvb`` model: its biases are zero."""
    if any(key.endswith("attn.q_bias") for key in state):
        return
    for key, tensor in model.state_dict().items():
        if key.endswith(("attn.q_bias", "attn.v_bias")):
            state[key] = torch.zeros(tensor.shape)


def _set_rope_periods(model: torch.nn.Module, periods: torch.Tensor | None) -> None:
    """Use Meta's RoPE periods: the checkpoint's, or timm's float32 ones rounded to bfloat16
    as Meta's released checkpoints store them."""
    rope_periods = model.rope.periods
    values = rope_periods.to(torch.bfloat16) if periods is None else periods
    with torch.no_grad():
        rope_periods.copy_(values.to(torch.float32))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- the Hugging Face hub -------------------------------------------------------------


def _hub_weights_file(spec: BackboneSpec) -> Path:
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
        reason = f"the download failed ({_first_sentence(error)})"
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
        f"cache at {cache_dir}. Either pass --weights PATH with {_meta_file_phrase(spec)} or a "
        f"timm-format .safetensors; or, on a machine with network access, download {HUB_FILENAME} of "
        f"https://huggingface.co/{spec.hub_id} into that cache (HF_HOME or HF_HUB_CACHE choose the "
        "cache; HF_HUB_OFFLINE=1 makes dinotrack use the cache only, without trying the network)."
    )
