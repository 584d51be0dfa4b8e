"""Patch probabilities to label maps: the reference output and the colour refinement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinotrack import refine
from dinotrack.masks import object_ids, read_label_map
from dinotrack.propagate import labels_to_probs
from dinotrack.refine import probs_to_ids
from dinotrack.structs import PRESETS, TrackConfig, UsageError
from dinotrack.testing import probs_to_ids as literal_probs_to_ids
from reference_refine import _box_mean as reference_box_mean
from reference_refine import reference_colour_ids, reference_ids

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
    monkeypatch.setattr(refine, "POINT_BUDGET", 1)  # the smallest chunk: one cell
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


# --- The band: the same label maps as the full-resolution reference (tests/reference_refine.py) ---


def probability_maps(kind: str, labels: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``[labels, h, w]`` float32 probabilities of one ``kind``.

    ``smooth``: softmax of smoothed noise, soft boundaries. ``blocky``: one-hot
    patches (plateaus of exact 0 and 1, as a nearest first mask gives).
    ``ties``: rounded to quarters, so that labels tie exactly and extremes are
    reached on plateaus. ``constant``: ``smooth`` with the last label constant
    and, with 3 labels or more, the one before it all zero (a retired label).
    """
    generator = torch.Generator().manual_seed(seed)
    noise = F.avg_pool2d(torch.randn(1, labels, grid[0] + 2, grid[1] + 2, generator=generator), 3, 1)[0]
    probs = torch.softmax(6 * noise, 0)
    if kind == "blocky":
        probs = F.one_hot(probs.argmax(0), labels).permute(2, 0, 1).float()
    elif kind == "ties":
        probs = (probs * 4).round() / 4
    elif kind == "constant":
        probs[-1] = 0.3
        if labels >= 3:
            probs[-2] = 0
    return probs


LABEL_IDS = [0, 3, 7, 12, 40, 41, 200, 254]
BAND_CASES = [
    # (frame size, patch grid, labels, kind)
    ((97, 161), (6, 10), 3, "smooth"),
    ((97, 161), (6, 10), 5, "ties"),
    ((150, 211), (9, 13), 4, "constant"),
    ((480, 854), (30, 54), 2, "smooth"),
    ((480, 854), (30, 54), 3, "blocky"),
    ((480, 854), (30, 54), 8, "ties"),
    ((480, 864), (30, 54), 3, "smooth"),  # 16 pixels per patch exactly
    ((481, 853), (30, 54), 5, "constant"),  # not a multiple of the grid
    ((854, 480), (54, 30), 3, "blocky"),  # portrait
    ((30, 400), (30, 54), 3, "smooth"),  # as many rows as the grid: rows are copied
    ((20, 300), (30, 54), 3, "ties"),  # fewer rows than the grid
    ((1080, 1920), (60, 107), 2, "blocky"),
    ((2160, 3840), (30, 54), 2, "ties"),
]


@pytest.mark.parametrize("size, grid, labels, kind", BAND_CASES)
def test_bilinear_band_equals_the_full_resolution_reference(size, grid, labels, kind):
    probs = probability_maps(kind, labels, grid)
    assert refine._banded_applies(probs, size)
    for minmax in (True, False):
        expected = reference_ids(probs, LABEL_IDS[:labels], size, minmax=minmax)
        assert np.array_equal(probs_to_ids(probs, LABEL_IDS[:labels], size, minmax=minmax), expected)


@pytest.mark.parametrize("size, grid, labels, kind", [case for case in BAND_CASES if case[0][0] < 2000])
def test_nearest_upsampling_decided_on_the_grid_equals_the_reference(size, grid, labels, kind):
    probs = probability_maps(kind, labels, grid, seed=1)
    for minmax in (True, False):
        expected = reference_ids(probs, LABEL_IDS[:labels], size, upsample="nearest", minmax=minmax)
        got = probs_to_ids(probs, LABEL_IDS[:labels], size, upsample="nearest", minmax=minmax)
        assert np.array_equal(got, expected)


def test_band_on_random_sizes_and_grids():
    generator = torch.Generator().manual_seed(5)
    for trial in range(20):
        labels = int(torch.randint(1, 7, (1,), generator=generator))
        grid = tuple(int(v) for v in torch.randint(1, 40, (2,), generator=generator))
        size = tuple(int(v) for v in torch.randint(60, 700, (2,), generator=generator))
        probs = probability_maps(("smooth", "blocky", "ties", "constant")[trial % 4], labels, grid, seed=trial)
        assert np.array_equal(probs_to_ids(probs, LABEL_IDS[:labels], size), reference_ids(probs, LABEL_IDS[:labels], size))


def test_small_frames_and_other_kernels_take_the_reference_path():
    probs = probability_maps("smooth", 3, (6, 10))
    assert not refine._banded_applies(probs, (40, 60))  # F.interpolate runs its channels-last kernel here
    assert np.array_equal(probs_to_ids(probs, [0, 1, 2], (40, 60)), reference_ids(probs, [0, 1, 2], (40, 60)))
    assert not refine._banded_applies(probs.clone().index_fill_(1, torch.tensor([0]), float("nan")), (480, 854))


def test_the_kernel_arithmetic_is_recognised_here():
    assert refine.kernel_arithmetic() is not None


def test_fused_multiply_add_is_rounded_once():
    from fractions import Fraction

    generator = torch.Generator().manual_seed(2)
    a, b = torch.rand(3000, generator=generator) ** 4, torch.rand(3000, generator=generator)
    c = torch.rand(3000, generator=generator) ** 12 * torch.randint(-1, 2, (3000,), generator=generator)
    got = refine._fma(a, b, c).double()
    for x, y, z, result in zip(a.tolist(), b.tolist(), c.tolist(), got.tolist()):
        exact = Fraction(x) * Fraction(y) + Fraction(z)
        below, above = np.nextafter(np.float32(result), np.float32(-2)), np.nextafter(np.float32(result), np.float32(2))
        error, others = abs(Fraction(result) - exact), [abs(Fraction(float(v)) - exact) for v in (below, above)]
        assert error <= min(others)
        if error in others:  # a tie goes to the even neighbour
            assert np.float32(result).view(np.uint32) % 2 == 0


def test_band_in_small_chunks_gives_the_same_map(monkeypatch: pytest.MonkeyPatch):
    probs = probability_maps("ties", 4, (9, 13))
    whole = probs_to_ids(probs, LABEL_IDS[:4], (150, 211))
    monkeypatch.setattr(refine, "BAND_BUDGET", 1)  # one unit at a time
    assert np.array_equal(probs_to_ids(probs, LABEL_IDS[:4], (150, 211)), whole)


@pytest.mark.parametrize("options", [{}, {"refine": "colour"}])
def test_no_allocation_at_4k_is_larger_than_the_uint8_label_map(options):
    from torch.profiler import ProfilerActivity, profile

    size = (2160, 3840)
    probs = probability_maps("blocky", 2, (30, 54))
    frame = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        probs_to_ids(probs, LABEL_IDS[:2], size, guide=frame, **options)
    largest = max(event.cpu_memory_usage for event in profiler.events())
    assert largest <= size[0] * size[1]  # a float32 plane would be 4 bytes a pixel, int64 8


# --- Colour refinement: the same label maps as scoring every contested pixel on its own ---


def davis_scene(davis, size: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray, list[int]]:
    """Soft probabilities of a DAVIS ground truth on the S=480 grid, smoothed, and its frame resized to ``size``."""
    ids = read_label_map(davis / "Annotations" / "480p" / "dog" / "00010.png")
    rgb = cv2.cvtColor(cv2.imread(str(davis / "JPEGImages" / "480p" / "dog" / "00010.jpg")), cv2.COLOR_BGR2RGB)
    labels = [0, *object_ids(ids)]
    probs = F.avg_pool2d(labels_to_probs(ids, labels, (30, 54), mode="area")[None], 3, 1, 1, count_include_pad=False)[0]
    return probs / probs.sum(0), cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_LINEAR), labels


@pytest.mark.parametrize("size", [(480, 854), (481, 853), (1080, 1920), (200, 356)])
def test_colour_refinement_equals_the_reference_on_davis(davis, size):
    probs, frame, labels = davis_scene(davis, size)
    for minmax in (True, False):
        expected = reference_colour_ids(probs, labels, frame, minmax=minmax)
        assert np.array_equal(probs_to_ids(probs, labels, size, refine="colour", guide=frame, minmax=minmax), expected)


def test_colour_refinement_equals_the_reference_on_synthetic_scenes():
    probs, frame, labels = many_labels_scene()
    assert np.array_equal(probs_to_ids(probs, labels, frame.shape[:2], refine="colour", guide=frame),
                          reference_colour_ids(probs, labels, frame))
    frame, ids = edge_scene()
    probs = labels_to_probs(ids, [0, 1], GRID, mode="nearest")
    assert np.array_equal(probs_to_ids(probs, [0, 1], SIZE, refine="colour", guide=frame),
                          reference_colour_ids(probs, [0, 1], frame))
    probs = torch.tensor([[[1.0, 0.2], [0.0, 0.9]], [[0.0, 0.8], [1.0, 0.1]]])
    frame = np.random.default_rng(3).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    assert np.array_equal(probs_to_ids(probs, [0, 5], (5, 3), refine="colour", guide=frame),
                          reference_colour_ids(probs, [0, 5], frame))


@pytest.mark.parametrize(
    "size, cells", [((480, 854), (120, 216)), ((97, 161), (24, 40)), ((5, 3), (5, 3)), ((1080, 1920), (120, 216))]
)
def test_cell_colours_equal_adaptive_average_pooling(monkeypatch: pytest.MonkeyPatch, size, cells):
    frame = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (*size, 3), dtype=np.uint8))
    expected = torch.stack([F.adaptive_avg_pool2d(frame[None, :, :, k].float(), cells)[0] for k in range(3)]) / 255
    assert torch.equal(refine.cell_colours(frame, cells), expected)
    monkeypatch.setattr(refine, "POOL_PIXELS", 1)  # one row of cells per integral image
    assert torch.equal(refine.cell_colours(frame, cells), expected)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 9, 10, 11, 30])
def test_box_mean_by_slices_equals_padding(length):
    planes = torch.rand(2, length, 13, generator=torch.Generator().manual_seed(length)) ** 4
    for radius in (0, 1, 4):
        assert torch.equal(refine._box_mean(planes, radius), reference_box_mean(planes, radius))
