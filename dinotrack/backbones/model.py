"""The backbone module and :func:`create_backbone`, the one path that builds it."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dinotrack.backbones.checkpoints import existing_file, file_sha256, load_model, set_rope_periods, timm_model
from dinotrack.backbones.devices import resolve_device
from dinotrack.backbones.hub import hub_weights_file
from dinotrack.backbones.registry import BackboneSpec, get_backbone_spec


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
    model: str | BackboneSpec,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Build the backbone ``model`` in eval mode on ``device``.

    ``model``: a registered name, a :class:`BackboneSpec`, or the import path
    ``"package.module:ATTRIBUTE"`` of one (see :func:`get_backbone_spec`).
    ``weights``: a checkpoint file (Meta's original ``.pth`` or a timm-format
    ``.safetensors`` / ``.pth``); it takes precedence over ``pretrained``.
    Without it, ``pretrained=True`` takes the hub weights (from the HF cache
    when there, downloaded otherwise) and ``pretrained=False`` gives random weights.
    """
    spec = get_backbone_spec(model)
    target = resolve_device(device)
    source = weights_source(spec, weights, pretrained=pretrained)
    if weights is not None:
        path = existing_file(weights, spec)
    elif pretrained:
        path = hub_weights_file(spec)
    else:
        vit = timm_model(spec)
        set_rope_periods(vit, None)
        return Backbone(vit.to(target), spec, weights_source=source, weights_sha256=None)
    vit = load_model(spec, path, target)
    return Backbone(vit, spec, weights_source=source, weights_sha256=file_sha256(path))


def weights_source(spec: BackboneSpec, weights: str | Path | None = None, *, pretrained: bool = True) -> str:
    """Where :func:`create_backbone` takes the weights from, as recorded: ``"file:<absolute path>"``,
    ``"hub:<repository>"`` or ``"random"``. Known without loading anything."""
    if weights is not None:
        return f"file:{Path(weights).expanduser().resolve()}"
    return f"hub:{spec.hub_id}" if pretrained else "random"
