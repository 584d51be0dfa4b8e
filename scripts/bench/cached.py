"""``dinotrack track --features`` in a fresh process against the literal algorithm on the same cached features.

The cache holds oracle features (``scripts/oracle_eval.py``: label fractions
plus noise, padded to :data:`DIM` dimensions like ViT-S/16's) of the first
:data:`FRAMES` frames of the first sequence, so no backbone runs. The run is
``dinotrack track --features DIR --preset paper --no-overlay``, start-up
included; the literal algorithm (``dinotrack.testing``) runs in this process
on the same features, with its own probabilities-to-ids, start-up excluded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bench.common import FOOTAGE, Table, Workspace, verdict
from bench.end_to_end import track_process
from dinotrack.features import FeatureCacheWriter, open_feature_cache, patch_grid
from dinotrack.masks import object_ids, read_label_map
from dinotrack.propagate import labels_to_probs
from dinotrack.testing import probs_to_ids, propagate_literal
from oracle_eval import PATCH_SIZE, oracle_features

FRAMES = 16
DIM = 384
NOISE = 1.0
TARGETS = {960: 10.0}
"""At these S, the whole ``--features`` run must beat the literal algorithm by these factors."""
ONE_SEQUENCE = FOOTAGE.first_only()


def table(work: Workspace, short_side: int) -> Table:
    """The ``--features`` run against the literal algorithm at ``short_side``."""
    options = work.options(short_side, preset="paper", weights=work.weights)
    title = (
        f"Cached features at S={short_side}, --preset paper: dinotrack track --features --no-overlay on "
        f"{FRAMES} frames in a fresh process vs the literal algorithm (oracle features, D={DIM})"
    )
    result = Table(title, ("what", "seconds", "notes"))
    cache, output = write_cache(work, short_side), work.root / f"cached{short_side}"
    extra = ("--features", str(cache), "--no-overlay")
    run = track_process(work, work.clip(FRAMES, ONE_SEQUENCE), output, options, extra=extra)
    literal, identical = literal_run(work, cache, output)
    ratio = literal / run.wall
    target = TARGETS.get(short_side)
    check = f"; {verdict(ratio, target, at_most=False)}" if target is not None else ""
    result.add("dinotrack track --features (fresh process)", f"{run.wall:.1f}", f"start-up included; CPU {run.cpu:.1f} s")
    result.add("literal algorithm (dinotrack.testing)", f"{literal:.1f}", f"in this process, start-up excluded; {identical}/{FRAMES} masks identical")
    result.add("literal / dinotrack", f"{ratio:.1f}", f"dinotrack is {ratio:.1f}x faster{check}")
    return result


def write_cache(work: Workspace, short_side: int) -> Path:
    """Oracle features of the first :data:`FRAMES` frames at ``short_side``, in the feature-cache format."""
    folder = work.root / f"cached-features-{short_side}"
    masks = list(ONE_SEQUENCE.masks(FRAMES, work.frame_size))
    labels = [0, *sorted(set().union(*map(object_ids, masks)))]
    grid = patch_grid(work.frame_size, short_side, PATCH_SIZE)
    meta = {
        "model": "oracle", "patch_size": PATCH_SIZE, "short_side": short_side, "grid": list(grid),
        "frame_size": list(work.frame_size), "dim": DIM, "frames": FRAMES,
    }  # fmt: skip
    writer = FeatureCacheWriter(folder, meta)
    generator = torch.Generator().manual_seed(0)
    for index, ids in enumerate(masks):
        writer.write(f"{index:05d}", torch.from_numpy(oracle_features(ids, labels, grid, dim=DIM, noise=NOISE, generator=generator)))
    writer.close(complete=True)
    return folder


def literal_run(work: Workspace, cache_folder: Path, output: Path) -> tuple[float, int]:
    """Seconds of the literal algorithm over the cache (propagation and its ids), and how many
    of its label maps equal the run's ``masks/``."""
    cache = open_feature_cache(cache_folder)
    features = [torch.from_numpy(np.load(cache_folder / f"{index:05d}.npy").astype(np.float32)) for index in range(FRAMES)]
    mask = work.mask  # the first frame of the first sequence
    labels = [0, *object_ids(mask)]
    started = time.perf_counter()
    first = labels_to_probs(mask, labels, tuple(cache.meta["grid"]), mode="nearest")
    maps = [mask] + [probs_to_ids(probs, labels, work.frame_size) for probs in propagate_literal(features[0], first, features[1:])]
    seconds = time.perf_counter() - started
    identical = sum(np.array_equal(ids, read_label_map(output / "masks" / f"{index:05d}.png")) for index, ids in enumerate(maps))
    return seconds, identical
