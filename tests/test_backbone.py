"""The backbone registry and the weights loader, on tiny random checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import save_file

from dinotrack.backbones import (
    Backbone,
    create_backbone,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)
from dinotrack.structs import DinotrackError, UsageError
from dinotrack.testing import (
    TINY,
    meta_state_dict,
    random_timm_model,
    register_tiny_backbone,
    registered,
    write_meta_checkpoint,
    write_timm_checkpoint,
)

TINY_SWIGLU = dataclasses.replace(TINY, name="tiny-swiglu", timm_name="vit_small_plus_patch16_dinov3_qkvb")


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""


@pytest.fixture(scope="module", autouse=True)
def tiny_backbones():
    register_tiny_backbone()
    with registered(TINY_SWIGLU):
        yield


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(1))


def features(path: Path, images: torch.Tensor, name: str = "tiny") -> torch.Tensor:
    return create_backbone(name, weights=path)(images)


DINOV3_NAMES = ["vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16", "vitl16-sat", "vit7b16-sat"]


def test_registry_holds_the_dinov3_family_on_matching_timm_architectures():
    assert [spec.name for spec in list_backbones()][:8] == DINOV3_NAMES
    for spec in list_backbones()[:8]:
        with torch.device("meta"):
            model = timm.create_model(spec.timm_name, num_classes=0)
        assert (model.embed_dim, len(model.blocks), model.num_prefix_tokens) == (spec.dim, spec.depth, 5)
        assert spec.hub_id == f"timm/{spec.timm_name}.{'sat493m' if spec.name.endswith('-sat') else 'lvd1689m'}"
        assert spec.meta_file.startswith(f"dinov3_{spec.name.removesuffix('-sat')}_pretrain_")
        assert (spec.mean[2] == 0.296) == spec.name.endswith("-sat")


def test_register_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(TINY)


def test_spec_by_value_or_by_import_path_needs_no_registration(tmp_path, images):
    unregistered = dataclasses.replace(TINY, name="tiny-unregistered")
    path = write_timm_checkpoint(tmp_path / "tiny.safetensors", unregistered)
    by_value = create_backbone(unregistered, weights=path)
    assert by_value.spec is unregistered and unregistered not in list_backbones()
    assert get_backbone_spec("dinotrack.testing:TINY") is TINY
    assert torch.equal(create_backbone("dinotrack.testing:TINY", weights=path)(images), by_value(images))


def test_unknown_model_lists_known_names_and_spots_paths():
    with pytest.raises(UsageError, match="vits16plus") as error:
        get_backbone_spec("vit_s16")
    assert "--weights" not in str(error.value)
    with pytest.raises(UsageError, match="--weights ckpt/dinov3.pth"):
        create_backbone("ckpt/dinov3.pth")


def test_features_are_unit_patch_vectors_of_a_non_square_grid(tmp_path, images):
    backbone = create_backbone("tiny", weights=write_timm_checkpoint(tmp_path / "tiny.safetensors"))
    out = backbone(images)
    assert out.shape == (2, 3, 5, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3, 5))
    assert not out.requires_grad


def test_features_are_last_block_after_final_norm_without_prefix_tokens(tmp_path, images):
    backbone = create_backbone("tiny", weights=write_timm_checkpoint(tmp_path / "tiny.safetensors"))
    model = backbone.model
    last_block = model.forward_intermediates(images, indices=[1], intermediates_only=True, output_fmt="NLC")[0]
    tokens = model.norm(last_block)
    expected = torch.nn.functional.normalize(tokens, dim=-1).reshape(2, 3, 5, 64)
    torch.testing.assert_close(backbone(images), expected)


def test_image_size_not_a_multiple_of_16_is_refused(tmp_path):
    backbone = create_backbone("tiny", pretrained=False)
    with pytest.raises(ValueError, match="not a multiple of 16 pixels"):
        backbone(torch.zeros(1, 3, 50, 64))


@pytest.mark.parametrize("name", ["tiny", "tiny-swiglu"])
def test_meta_pth_and_timm_safetensors_give_identical_features(tmp_path, images, name):
    meta = features(write_meta_checkpoint(tmp_path / "meta.pth", name, seed=3), images, name)
    timm_features = features(write_timm_checkpoint(tmp_path / "timm.safetensors", name, seed=3), images, name)
    assert torch.equal(meta, timm_features)


def test_meta_checkpoint_keys_are_metas(tmp_path):
    keys = set(torch.load(write_meta_checkpoint(tmp_path / "m.pth", "tiny-swiglu"), weights_only=True))
    assert {"cls_token", "storage_tokens", "mask_token", "rope_embed.periods", "norm.weight"} <= keys
    assert {"blocks.1.attn.qkv.bias_mask", "blocks.1.ls2.gamma", "blocks.1.mlp.w3.weight"} <= keys
    assert not any("reg_token" in key or "gamma_" in key or "q_bias" in key for key in keys)


def test_meta_qv_biases_are_kept_and_change_the_features(tmp_path, images):
    meta = meta_state_dict(random_timm_model("tiny"))
    torch.save(meta, tmp_path / "with.pth")
    backbone = create_backbone("tiny", weights=tmp_path / "with.pth")
    q_bias, _, v_bias = meta["blocks.0.attn.qkv.bias"].chunk(3)
    assert torch.equal(backbone.model.blocks[0].attn.q_bias, q_bias)
    assert torch.equal(backbone.model.blocks[0].attn.v_bias, v_bias)
    assert torch.equal(backbone.model.rope.periods, meta["rope_embed.periods"].float())
    for key in [key for key in meta if key.endswith("qkv.bias")]:
        meta[key] = torch.zeros_like(meta[key])
    torch.save(meta, tmp_path / "without.pth")
    assert not torch.allclose(backbone(images), features(tmp_path / "without.pth", images), atol=1e-3)


def test_masked_k_bias_is_ignored_as_in_metas_model(tmp_path, images):
    meta = meta_state_dict(random_timm_model("tiny"))
    torch.save(meta, tmp_path / "clean.pth")
    dim = TINY.dim
    meta["blocks.0.attn.qkv.bias"][dim : 2 * dim] = 5.0  # masked by bias_mask == 0
    torch.save(meta, tmp_path / "masked.pth")
    assert torch.equal(features(tmp_path / "clean.pth", images), features(tmp_path / "masked.pth", images))


def test_unmasked_k_bias_is_refused(tmp_path):
    meta = meta_state_dict(random_timm_model("tiny"))
    meta["blocks.0.attn.qkv.bias"][TINY.dim : 2 * TINY.dim] = 5.0
    meta["blocks.0.attn.qkv.bias_mask"].fill_(1.0)
    torch.save(meta, tmp_path / "kbias.pth")
    with pytest.raises(UsageError, match="non-zero key bias"):
        create_backbone("tiny", weights=tmp_path / "kbias.pth")


def test_timm_checkpoint_without_qv_biases_loads_with_zero_biases(tmp_path, images):
    state = random_timm_model("tiny").state_dict()
    is_bias = {key: key.endswith(("q_bias", "v_bias")) for key in state}
    save_file({key: value for key, value in state.items() if not is_bias[key]}, str(tmp_path / "biasfree.safetensors"))
    save_file({key: value * (not is_bias[key]) for key, value in state.items()}, str(tmp_path / "zeroed.safetensors"))
    biasfree = features(tmp_path / "biasfree.safetensors", images)
    assert torch.equal(biasfree, features(tmp_path / "zeroed.safetensors", images))


def test_nested_training_checkpoint_loads(tmp_path, images):
    meta = meta_state_dict(random_timm_model("tiny"))
    torch.save(meta, tmp_path / "plain.pth")
    teacher = {f"backbone.{key}": value for key, value in meta.items()}
    torch.save({"teacher": teacher, "iteration": 7}, tmp_path / "train.pth")
    assert torch.equal(features(tmp_path / "plain.pth", images), features(tmp_path / "train.pth", images))


@pytest.mark.parametrize("writer", [write_meta_checkpoint, write_timm_checkpoint])
def test_checkpoint_of_another_model_names_the_lookalike(tmp_path, writer):
    path = writer(tmp_path / "swiglu.ckpt", "tiny-swiglu")
    expected = "looks like tiny-swiglu .*64-dim, 2 blocks, SwiGLU.*run with --model tiny-swiglu"
    with pytest.raises(UsageError, match=expected):
        create_backbone("tiny", weights=path)


def test_checkpoint_of_unregistered_model_says_so(tmp_path):
    meta = meta_state_dict(random_timm_model("tiny"))
    meta["rope_embed.periods"] = meta["rope_embed.periods"][:4]  # head_dim 16: 4 heads
    torch.save(meta, tmp_path / "heads.pth")
    with pytest.raises(UsageError, match="matches no registered model .*4 heads"):
        create_backbone("tiny", weights=tmp_path / "heads.pth")


def test_pickle_with_objects_is_refused(tmp_path):
    torch.save({"cls_token": torch.zeros(1, 1, 64), "config": NotATensor()}, tmp_path / "objects.pth")
    with pytest.raises(UsageError, match="NotATensor object.*will not unpickle arbitrary objects"):
        create_backbone("tiny", weights=tmp_path / "objects.pth")


@pytest.mark.parametrize("writer", [write_meta_checkpoint, write_timm_checkpoint])
def test_truncated_file_is_a_clear_error(tmp_path, writer):
    path = writer(tmp_path / ("t.pth" if writer is write_meta_checkpoint else "t.safetensors"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DinotrackError, match="truncated or corrupt") as raised:
        create_backbone("tiny", weights=path)
    assert raised.value.exit_code == 1  # found while loading: a failure at run time


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("https://example.org/dinov3_vits16.pth\n")
    with pytest.raises(UsageError, match="is a text file .* not a checkpoint"):
        create_backbone("tiny", weights=path)


def test_missing_file_names_metas_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist.*dinov3_vits16_pretrain_lvd1689m-08c60483.pth"):
        create_backbone("vits16", weights=tmp_path / "nope.pth")


def test_weights_provenance(tmp_path):
    path = write_timm_checkpoint(tmp_path / "tiny.safetensors")
    backbone = create_backbone("tiny", weights=path)
    assert backbone.weights_source == f"file:{path.resolve()}"
    assert backbone.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (backbone.patch_size, backbone.dim, backbone.mean) == (16, 64, TINY.mean)
    random = create_backbone("tiny", pretrained=False)
    assert (random.weights_source, random.weights_sha256) == ("random", None)
    assert isinstance(random, Backbone) and not random.training


def test_weights_are_hashed_once_while_the_file_is_unchanged(tmp_path, monkeypatch):
    path = write_timm_checkpoint(tmp_path / "tiny.safetensors")
    hashed = []

    def counted_sha256():
        hashed.append(path)
        return hashlib.sha256()

    monkeypatch.setattr("dinotrack.backbones.checkpoints.hashlib", SimpleNamespace(sha256=counted_sha256))
    first = create_backbone("tiny", weights=path).weights_sha256
    assert create_backbone("tiny", weights=tmp_path / "." / "tiny.safetensors").weights_sha256 == first
    assert len(hashed) == 1
    before = path.stat()
    write_timm_checkpoint(path, seed=1)  # same size, other bytes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1))
    assert create_backbone("tiny", weights=path).weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first
    assert len(hashed) == 2


def test_unknown_device_is_a_usage_error():
    with pytest.raises(UsageError, match="device"):
        create_backbone("tiny", pretrained=False, device="tpu")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face home and HF_HUB_OFFLINE=1; returns the hub cache folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return tmp_path / "hf" / "hub"


def test_offline_hub_fails_fast_with_every_way_to_get_weights(offline_hub):
    start = time.monotonic()
    with pytest.raises(DinotrackError) as error:
        create_backbone("vits16")
    assert time.monotonic() - start < 3
    message = str(error.value)
    meta_file, hub_id = "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", "timm/vit_small_patch16_dinov3_qkvb.lvd1689m"
    for hint in ("--weights", meta_file, hub_id, "HF_HUB_OFFLINE", str(offline_hub)):
        assert hint in message


def test_unreachable_hub_set_after_import_fails_fast(offline_hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: refused at once, no network needed
    start = time.monotonic()
    with pytest.raises(DinotrackError) as error:
        create_backbone("vits16")
    assert time.monotonic() - start < 3
    assert "http://127.0.0.1:9 cannot be reached" in str(error.value) and str(offline_hub) in str(error.value)


def test_hub_weights_come_from_the_cache_through_the_file_loader(offline_hub, tmp_path, images):
    repo = offline_hub / "models--dinotrack-test--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    write_timm_checkpoint(snapshot / "model.safetensors")
    with registered(dataclasses.replace(TINY, name="tiny-hub", hub_id="dinotrack-test/tiny")):
        backbone = create_backbone("tiny-hub")
    assert backbone.weights_source == "hub:dinotrack-test/tiny"
    assert torch.equal(backbone(images), features(snapshot / "model.safetensors", images))
