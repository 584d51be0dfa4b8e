"""DINOv3 backbones: named specs, one build path, weights from a file or the hub.

The package follows timm's split of the same job:

* :mod:`~dinotrack.backbones.registry`: :class:`BackboneSpec` and the names
  that ``--model`` accepts;
* :mod:`~dinotrack.backbones.model`: the :class:`Backbone` module and
  :func:`create_backbone`, which every caller goes through;
* :mod:`~dinotrack.backbones.checkpoints`: reading, checking and converting
  weights files (no network);
* :mod:`~dinotrack.backbones.hub`: the Hugging Face hub, through
  huggingface_hub;
* :mod:`~dinotrack.backbones.devices`: :func:`resolve_device`.

Weights come from ``weights=PATH`` (Meta's original ``.pth`` or a timm-format
state dict), else from the hub (``pretrained=True``), else are random
(``pretrained=False``, for tests and timing). timm, safetensors and
huggingface_hub are imported only when a model is built.
"""

from dinotrack.backbones.devices import resolve_device
from dinotrack.backbones.model import Backbone, create_backbone, weights_source
from dinotrack.backbones.registry import (
    LVD1689M_MEAN,
    LVD1689M_STD,
    SAT493M_MEAN,
    SAT493M_STD,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
    unregister_backbone,
)

__all__ = [
    "LVD1689M_MEAN",
    "LVD1689M_STD",
    "SAT493M_MEAN",
    "SAT493M_STD",
    "Backbone",
    "BackboneSpec",
    "create_backbone",
    "get_backbone_spec",
    "list_backbones",
    "register_backbone",
    "resolve_device",
    "unregister_backbone",
    "weights_source",
]
