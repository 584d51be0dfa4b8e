"""Patch probabilities to label maps: the reference output and the colour refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinotrack import refine
from dinotrack.propagate import labels_to_probs
from dinotrack.refine import probs_to_ids
from dinotrack.structs import PRESETS, TrackConfig, UsageError
from dinotrack.testing import probs_to_ids as literal_probs_to_ids

EDGE = 37  # first column of the right-hand object: not on the 16-pixel patch grid
SIZE = (64, 112)
GRID = (4, 7)


def edge_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A frame split by a sharp vertical colour edge at column EDGE, with mild pixel noise, and its label map."""
    generator = np.random.default_rng(seed)
    ids = np.zeros(SIZE, dtype=np.uint8)
    ids[:, EDGE:] = 1
    colours = np.where(ids[..., None] == 1, [200, 90, 60], [70, 110, 160]).astype(np.float64)
    frame = np.clip(colours + generator.normal(0, 4, (*SIZE, 3)), 0, 255).astype(np.uint8)
    return frame, ids


def boundary_columns(ids: np.ndarray) -> np.ndarray:
    """Per row, the first column labelled 1: ``[H] int``."""
    return (ids == 1).argmax(axis=1)


def test_colour_refinement_moves_a_grid_edge_to_the_pixel_edge():
    frame, ids = edge_scene()
    probs = labels_to_probs(ids, [0, 1], GRID, mode="nearest")  # blocky, as propagated from a nearest first mask
    plain = probs_to_ids(probs, [0, 1], SIZE)
    refined = probs_to_ids(probs, [0, 1], SIZE, refine="colour", guide=frame)
    assert np.abs(boundary_columns(plain) - EDGE).min() >= 4
    assert np.abs(boundary_columns(refined) - EDGE).max() <= 1
    assert set(np.unique(refined)) == {0, 1}


def test_colour_refinement_keeps_the_probabilities_where_the_frame_is_flat():
    _, ids = edge_scene()
    probs = labels_to_probs(ids, [0, 1], GRID, mode="nearest")
    flat = np.full((*SIZE, 3), 128, dtype=np.uint8)
    refined = probs_to_ids(probs, [0, 1], SIZE, refine="colour", guide=flat)
    assert np.array_equal(refined, probs_to_ids(probs, [0, 1], SIZE))


def test_refine_none_is_the_published_output():
    generator = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(4, 9, 13, generator=generator), dim=0)
    labels = [0, 3, 7, 12]
    expected = literal_probs_to_ids(probs, labels, (150, 211))
    frame = np.zeros((150, 211, 3), dtype=np.uint8)
    assert np.array_equal(probs_to_ids(probs, labels, (150, 211)), expected)
    assert np.array_equal(probs_to_ids(probs, labels, (150, 211), refine="none", guide=frame), expected)


def test_paper_preset_is_the_published_method():
    paper = PRESETS["paper"]
    assert (paper.first_mask, paper.upsample, paper.minmax, paper.refine) == ("nearest", "bilinear", True, "none")
    assert (paper.context, paper.radius, paper.neighbourhood, paper.topk, paper.temperature) == (7, 12.0, "circle", 5, 0.2)
    assert PRESETS["default"].refine == "colour" and PRESETS["default"].first_mask == "area"


def many_labels_scene() -> tuple[torch.Tensor, np.ndarray, list[int]]:
    """Four labels in quadrants of a textured frame, probabilities from a coarse grid."""
    generator = np.random.default_rng(2)
    ids = np.zeros((90, 150), dtype=np.uint8)
    ids[:45, 70:], ids[45:, :70], ids[50:, 95:] = 4, 9, 200
    labels = [0, 4, 9, 200]
    palette = {0: (30, 30, 30), 4: (220, 40, 40), 9: (40, 200, 60), 200: (50, 60, 230)}
    frame = np.stack([np.array(palette[i]) for i in ids.flatten()]).reshape(90, 150, 3)
    frame = np.clip(frame + generator.normal(0, 25, frame.shape), 0, 255).astype(np.uint8)
    return labels_to_probs(ids, labels, (6, 10), mode="area"), frame, labels


def test_scoring_only_contested_cells_equals_scoring_every_pixel(monkeypatch: pytest.MonkeyPatch):
    probs, frame, labels = many_labels_scene()
    contested_only = probs_to_ids(probs, labels, frame.shape[:2], refine="colour", guide=frame)
    monkeypatch.setattr(refine, "CONTESTED", 0.0)  # every label is probable everywhere
    every_pixel = probs_to_ids(probs, labels, frame.shape[:2], refine="colour", guide=frame)
    assert np.array_equal(contested_only, every_pixel)
    assert set(np.unique(contested_only)) == set(labels)


def test_colour_refinement_in_small_chunks_gives_the_same_map(monkeypatch: pytest.MonkeyPatch):
    probs, frame, labels = many_labels_scene()
    whole = probs_to_ids(probs, labels, frame.shape[:2], refine="colour", guide=torch.from_numpy(frame))
    monkeypatch.setattr(refine, "POINT_BUDGET", 1)  # the smallest chunk, 4096 pixels
    assert np.array_equal(probs_to_ids(probs, labels, frame.shape[:2], refine="colour", guide=frame), whole)


def test_colour_refinement_handles_frames_smaller_than_its_cell_grid():
    probs = torch.tensor([[[1.0, 0.2], [0.0, 0.9]], [[0.0, 0.8], [1.0, 0.1]]])
    frame = np.random.default_rng(3).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    ids = probs_to_ids(probs, [0, 5], (5, 3), refine="colour", guide=frame)
    assert ids.shape == (5, 3) and ids.dtype == np.uint8 and set(np.unique(ids)) <= {0, 5}


def test_colour_refinement_needs_a_guide_and_bilinear_upsampling():
    with pytest.raises(ValueError, match="guide"):
        probs_to_ids(torch.ones(2, 3, 3) / 2, [0, 1], (48, 48), refine="colour")
    with pytest.raises(UsageError, match="bilinear"):
        TrackConfig(refine="colour", upsample="nearest")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_colour_refinement_on_cuda_equals_cpu():
    probs, frame, labels = many_labels_scene()
    on_cpu = probs_to_ids(probs, labels, frame.shape[:2], refine="colour", guide=frame)
    on_cuda = probs_to_ids(probs.cuda(), labels, frame.shape[:2], refine="colour", guide=frame)
    assert np.mean(on_cpu == on_cuda) > 0.999
