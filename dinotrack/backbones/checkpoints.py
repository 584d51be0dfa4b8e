"""Weights files: reading them safely, checking their architecture, converting Meta's layout.

Pure functions of local files, no network. A checkpoint is either Meta's
original ``.pth`` (converted with timm's DINOv3 checkpoint filter) or a
timm-format ``.safetensors`` / ``.pth`` state dict. Pickles are read with
``torch.load(weights_only=True)``, so a file that holds anything but tensors is
refused.

The conversion of Meta's files is lossless. The q and v biases are kept: every
builtin spec uses timm's ``_qkvb`` architecture, except ViT-7B, which Meta
trained without q/k/v biases. Meta masks the k bias with ``bias_mask``. The mask
is applied before timm's filter splits the bias, and a k bias the mask leaves
non-zero is refused (timm's attention has no k bias). Meta's checkpoints keep
the RoPE periods as bfloat16 values, and those values are used. The timm files
do not store periods; for them timm's float32 periods are rounded to bfloat16,
so both sources give the same features as Meta's own model.

timm and safetensors are imported only when a model is built.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from dinotrack.backbones.registry import BackboneSpec, list_backbones
from dinotrack.structs import DinotrackError, UsageError

META_DOWNLOADS = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"


# --- the timm model behind a spec ------------------------------------------------------


def timm_model(spec: BackboneSpec) -> torch.nn.Module:
    """The spec's timm model with timm's random initialisation, on the CPU."""
    import timm

    return timm.create_model(spec.timm_name, pretrained=False, **{"num_classes": 0, **spec.timm_kwargs})


def _meta_device_model(spec: BackboneSpec) -> torch.nn.Module:
    """The spec's timm model without storage: shapes only, built in milliseconds."""
    with torch.device("meta"):
        return timm_model(spec)


# --- loading a weights file ---------------------------------------------------------


def existing_file(weights: str | Path, spec: BackboneSpec) -> Path:
    """``weights`` as an absolute path; a :class:`UsageError` when it is no file."""
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UsageError(
            f"--weights {weights}: {path} {problem}. Pass the path of a checkpoint file: "
            f"{meta_file_phrase(spec)} or a timm-format .safetensors of the same model."
        )
    text = _text_start(path)
    if text is not None:
        raise UsageError(
            f"--weights {weights} is a text file (it starts with {text!r}), not a checkpoint. Pass the "
            f"checkpoint file itself: {meta_file_phrase(spec)} or a timm-format .safetensors of the same model."
        )
    return path


def _text_start(path: Path, size: int = 512) -> str | None:
    """The first line of ``path`` (at most 40 characters) if its first ``size`` bytes are text, else ``None``.

    Checkpoints (zip archives, pickles, safetensors) start with binary bytes;
    a text file is a download page, a README or a list of links saved by mistake.
    """
    with path.open("rb") as stream:
        head = stream.read(size)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # also a multi-byte character cut at the end: binary enough not to guess
        return None
    if not text or not all(char.isprintable() or char in "\t\r\n" for char in text):
        return None
    return text.strip().splitlines()[0][:40] if text.strip() else text[:40]


def meta_file_phrase(spec: BackboneSpec) -> str:
    """Meta's checkpoint of ``spec`` and where to ask for it, for messages."""
    if spec.meta_file is None:
        return "Meta's original .pth"
    return f"Meta's original {spec.meta_file} (requested at {META_DOWNLOADS})"


def load_model(spec: BackboneSpec, path: Path, device: torch.device) -> torch.nn.Module:
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
    set_rope_periods(model, periods)
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


def _corrupt_file_error(path: Path, error: Exception) -> DinotrackError:
    """A damaged download: found while loading, so a failure at run time (exit status 1)."""
    reason = ": ".join(filter(None, (type(error).__name__, first_sentence(error))))
    return DinotrackError(
        f"{path} is truncated or corrupt and cannot be read ({reason}). Download it again "
        "and compare its size (or its sha256) with the source."
    )


def first_sentence(error: Exception) -> str:
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
            f"{meta_file_phrase(spec)} or a timm-format .safetensors of {spec.name}."
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
            f"model that dinotrack does not know; pass {meta_file_phrase(spec)} or the hub weights "
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


def set_rope_periods(model: torch.nn.Module, periods: torch.Tensor | None) -> None:
    """Use Meta's RoPE periods: the checkpoint's, or timm's float32 ones rounded to bfloat16
    as Meta's released checkpoints store them."""
    rope_periods = model.rope.periods
    values = rope_periods.to(torch.bfloat16) if periods is None else periods
    with torch.no_grad():
        rope_periods.copy_(values.to(torch.float32))


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file's bytes, read once per process while its size and mtime stay the same,
    so that building the same backbone again does not hash gigabytes again."""
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Hex sha256 of ``path``; ``size`` and ``mtime_ns`` only key the cache, so a changed file is read again."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
