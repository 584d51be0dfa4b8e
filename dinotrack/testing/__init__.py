"""Test and benchmark helpers. Not for production use: nothing else in dinotrack imports them.

* A tiny random backbone, ``TINY`` (64-dim, 2 blocks, 2 heads), and writers of
  its random weights in Meta's and timm's key layouts: a whole
  ``dinotrack track`` runs in a second or two on a CPU.
* The literal reference propagation (full similarity matrix, as published),
  which dinotrack's windowed propagation must match.
"""

from dinotrack.testing.checkpoints import (
    TINY,
    meta_state_dict,
    random_timm_model,
    register_tiny_backbone,
    registered,
    write_meta_checkpoint,
    write_timm_checkpoint,
)
from dinotrack.testing.literal import neighbourhood_mask, probs_to_ids, propagate_literal

__all__ = [
    "TINY",
    "meta_state_dict",
    "neighbourhood_mask",
    "probs_to_ids",
    "propagate_literal",
    "random_timm_model",
    "register_tiny_backbone",
    "registered",
    "write_meta_checkpoint",
    "write_timm_checkpoint",
]
