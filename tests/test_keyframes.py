"""Keyframes: masks given on later frames join the context, start new ids and stop old ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import SAMPLE
from dinotrack.cli import app
from dinotrack.masks import read_label_map
from dinotrack.propagate import labels_to_probs
from dinotrack.sources import Frame
from dinotrack.structs import PRESETS, TrackConfig
from dinotrack.tracker import Tracker
from test_cli import oracle_cache

SIZE = (64, 96)
GRID = (4, 6)
LABELS = [0, 1, 2, 3]
FRAMES = 10


def scene(*, square: int | None, bar: int | None) -> np.ndarray:
    """A ``[64, 96] uint8`` label map with id 1 on the left, and optionally id 2 (a square) and id 3 (a bar)."""
    ids = np.zeros(SIZE, dtype=np.uint8)
    ids[8:40, 4:36] = 1
    if square is not None:
        ids[32:64, square : square + 32] = 2
    if bar is not None:
        ids[0:16, bar : bar + 32] = 3
    return ids


def oracle_features(ids: np.ndarray) -> torch.Tensor:
    """``[h, w, 8]`` features: the fraction of each patch per label, zero-padded, L2-normalised."""
    fractions = labels_to_probs(ids, LABELS, GRID, mode="area").permute(1, 2, 0)
    return F.normalize(F.pad(fractions, (0, 4)), dim=-1)


def video(maps: list[np.ndarray]) -> list[tuple[Frame, torch.Tensor]]:
    """Frames (a flat grey picture) paired with oracle features of ``maps``."""
    rgb = np.full((*SIZE, 3), 128, dtype=np.uint8)
    return [(Frame(index, f"{index:05d}", rgb), oracle_features(ids)) for index, ids in enumerate(maps)]


def run(maps: list[np.ndarray], keyframes: dict[int, np.ndarray], config: TrackConfig = PRESETS["paper"]) -> dict[int, np.ndarray]:
    return dict(Tracker(config).track(video(maps), keyframes))


def test_keyframe_outputs_are_the_given_masks():
    maps = [scene(square=48, bar=None) for _ in range(FRAMES)]
    keyframes = {0: maps[0], 4: scene(square=50, bar=None), 7: scene(square=None, bar=None)}
    outputs = run(maps, keyframes)
    assert sorted(outputs) == list(range(FRAMES))
    for index, mask in keyframes.items():
        assert np.array_equal(outputs[index], mask)


def test_an_id_new_in_a_later_keyframe_is_tracked_from_there_on():
    maps = [scene(square=48, bar=None) for _ in range(5)] + [scene(square=48, bar=56) for _ in range(5)]
    outputs = run(maps, {0: maps[0], 5: maps[5]})
    assert all(3 not in np.unique(outputs[i]) for i in range(5))
    for index in range(6, FRAMES):
        assert (outputs[index] == 3).mean() > 0.5 * (maps[index] == 3).mean()


def test_an_id_absent_from_a_later_keyframe_stops_there():
    maps = [scene(square=48, bar=None) for _ in range(FRAMES)]
    outputs = run(maps, {0: maps[0], 5: scene(square=None, bar=None)})
    assert all(2 in np.unique(outputs[i]) for i in range(1, 5))
    assert all(2 not in np.unique(outputs[i]) for i in range(5, FRAMES))
    assert all(1 in np.unique(outputs[i]) for i in range(FRAMES))


def test_the_soft_first_mask_keeps_an_object_smaller_than_a_patch():
    first = np.zeros(SIZE, dtype=np.uint8)
    first[18:24, 50:56] = 1  # 6x6 pixels off the centre of patch (1, 3), which nearest-exact samples at (24, 56)
    maps = [first] * 4
    nearest = run(maps, {0: first}, PRESETS["paper"])
    area = run(maps, {0: first}, PRESETS["paper"].replace(first_mask="area"))
    assert all(1 not in np.unique(nearest[i]) for i in range(1, 4))
    assert all(1 in np.unique(area[i]) for i in range(1, 4))
    assert all(1 in np.unique(ids) for ids in run(maps, {0: first}, PRESETS["default"]).values())


def test_cli_track_with_a_folder_of_keyframe_masks(tmp_path: Path):
    masks = tmp_path / "keyframes"
    masks.mkdir()
    for name in ("00000.png", "00030.png"):
        shutil.copy(SAMPLE / "shapes_gt" / name, masks / name)
    cache = tmp_path / "cache"
    oracle_cache(cache, SAMPLE / "shapes_gt", (10, 18), (240, 426))
    output = tmp_path / "run"
    result = CliRunner().invoke(app, ["track", str(SAMPLE / "shapes.mp4"), "--mask", str(masks), "--output", str(output),
                                      "--features", str(cache), "--no-overlay"])
    assert result.exit_code == 0, result.output
    assert len(list((output / "masks").glob("*.png"))) == 60
    for name in ("00000.png", "00030.png"):
        assert np.array_equal(read_label_map(output / "masks" / name), read_label_map(masks / name))


def test_keyframes_in_the_context_are_bounded():
    """A mask every few frames: the first keyframe stays, then only the ``keyframe_bound`` most recent ones."""
    maps = [scene(square=48, bar=None) for _ in range(30)]
    config = PRESETS["paper"].replace(keyframe_bound=2)
    tracker = Tracker(config)
    first_features = video(maps[:1])[0][1]
    for index, (frame, features) in enumerate(video(maps)):
        tracker.process(frame.rgb, features, maps[index] if index % 5 == 0 else None)
        keyframes = tracker.propagator.keyframes
        assert len(keyframes) <= 1 + config.keyframe_bound
        assert len(keyframes) + len(tracker.propagator.queue) <= 1 + config.keyframe_bound + config.context
        assert torch.equal(keyframes[0][0], first_features)
    assert len(tracker.propagator.keyframes) == 3


def test_a_saved_session_continues_with_the_same_masks():
    maps = [scene(square=48 - 2 * i, bar=None) for i in range(FRAMES)]
    pairs = video(maps)
    keyframes = {0: maps[0], 3: maps[3]}
    expected = run(maps, keyframes)
    first = Tracker(PRESETS["paper"])
    for frame, features in pairs[:6]:
        first.process(frame.rgb, features, keyframes.get(frame.index))
    second = Tracker(PRESETS["paper"])
    second.load_state_dict(first.state_dict())
    for frame, features in pairs[6:]:
        assert np.array_equal(second.process(frame.rgb, features, keyframes.get(frame.index)), expected[frame.index])
