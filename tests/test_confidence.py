"""Tracking confidence without ground truth: the margin inside the output mask, and its sharp drops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinotrack.confidence import DROP, MIN_HISTORY, ConfidenceLog, object_confidence, patch_margins, sharp_drops


def probs_of(object_prob: np.ndarray) -> torch.Tensor:
    """``[2, h, w]`` probabilities: background and one object with ``object_prob`` per patch."""
    prob = torch.as_tensor(object_prob, dtype=torch.float32)
    return torch.stack([1 - prob, prob])


def test_margins_are_each_label_minus_the_best_other():
    probs = torch.tensor([[[0.5]], [[0.3]], [[0.2]]])
    np.testing.assert_allclose(patch_margins(probs)[:, 0, 0], [0.2, -0.2, -0.3], atol=1e-6)


def test_confidence_is_the_mean_margin_over_the_object_pixels():
    probs = probs_of(np.array([[0.9, 0.9, 0.7, 0.7]] * 2))  # margins 0.8 on the left half, 0.4 on the right
    ids = np.zeros((20, 40), dtype=np.uint8)
    ids[:, :10] = 1  # where the upsampled margin is 0.8 throughout
    assert object_confidence(probs, [0, 1], ids) == pytest.approx({1: 0.8})
    ids[:, 30:] = 1  # as many pixels where it is 0.4
    assert object_confidence(probs, [0, 1], ids) == pytest.approx({1: 0.6})
    ids[:] = 0
    ids[5, 19:21] = 1  # two pixels at the middle, halfway between the patch centres 0.8 and 0.4
    assert object_confidence(probs, [0, 1], ids)[1] == pytest.approx(0.6, abs=0.05)


def test_an_object_without_pixels_or_outvoted_has_confidence_zero():
    probs = probs_of(np.full((2, 2), 0.2))
    empty = np.zeros((20, 20), dtype=np.uint8)
    drawn = np.ones((20, 20), dtype=np.uint8)
    assert object_confidence(probs, [0, 1], empty) == {1: 0.0}
    assert object_confidence(probs, [0, 1], drawn) == {1: 0.0}  # mean margin -0.6, clipped to 0
    assert object_confidence(probs_of(np.ones((2, 2))), [0, 1], drawn) == {1: 1.0}


def test_only_the_tracked_objects_are_scored():
    probs = torch.full((3, 2, 2), 1 / 3)
    ids = np.ones((20, 20), dtype=np.uint8)
    assert set(object_confidence(probs, [0, 1, 2], ids, tracked=[1])) == {1}


def test_the_log_keeps_frames_by_index_and_pads_untracked_ones():
    log = ConfidenceLog()
    log.add(0, {1: 1.0})
    log.add(1, {1: 0.81234, 2: 1.0})
    log.add(3, {2: 0.5})
    assert log.at(1) == {1: 0.8123, 2: 1.0} and log.at(2) == {}
    assert log.as_record(4) == {"1": [1.0, 0.8123, None, None], "2": [None, 1.0, None, 0.5]}
    assert ConfidenceLog(log.as_record(4)).at(3) == {2: 0.5}


def series(values: list[float | None], label: int = 1) -> ConfidenceLog:
    log = ConfidenceLog()
    for index, value in enumerate(values):
        if value is not None:
            log.add(index, {label: value})
    return log


def test_a_sharp_drop_is_flagged_once_where_it_starts():
    values = [1.0, 0.9, 0.88, 0.9, 0.91, 0.89, 0.5, 0.45, 0.5, 0.9, 0.9]
    drops = sharp_drops(series(values), keyframes=[0])
    assert [(d.index, d.object_id) for d in drops] == [(6, 1)]
    assert drops[0].confidence == 0.5 and drops[0].before == pytest.approx(0.9)


def test_slow_drift_and_short_history_are_not_sharp_drops():
    drift = [1.0] + [0.9 - 0.02 * i for i in range(20)]
    assert sharp_drops(series(drift), keyframes=[0]) == []
    early = [1.0] + [0.9] * (MIN_HISTORY - 1) + [0.9 - 2 * DROP]
    assert sharp_drops(series(early), keyframes=[0]) == []


def test_a_keyframe_restarts_the_history():
    values = [1.0, 0.3, 0.3, 0.3, 0.3, 1.0, 0.9, 0.9, 0.9, 0.3]
    drops = sharp_drops(series(values), keyframes=[0, 5])
    assert [d.index for d in drops] == [9]  # not frame 5's return to 1, which is a keyframe
