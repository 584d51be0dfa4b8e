"""Label propagation on synthetic features whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinotrack.propagate import LabelPropagator, labels_to_probs, neighbourhood_offsets
from dinotrack.refine import probs_to_ids
from dinotrack.testing import probs_to_ids as literal_probs_to_ids
from dinotrack.testing import propagate_literal


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def drifting_features(h: int, w: int, dim: int, frames: int, seed: int = 0) -> list[torch.Tensor]:
    """Random [h, w, D] features that shift one patch right per frame, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(h, w, dim, generator=generator)
    return [unit(base.roll(t, 1) + 0.6 * torch.randn(h, w, dim, generator=generator)) for t in range(frames)]


def run_fast(first, probs, rest, **settings):
    propagator = LabelPropagator(**settings)
    propagator.add_keyframe(first, probs)
    return [propagator.step(f) for f in rest]


@pytest.mark.parametrize(
    "h, w, settings",
    [
        (9, 13, dict(radius=3.0, neighbourhood="circle")),
        (9, 13, dict(radius=2.5, neighbourhood="square", topk=3, temperature=0.1)),
        (20, 30, dict(radius=12.0, context=3)),
        (5, 7, dict(radius=0.0, context=2, topk=2)),
        (17, 11, dict(radius=4.0, topk=10, temperature=0.05, context=4)),
        (3, 40, dict(radius=30.0, neighbourhood="square", context=1)),
        (9, 13, dict(radius=30.0, neighbourhood="square", context=2, tile=4)),  # reach beyond the grid
        (6, 21, dict(radius=5.0, tile=3)),  # row length not a whole number of tiles
    ],
)
@pytest.mark.parametrize("path", ["windowed", "dense"])
def test_propagation_equals_literal(h, w, settings, path):
    features = drifting_features(h, w, 16, 10)
    probs = torch.softmax(3 * torch.randn(3, h, w, generator=torch.Generator().manual_seed(1)), 0)
    literal_settings = {"shape" if k == "neighbourhood" else k: v for k, v in settings.items() if k != "tile"}
    expected = list(propagate_literal(features[0], probs, features[1:], **literal_settings))
    got = run_fast(features[0], probs, features[1:], **settings, path=path)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-5)


def test_auto_path_is_dense_on_small_grids_only():
    propagator = LabelPropagator(radius=12.0)
    assert propagator.dense_for((15, 27))  # S=240
    assert not propagator.dense_for((30, 54))  # S=480
    assert not LabelPropagator(radius=2.0).dense_for((15, 27))


@pytest.mark.parametrize("path", ["windowed", "dense"])
def test_masks_identical_to_literal_at_s240(path):
    """On the S=240 grid (15x27) with backbone-sized features, both paths give the literal algorithm's label maps."""
    features = drifting_features(15, 27, 384, 12)
    probs = torch.softmax(3 * torch.randn(3, 15, 27, generator=torch.Generator().manual_seed(2)), 0)
    expected = propagate_literal(features[0], probs, features[1:])
    got = run_fast(features[0], probs, features[1:], path=path)
    for e, g in zip(expected, got):
        assert np.array_equal(literal_probs_to_ids(e, [0, 1, 2], (240, 432)), literal_probs_to_ids(g, [0, 1, 2], (240, 432)))


def test_offsets_count_and_shape():
    circle = neighbourhood_offsets(12, "circle")
    assert len(circle) == sum(1 for dy in range(-12, 13) for dx in range(-12, 13) if dy * dy + dx * dx <= 144)
    assert len(neighbourhood_offsets(2, "square")) == 25
    assert neighbourhood_offsets(0, "circle").tolist() == [[0, 0]]


def test_labels_follow_a_moving_object():
    """Features encode object identity (+ noise); the label must move with the object."""
    h, w, dim, size = 16, 24, 32, 5
    generator = torch.Generator().manual_seed(0)
    identity = unit(torch.randn(2, dim, generator=generator))

    def frame(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        truth = torch.zeros(h, w, dtype=torch.long)
        truth[5 : 5 + size, 2 + t : 2 + t + size] = 1
        feats = identity[truth] + 0.15 * torch.randn(h, w, dim, generator=generator)
        return unit(feats), truth

    first_features, first_truth = frame(0)
    first_probs = F.one_hot(first_truth, 2).permute(2, 0, 1).float()
    propagator = LabelPropagator(radius=4.0)
    propagator.add_keyframe(first_features, first_probs)
    for t in range(1, 15):
        feats, truth = frame(t)
        predicted = propagator.step(feats).argmax(0)
        assert (predicted == truth).float().mean() > 0.98, f"frame {t}"


def one_row(values: list[int], dim: int = 8) -> torch.Tensor:
    """[1, n, D] features: patch i gets the basis vector e_values[i]."""
    return torch.eye(dim)[values][None]


def test_neighbourhood_excludes_far_matches():
    # The only context patch like the query's patch at x=15 is at x=0, 15 patches away.
    context = one_row([1] + [2] * 19)
    probs = torch.zeros(2, 1, 20)
    probs[1, 0, 0] = 1  # label 1 at x=0 only
    probs[0, 0, 1:] = 1
    query = one_row([2] * 15 + [1] + [2] * 4)
    near = LabelPropagator(radius=3, topk=1)
    near.add_keyframe(context, probs)
    far = LabelPropagator(radius=20, topk=1)
    far.add_keyframe(context, probs)
    assert near.predict(query)[1, 0, 15] == 0
    assert far.predict(query)[1, 0, 15] == pytest.approx(1.0)


def test_square_and_circle_differ_at_corners():
    # The matching patch sits diagonally at (2, 2): inside a square of radius 2, outside a circle.
    context = torch.eye(4)[torch.tensor([[1, 2, 2], [2, 2, 2], [2, 2, 2]])]
    probs = torch.zeros(2, 3, 3)
    probs[1, 0, 0] = 1
    probs[0] = 1 - probs[1]
    query = torch.eye(4)[torch.tensor([[2, 2, 2], [2, 2, 2], [2, 2, 1]])]
    square = LabelPropagator(radius=2, neighbourhood="square", topk=1)
    circle = LabelPropagator(radius=2, neighbourhood="circle", topk=1)
    for p in (square, circle):
        p.add_keyframe(context, probs)
    assert square.predict(query)[1, 2, 2] == pytest.approx(1.0)
    assert circle.predict(query)[1, 2, 2] == 0


def test_topk_and_temperature_weights():
    # Query patch 0 has similarity 1.0 with patch 0 (label 1) and 0.6 with patches 1, 2 (label 0).
    sims = torch.tensor([1.0, 0.6, 0.6])
    query = torch.tensor([[[1.0, 0.0]]]).expand(1, 3, 2).clone()
    context = torch.stack([sims, (1 - sims**2).sqrt()], dim=-1)[None]
    probs = torch.tensor([[[0.0, 1.0, 1.0]], [[1.0, 0.0, 0.0]]])
    for topk, temperature in [(1, 0.2), (2, 0.2), (3, 0.2), (3, 0.05), (3, 1.0)]:
        propagator = LabelPropagator(radius=5, topk=topk, temperature=temperature)
        propagator.add_keyframe(context, probs)
        kept = sims[:topk]
        weights = torch.softmax(kept / temperature, 0)
        expected = float(weights[0])
        assert propagator.predict(query)[1, 0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_context_queue_drops_the_oldest_frame():
    a, b = one_row([1, 1, 1]), one_row([2, 2, 2])
    background = torch.stack([torch.ones(1, 3), torch.zeros(1, 3)])
    labelled = torch.stack([torch.zeros(1, 3), torch.ones(1, 3)])
    results = {}
    for context in (2, 3):
        propagator = LabelPropagator(radius=1, topk=1, context=context)
        propagator.add_keyframe(b, background)
        for feats, probs in [(a, labelled), (b, background), (b, background)]:
            propagator.queue.append((feats, probs))
        assert len(propagator.queue) == context
        results[context] = propagator.predict(a)[1].max().item()
    assert results[2] == 0  # the only frame like the query was pushed 3 frames ago
    assert results[3] == pytest.approx(1.0)


def test_step_pushes_and_keyframe_restarts_the_queue():
    feats = drifting_features(4, 5, 8, 6)
    propagator = LabelPropagator(context=2)
    propagator.add_keyframe(feats[0], torch.ones(1, 4, 5))
    for f in feats[1:5]:
        propagator.step(f)
    assert len(propagator.queue) == 2
    propagator.add_keyframe(feats[5], torch.ones(1, 4, 5))
    assert len(propagator.queue) == 0 and len(propagator.keyframes) == 2


def test_probabilities_sum_to_one():
    feats = drifting_features(6, 9, 8, 4)
    probs = torch.softmax(torch.randn(4, 6, 9), 0)
    for out in run_fast(feats[0], probs, feats[1:]):
        assert torch.allclose(out.sum(0), torch.ones(6, 9), atol=1e-5)


def test_nearest_downsample_drops_a_small_object_but_area_keeps_it():
    ids = np.zeros((64, 64), dtype=np.uint8)
    ids[2:6, 2:6] = 7  # 4x4 pixels inside one 16x16 patch, away from its sampled centre
    nearest = labels_to_probs(ids, [0, 7], (4, 4), mode="nearest")
    area = labels_to_probs(ids, [0, 7], (4, 4), mode="area")
    assert nearest[1].max() == 0
    assert area[1, 0, 0].item() == pytest.approx(16 / 256)
    assert torch.allclose(area.sum(0), torch.ones(4, 4))


def test_probs_to_ids_equals_the_published_upsampling():
    generator = torch.Generator().manual_seed(3)
    probs = torch.softmax(2 * torch.randn(3, 6, 10, generator=generator), 0)
    labels = [0, 4, 9]
    expected = literal_probs_to_ids(probs, labels, (97, 161))
    assert np.array_equal(probs_to_ids(probs, labels, (97, 161)), expected)
    assert set(np.unique(expected)) <= set(labels)


def test_windowed_propagation_cost_is_local():
    """At the paper's S=960 grid, only ~pi*r^2 neighbours per context frame are scored."""
    offsets = neighbourhood_offsets(12, "circle")
    assert len(offsets) < 1.05 * math.pi * 144 + 30
