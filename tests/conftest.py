"""Shared fixtures: a tiny random DINOv3 checkpoint, the sample clip, the shared DAVIS data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dinotrack.testing import register_tiny_backbone, write_meta_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_videos"
SHARED_DATA = ROOT.parent / "shared" / "data"
DAVIS = SHARED_DATA / "DAVIS"

# The tests run tiny models, where a second intra-op thread only adds waiting
# (badly so when other processes share the two cores): one thread keeps them fast.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random checkpoint of the registered "tiny" backbone, in Meta's key layout."""
    register_tiny_backbone()
    return write_meta_checkpoint(tmp_path_factory.mktemp("weights") / "dinov3_tiny_random.pth", "tiny", seed=0)


@pytest.fixture
def davis() -> Path:
    """The shared DAVIS sequences (skips when ../shared/data is absent, as in a user's clone)."""
    if not (DAVIS / "JPEGImages" / "480p" / "blackswan").is_dir():
        pytest.skip(f"shared DAVIS data not found at {DAVIS}")
    return DAVIS
