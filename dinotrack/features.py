"""Dense DINOv3 features for a stream of frames, and the on-disk feature cache.

ALGORITHM.md §1-2: resize so the short side is ``S`` rounded up to the patch
size (long side keeps the aspect ratio, also rounded up), bicubic, normalise,
run the backbone, keep the patch tokens of the last block after the final
norm, L2-normalised. Frames go through in small batches; on the CPU, several
batches at once (see :class:`FeatureExtractor`). Nothing holds more than a few
batches.

Feature cache contract (``dinotrack features``): ``DIR/meta.json`` with
``model``, ``patch_size``, ``short_side``, ``grid`` [h, w], ``frame_size``
[H, W], ``dim``, ``frames``, ``dtype``; one ``DIR/<frame-stem>.npy`` per frame,
``[h, w, D] float16``, L2-normalised. ``meta.json`` may also say which frames it
was made from: ``source`` with ``path``, ``kind``, ``fingerprint`` (sha256 of
the video's first MiB, or of the first frame file's) and ``names_sha256`` (of
the names of the frames written, one per line); a cache that has it is
checked against the video it is used for before any work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dinotrack.backbones import Backbone
from dinotrack.files import atomic_write, atomic_write_json
from dinotrack.sources import Frame, FrameSource
from dinotrack.structs import DinotrackError, UsageError, check_short_side

log = logging.getLogger("dinotrack")
META_KEYS = ("model", "patch_size", "short_side", "grid", "frame_size", "dim", "frames", "dtype")


def patch_grid(frame_size: tuple[int, int], short_side: int, patch_size: int) -> tuple[int, int]:
    """The patch grid ``(h, w)`` a frame of ``frame_size`` (H, W) is resized to.

    The short side becomes ``short_side`` rounded up to the patch size; the
    long side keeps the aspect ratio, also rounded up.
    """
    check_short_side(short_side)
    height, width = frame_size
    short, long = min(height, width), max(height, width)
    short_patches = -(-short_side // patch_size)
    long_patches = -(-short_patches * long // short)
    return (short_patches, long_patches) if height <= width else (long_patches, short_patches)


def preprocess(
    rgb: torch.Tensor, grid: tuple[int, int], patch_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Resize and normalise frames for the backbone.

    ``rgb``: ``[B, H, W, 3] uint8`` on any device. Returns ``[B, 3, h*p, w*p]``
    float32 on the same device (bicubic, antialiased when shrinking).
    """
    size = (grid[0] * patch_size, grid[1] * patch_size)
    if tuple(rgb.shape[1:3]) == size:
        images = rgb.permute(0, 3, 1, 2).float()
    else:
        images = _resized(rgb, size).clamp(0, 255)
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255
    return (images - mean_t) / std_t


RESIZE_BAND_ROWS = 256
"""Rows of a full-resolution colour plane turned to float32 at once when shrinking (4 MB at 3840 wide)."""


def _resized(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, 3] uint8`` frames resized to ``size``: ``[B, 3, *size]`` float32, channels last.

    One colour plane at a time, so that the full-resolution float32 copy is
    one plane, not three; each plane is resized on its own either way, so the
    result is bit for bit that of resizing all three. When shrinking, the
    antialiased kernel is separable (a pass along rows, then one along
    columns), so the first pass runs on bands of :data:`RESIZE_BAND_ROWS`
    rows: at 3840x2160 the float32 copies are 4 MB bands and one 7 MB
    half-resized plane instead of a 33 MB plane (bit for bit the same,
    tested at several sizes).
    """
    shrinking = size[0] < rgb.shape[1] or size[1] < rgb.shape[2]
    resize = _resized_in_bands if shrinking else _resized_whole
    return torch.cat([resize(rgb[..., channel], size) for channel in range(rgb.shape[3])], 1).contiguous(
        memory_format=torch.channels_last
    )


def _resized_whole(plane: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W] uint8`` → ``[B, 1, *size]`` float32, bicubic (enlarging: no antialiasing)."""
    return F.interpolate(plane.float()[:, None], size=size, mode="bicubic", align_corners=False)


def _resized_in_bands(plane: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W] uint8`` → ``[B, 1, *size]`` float32, bicubic antialiased: rows in bands, then columns."""
    across = [
        F.interpolate(band.float()[:, None], size=(band.shape[1], size[1]), mode="bicubic", align_corners=False, antialias=True)
        for band in plane.split(RESIZE_BAND_ROWS, 1)
    ]
    return F.interpolate(torch.cat(across, 2), size=size, mode="bicubic", align_corners=False, antialias=True)


class FeatureExtractor:
    """Runs a backbone over frames in batches: ``(frame, [h, w, D] float32)`` out.

    On CUDA the backbone runs under bf16 autocast; features come back as
    float32 on ``device``, L2-normalised. ``compile`` wraps the backbone in
    ``torch.compile`` (worth it on a GPU for long videos; the first batch is slow).
    ``workers``: batches in the backbone at once (default :func:`default_workers`);
    on a 2-core CPU two frames on one thread each run 11% faster than one
    frame on two threads, and the caller's propagation fills the gaps.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        short_side: int,
        device: torch.device,
        batch_size: int = 1,
        compile: bool = False,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {batch_size}).")
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1 (got {workers}).")
        check_short_side(short_side)
        self.backbone = backbone.to(device).eval()
        self.forward = torch.compile(self.backbone, dynamic=False) if compile else self.backbone
        self.short_side = short_side
        self.device = device
        self.batch_size = batch_size
        self.workers = workers if workers is not None else default_workers(device, compile)

    def grid(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        return patch_grid(frame_size, self.short_side, self.backbone.patch_size)

    @torch.inference_mode()
    def extract(self, rgb: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """Features of one frame ``[H, W, 3] uint8`` or a list of same-size frames.

        Returns ``[h, w, D]`` (one frame) or ``[B, h, w, D]`` float32.
        """
        frames = [rgb] if isinstance(rgb, np.ndarray) else rgb
        stacked = np.ascontiguousarray(frames[0])[None] if len(frames) == 1 else np.stack(frames)  # one frame: no copy
        pixels = torch.from_numpy(stacked).to(self.device, non_blocking=True)
        images = preprocess(
            pixels, self.grid(frames[0].shape[:2]), self.backbone.patch_size, self.backbone.mean, self.backbone.std
        )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            features = self.forward(images)
        features = F.normalize(features.float(), dim=-1)
        return features[0] if isinstance(rgb, np.ndarray) else features

    def __call__(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, torch.Tensor]]:
        """``(frame, [h, w, D] float32 features)`` in frame order.

        With ``workers > 1``, that many batches go through the backbone at
        once, each on its own thread with an equal share of torch's CPU
        threads, up to one batch ahead of the caller.
        """
        batches = _batches(frames, self.batch_size)
        if self.workers == 1:
            for batch in batches:
                yield from zip(batch, self.extract([f.rgb for f in batch]))
            return
        pending: deque[tuple[list[Frame], Future]] = deque()
        error = None
        with ThreadShare(self.workers) as pool:
            try:
                for batch in batches:
                    pending.append((batch, pool.submit(self.extract, [f.rgb for f in batch])))
                    if len(pending) > self.workers:
                        batch, future = pending.popleft()
                        yield from zip(batch, future.result())
            except Exception as raised:  # raised after the frames before it, as without workers
                error = raised
            while pending:
                batch, future = pending.popleft()
                yield from zip(batch, future.result())
        if error is not None:
            raise error


def default_workers(device: torch.device, compile: bool) -> int:
    """Batches run at once: 2 on a CPU with 2 threads or more (a frame per core beats two
    cores per frame), else 1 (a GPU runs one batch at a time; compiled graphs stay on one thread)."""
    return 2 if device.type == "cpu" and not compile and torch.get_num_threads() >= 2 else 1


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ThreadShare(ThreadPoolExecutor):
    """A pool of ``workers`` threads that split torch's intra-op CPU threads between them.

    torch's thread count is per thread once set (OpenMP), so each worker sets
    its share; the caller's own count is put back on exit, for threads started later.
    """

    def __init__(self, workers: int) -> None:
        self.threads = torch.get_num_threads()
        share = max(1, self.threads // workers)
        super().__init__(max_workers=workers, thread_name_prefix="dinotrack-backbone", initializer=torch.set_num_threads, initargs=(share,))

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self.threads)


@dataclass(frozen=True)
class FeatureCache:
    """A validated feature cache folder (see the module docstring)."""

    path: Path
    meta: dict

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.meta["grid"])

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.meta["frame_size"])

    def load(self, stem: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """One frame's features, ``[h, w, D] float32``, re-normalised."""
        file = self.path / f"{stem}.npy"
        if not file.is_file():
            raise DinotrackError(
                f"The feature cache {self.path} has no features for frame {stem!r} ({file.name}). "
                "Re-run `dinotrack features` on the same source, or track without --features."
            )
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DinotrackError(f"Feature file {file} is unreadable ({error}). Re-run `dinotrack features`.") from None
        expected = (*self.grid, self.meta["dim"])
        if array.shape != expected:
            raise DinotrackError(
                f"Feature file {file} has shape {list(array.shape)}, but {self.path / 'meta.json'} "
                f"promises {list(expected)} ([h, w, D]). The cache is inconsistent; re-run `dinotrack features`."
            )
        features = torch.from_numpy(array.astype(np.float32)).to(device)
        return F.normalize(features, dim=-1)

    def features(self, frames: Iterable[Frame], device: torch.device | str = "cpu") -> Iterator[tuple[Frame, torch.Tensor]]:
        """Pair each frame with its cached features, like :class:`FeatureExtractor`."""
        for frame in frames:
            if tuple(frame.rgb.shape[:2]) != self.frame_size:
                raise UsageError(
                    f"The feature cache {self.path} was made from {self.frame_size[1]}x{self.frame_size[0]} "
                    f"frames, but frame {frame.stem} is {frame.rgb.shape[1]}x{frame.rgb.shape[0]}. "
                    "Use the cache made from this video, or track without --features."
                )
            yield frame, self.load(frame.stem, device)


FINGERPRINT_BYTES = 1 << 20


def source_identity(source: FrameSource) -> dict[str, str]:
    """What a cache records of the frames it is made from (``names_sha256`` is added as it is written)."""
    first = source.path if source.kind == "video" else source.files[0]
    with first.open("rb") as stream:
        fingerprint = hashlib.sha256(stream.read(FINGERPRINT_BYTES)).hexdigest()
    return {"path": str(source.path.resolve()), "kind": source.kind, "fingerprint": fingerprint}


def names_sha256(names: Iterable[str]) -> str:
    """sha256 of frame names, one per line."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\n".encode())
    return digest.hexdigest()


def check_cache_source(cache: FeatureCache, source: FrameSource) -> None:
    """Refuse, before any work, a cache of other frames than ``source``'s: other content, fewer frames,
    other names or size. A cache without ``source`` (written by another tool) is checked frame by frame only."""
    height, width = source.size
    if cache.frame_size != source.size:
        raise UsageError(
            f"--features {cache.path} was made from {cache.frame_size[1]}x{cache.frame_size[0]} frames, but the frames "
            f"of {source.path} are {width}x{height}. Use the cache made from this video, or track without --features."
        )
    made = cache.meta.get("source")
    if not isinstance(made, dict):
        return
    other = f"--features {cache.path} was made from {made.get('path')}"
    remake = f"Make the cache of this video with `dinotrack features {source.path} --output DIR`, or track without --features."
    if made.get("fingerprint") != source_identity(source)["fingerprint"]:
        raise UsageError(f"{other}, whose content differs from {source.path}'s. {remake}")
    count = cache.meta.get("frames")
    if source.frame_count is not None and isinstance(count, int) and count < source.frame_count:
        raise UsageError(
            f"{other} and holds the features of {count} frames, but {source.path} has {source.frame_count} "
            f"(the cache is {'complete' if cache.meta.get('complete') else 'unfinished'}). {remake}"
        )
    if source.kind == "folder" and made.get("names_sha256") != names_sha256(file.stem for file in source.files[:count]):
        raise UsageError(f"{other}, whose frames are named otherwise than those of {source.path}. {remake}")
    if made.get("path") != str(source.path.resolve()):
        log.info("Using the feature cache of %s (the same frames, moved) for %s.", made.get("path"), source.path)


def open_feature_cache(path: str | os.PathLike) -> FeatureCache:
    """Read and validate ``DIR/meta.json``; raises :class:`UsageError` when it breaks the contract."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise UsageError(
            f"--features {path} is not a feature cache: it has no meta.json. "
            "Make one with `dinotrack features SOURCE --output DIR`."
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{meta_file} is not valid JSON ({error}). Re-run `dinotrack features`.") from None
    missing = [key for key in META_KEYS if key not in meta] if isinstance(meta, dict) else list(META_KEYS)
    if missing:
        raise UsageError(f"{meta_file} lacks the keys {', '.join(missing)}. The contract needs: {', '.join(META_KEYS)}.")
    if not _is_pair(meta["grid"]) or not _is_pair(meta["frame_size"]) or not isinstance(meta["dim"], int) or meta["dim"] < 1:
        raise UsageError(
            f"{meta_file}: grid and frame_size must be [h, w] and [H, W] of positive integers and dim a positive "
            f"integer (got grid={meta['grid']}, frame_size={meta['frame_size']}, dim={meta['dim']})."
        )
    return FeatureCache(path, meta)


def _is_pair(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)


class FeatureCacheWriter:
    """Writes a feature cache as frames arrive; ``meta.json`` is (re)written on close.

    Each ``.npy`` appears whole (temporary name, then rename). ``meta.json``
    is written first with ``"complete": false`` and the expected frame count,
    and last with the frames actually written.
    """

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.meta = {**meta, "dtype": "float16", "complete": False}
        self.frames_written = 0
        self._names: list[str] = []
        path.mkdir(parents=True, exist_ok=True)
        self._write_meta()

    def write(self, stem: str, features: torch.Tensor) -> None:
        """Store ``[h, w, D]`` features as float16."""
        array = features.to("cpu", torch.float16).numpy()
        atomic_write(self.path / f"{stem}.npy", lambda temporary: _save_npy(temporary, array))
        self.frames_written += 1
        self._names.append(stem)

    def close(self, *, complete: bool) -> None:
        self.meta.update(frames=self.frames_written, complete=complete)
        if isinstance(self.meta.get("source"), dict):
            self.meta["source"] = {**self.meta["source"], "names_sha256": names_sha256(self._names)}
        self._write_meta()

    def _write_meta(self) -> None:
        atomic_write_json(self.path / "meta.json", self.meta)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, so np.save does not append ".npy" to the name
        np.save(handle, array)
