"""Whole jobs over files: track a video, write a feature cache, evaluate.

The only module that writes results. Everything streams: frames are decoded
in a background thread, features computed in small batches, masks and
overlay frames written off the main thread, so memory stays flat however
long the video is.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch

from dinotrack import __version__
from dinotrack.backbones import create_backbone, resolve_device
from dinotrack.evaluation import EvalReport, evaluate, write_csv, write_json, write_plot
from dinotrack.features import FeatureCache, FeatureCacheWriter, FeatureExtractor, open_feature_cache
from dinotrack.masks import object_ids, read_label_map, write_label_map
from dinotrack.render import overlay
from dinotrack.sources import Frame, FrameSource, VideoWriter, open_source, prefetch
from dinotrack.structs import DinotrackError, TrackConfig, UsageError
from dinotrack.tracker import Tracker

log = logging.getLogger("dinotrack")

Progress = Callable[[int, "int | None"], None]
RESULT_FILES = ("run.json", "masks", "overlay.mp4", "metrics.json", "metrics.csv", "metrics.png", "state.pt")


@dataclass
class RunReport:
    """What a finished (or stopped) run did; also written to ``run.json``."""

    output: Path
    status: str
    frames_done: int
    frames_total: int | None
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: EvalReport | None = None

    @property
    def fps(self) -> float:
        total = self.seconds.get("total", 0.0)
        return self.frames_done / total if total > 0 else 0.0


class _Stopwatch:
    """Seconds spent per stage, summed over frames (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def timed(self, stage: str, iterator: Iterator) -> Iterator:
        """Re-yield ``iterator``, charging the time spent producing each item to ``stage``."""
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self.add(stage, time.perf_counter() - start)
            yield item

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


class _MaskWriter:
    """Writes label maps as palette PNGs (and overlay frames) on a worker thread.

    At most ``depth`` frames wait; errors surface on the next call.
    """

    def __init__(self, masks_dir: Path, overlay_writer: VideoWriter | None, stopwatch: _Stopwatch, depth: int = 8) -> None:
        self.masks_dir = masks_dir
        self.overlay_writer = overlay_writer
        self.stopwatch = stopwatch
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinotrack-writer")
        self._pending: list[Future] = []

    def submit(self, frame: Frame, ids: np.ndarray, *, overlay_only: bool = False) -> None:
        self._pending.append(self._pool.submit(self._write, frame, ids, overlay_only))
        while len(self._pending) > self.depth:
            self._pending.pop(0).result()

    def _write(self, frame: Frame, ids: np.ndarray, overlay_only: bool) -> None:
        start = time.perf_counter()
        if not overlay_only:
            write_label_map(self.masks_dir / f"{frame.stem}.png", ids)
        self.stopwatch.add("write_masks", time.perf_counter() - start)
        if self.overlay_writer is not None:
            start = time.perf_counter()
            self.overlay_writer.write(overlay(frame.rgb, ids))
            self.stopwatch.add("overlay", time.perf_counter() - start)

    def close(self) -> None:
        """Wait for every queued frame, then close the overlay video."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
            if self.overlay_writer is not None:
                self.overlay_writer.close()


class Keyframes:
    """Keyframe masks by frame index, from a PNG (the first frame's) or a folder of PNGs named like the frames.

    Files are read when their frame comes, except the first, which is read
    and checked at once (it must hold an object), before any output exists.
    """

    def __init__(self, path: Path, source: FrameSource) -> None:
        self.frame_size = source.size
        self.files = _keyframe_files(path, source) if path.is_dir() else {0: path}
        self._first = read_keyframe(self.files[0], self.frame_size)
        if not object_ids(self._first):
            raise UsageError(
                f"The first frame's mask {self.files[0]} holds no object: every pixel is background (0). "
                "Give a mask in which each object to track has its own non-zero id."
            )

    def __contains__(self, index: int) -> bool:
        return index in self.files

    def read(self, index: int) -> np.ndarray:
        """``[H, W] uint8`` ids of frame ``index``'s mask, at the frame size."""
        return self._first if index == 0 else read_keyframe(self.files[index], self.frame_size)


def _keyframe_files(folder: Path, source: FrameSource) -> dict[int, Path]:
    by_stem = {file.stem: file for file in sorted(folder.glob("*.png"))}
    if not by_stem:
        raise UsageError(
            f"--mask {folder} is a folder without PNG files. Give the first frame's mask, "
            "or a folder of PNG masks named like the frames."
        )
    stems = _source_stems(source)
    unknown = sorted(set(by_stem) - set(stems))
    if unknown:
        log.warning(
            "Ignoring %d mask file(s) not named like a frame of %s: %s",
            len(unknown), source.path, ", ".join(unknown[:5]),
        )
    files = {index: by_stem[stem] for index, stem in enumerate(stems) if stem in by_stem}
    if 0 not in files:
        raise UsageError(
            f"--mask {folder} has no mask for the first frame ({stems[0]}.png). Tracking starts from the "
            "first frame, so it needs a mask; add one named like that frame."
        )
    return files


def _source_stems(source: FrameSource) -> list[str]:
    if source.kind == "folder":
        return [file.stem for file in source.files]
    return [source.stem(index) for index in range(source.frame_count or 0)]


def read_keyframe(path: Path, frame_size: tuple[int, int]) -> np.ndarray:
    """A keyframe mask as ``[H, W] uint8`` ids at the frame size (same aspect ratio: resized, with a warning)."""
    ids = read_label_map(path)
    if ids.shape == frame_size:
        return ids
    height, width = frame_size
    mask_h, mask_w = ids.shape
    if abs(mask_w * height - mask_h * width) > max(height, width):
        raise UsageError(
            f"Mask {path} is {mask_w}x{mask_h}, but the frames are {width}x{height}, a different shape. "
            "Give the mask of the first frame at the frames' size (or at least their aspect ratio)."
        )
    log.warning("Mask %s is %dx%d; resizing it to the frames' %dx%d (nearest neighbour).", path, mask_w, mask_h, width, height)
    return cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST)


def prepare_output(output: Path, *, overwrite: bool, resume: bool) -> None:
    """Create ``output``; refuse to mix with another run's results unless told to."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is an existing file. Give a folder path (it will be created).")
    previous = [name for name in RESULT_FILES if (output / name).exists()]
    if previous and not (overwrite or resume):
        raise UsageError(
            f"--output {output} already holds results of another run ({', '.join(previous)}). "
            "Choose a new folder, pass --overwrite to replace them, or --resume to continue that run."
        )
    if overwrite:
        for name in previous:
            target = output / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    try:
        (output / "masks").mkdir(parents=True, exist_ok=True)
        probe = output / ".dinotrack-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise DinotrackError(f"Cannot write to --output {output} ({error.strerror}). Choose a folder you can write to.") from None


def _versions() -> dict[str, str]:
    import timm

    return {
        "dinotrack": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def _check_frame_size(source: FrameSource, patch_size: int) -> None:
    height, width = source.size
    if min(height, width) < patch_size:
        raise UsageError(
            f"The frames of {source.path} are {width}x{height}, smaller than one {patch_size}-pixel patch. "
            "dinotrack needs frames at least one patch wide and high."
        )


def track_video(
    source: str | os.PathLike,
    mask: str | os.PathLike,
    output: str | os.PathLike,
    *,
    config: TrackConfig = TrackConfig(),
    preset: str = "default",
    model: str = "vits16",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    features: str | os.PathLike | None = None,
    batch_size: int = 1,
    workers: int | None = None,
    compile: bool = False,
    write_overlay: bool = True,
    gt: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Track the objects of ``mask`` through ``source``; write masks, overlay and ``run.json`` to ``output``.

    ``mask``: the first frame's label map (PNG) or a folder of keyframe masks.
    ``features``: a feature cache folder to use instead of running the backbone.
    ``batch_size``, ``workers``, ``compile``: see :class:`~dinotrack.features.FeatureExtractor`.
    ``stop``: when set, the run finishes the frame in hand, saves its state
    and ends with status ``interrupted``. ``resume``: continue such a run
    (or a failed one) from its last written frame, with the same masks as an
    uninterrupted run. Returns the :class:`RunReport`.
    """
    started = time.perf_counter()
    output = Path(output)
    frames = open_source(source)
    torch_device = resolve_device(device)
    cache = open_feature_cache(features) if features is not None else None
    if gt is not None and not Path(gt).is_dir():
        raise UsageError(f"--gt {gt} is not a folder. Give the folder of ground-truth PNG masks named like the frames.")
    masks = Keyframes(Path(mask), frames)
    previous = _previous_run(output) if resume else None
    if previous is not None and previous["status"] == "complete":
        log.info("%s already holds a complete run; nothing to resume.", output)
        return RunReport(output, "complete", previous["frames_done"], previous["frames_total"], previous.get("seconds", {}))
    stopwatch = _Stopwatch()
    pairs_from, provenance = _feature_stream(
        frames, cache, model=model, weights=weights, device=torch_device, short_side=config.short_side,
        batch_size=batch_size, workers=workers, compile=compile, stopwatch=stopwatch,
    )
    prepare_output(output, overwrite=overwrite, resume=resume)
    run = {
        "status": "running",
        "frames_done": 0,
        "frames_total": frames.frame_count,
        "source": str(Path(source).resolve()),
        "mask": str(Path(mask).resolve()),
        "keyframes": sorted(masks.files),
        "preset": preset,
        "settings": {
            **config.as_dict(), "batch_size": batch_size, "workers": workers, "compile": compile, "device": str(torch_device)
        },
        **provenance,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    tracker = Tracker(config)
    done = 0
    if previous is not None:
        _check_same_run(previous, run, output)
        done = _leading_masks(output / "masks", frames)
        run["resumed_at"] = done
    _write_json(output / "run.json", run)

    overlay_writer = VideoWriter(output / "overlay.mp4", frames.fps, frames.size) if write_overlay else None
    writer = _MaskWriter(output / "masks", overlay_writer, stopwatch)
    report = RunReport(output, "running", done, frames.frame_count)
    try:
        resumed = _restore_state(tracker, output, done, torch_device)
        if overlay_writer is not None and resumed:
            for frame in frames.frames(0):
                if frame.index >= done:
                    break
                writer.submit(frame, read_label_map(output / "masks" / f"{frame.stem}.png"), overlay_only=True)
        for frame, frame_features in stopwatch.timed("features", pairs_from(done if resumed else 0)):
            start = time.perf_counter()
            if frame.index in masks:
                ids = tracker.add_mask(masks.read(frame.index), frame_features)
            else:
                ids = tracker.step(frame.rgb, frame_features)
            stopwatch.add("propagate", time.perf_counter() - start)
            if frame.index < done:  # replaying the frames before a resume
                if overlay_writer is not None:
                    writer.submit(frame, read_label_map(output / "masks" / f"{frame.stem}.png"), overlay_only=True)
                continue
            writer.submit(frame, ids)
            report.frames_done += 1
            if on_progress is not None:
                on_progress(report.frames_done, frames.frame_count)
            if stop is not None and stop.is_set():
                report.status = "interrupted"
                break
        else:
            report.status = "complete"
    except BaseException as error:
        report.status = "failed"
        run["error"] = str(error) or type(error).__name__
        raise
    finally:
        try:
            writer.close()
        finally:
            _finish_run(run, report, output, overlay_writer, stopwatch, started, tracker, gt)
    return report


def _feature_stream(
    frames: FrameSource,
    cache: FeatureCache | None,
    *,
    model: str,
    weights: str | os.PathLike | None,
    device: torch.device,
    short_side: int,
    batch_size: int,
    workers: int | None,
    compile: bool,
    stopwatch: _Stopwatch,
) -> tuple[Callable[[int], Iterator[tuple[Frame, torch.Tensor]]], dict]:
    """Where features come from: the cache, or the backbone (loaded now, before any output exists).

    Returns ``pairs_from(index)``, which yields ``(frame, [h, w, D] features)``
    from frame ``index`` on, and the model and weights provenance for ``run.json``.
    """
    if cache is not None:
        if cache.meta["short_side"] != short_side:
            log.warning(
                "The feature cache was made at --short-side %s; using it as it is (--short-side %s does not apply).",
                cache.meta["short_side"], short_side,
            )
        provenance = {"model": cache.meta["model"], "weights": {"source": f"features:{cache.path.resolve()}", "sha256": None}}

        def from_cache(index: int) -> Iterator[tuple[Frame, torch.Tensor]]:
            return cache.features(stopwatch.timed("decode", prefetch(frames.frames(index))), device)

        return from_cache, provenance
    start = time.perf_counter()
    backbone = create_backbone(model, weights=weights, device=device)
    stopwatch.add("load_model", time.perf_counter() - start)
    _check_frame_size(frames, backbone.patch_size)
    extractor = FeatureExtractor(
        backbone, short_side=short_side, device=device, batch_size=batch_size, workers=workers, compile=compile
    )
    provenance = {"model": model, "weights": {"source": backbone.weights_source, "sha256": backbone.weights_sha256}}

    def from_backbone(index: int) -> Iterator[tuple[Frame, torch.Tensor]]:
        return extractor(stopwatch.timed("decode", prefetch(frames.frames(index))))

    return from_backbone, provenance


def _finish_run(
    run: dict,
    report: RunReport,
    output: Path,
    overlay_writer: VideoWriter | None,
    stopwatch: _Stopwatch,
    started: float,
    tracker: Tracker,
    gt: str | os.PathLike | None,
) -> None:
    """Save the state of a stopped run, evaluate a complete one, and write ``run.json`` last."""
    state_file = output / "state.pt"
    if report.status == "interrupted":
        _save_state(tracker, report.frames_done, state_file)
    elif state_file.exists():
        state_file.unlink()
    if overlay_writer is not None:
        run["overlay"] = {"codec": overlay_writer.codec, "frames": overlay_writer.frames_written}
    stopwatch.add("total", time.perf_counter() - started)
    report.seconds = {stage: round(value, 4) for stage, value in stopwatch.seconds.items()}
    if report.status == "complete" and gt is not None:
        report.metrics = _evaluate_run(output, Path(gt))
    run.update(
        status=report.status,
        frames_done=report.frames_done,
        seconds=report.seconds,
        fps=round(report.fps, 3),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    _write_json(output / "run.json", run)


def _previous_run(output: Path) -> dict:
    run_file = output / "run.json"
    try:
        previous = json.loads(run_file.read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"--resume: {output} holds no readable run.json, so there is no run to continue. "
            "Run without --resume to start one."
        ) from None
    return previous


_SAME_RUN_KEYS = ("source", "mask", "preset", "settings", "model", "weights")


def _check_same_run(previous: dict, run: dict, output: Path) -> None:
    """A resumed run must use the same input and settings as the run it continues."""
    changed = [key for key in _SAME_RUN_KEYS if previous.get(key) != run.get(key)]
    if changed:
        details = "; ".join(f"{key}: was {previous.get(key)!r}, now {run.get(key)!r}" for key in changed)
        raise UsageError(
            f"--resume: the run in {output} was made with other inputs or settings ({details}). "
            "Resume with the same options, or start again with --overwrite."
        )


def _leading_masks(masks_dir: Path, frames: FrameSource) -> int:
    """How many frames, from the first on, already have their mask on disk."""
    done = 0
    while (frames.frame_count is None or done < frames.frame_count) and (masks_dir / f"{frames.stem(done)}.png").is_file():
        done += 1
    return done


def _save_state(tracker: Tracker, frames_done: int, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.part")
    torch.save({"frames_done": frames_done, **tracker.state_dict()}, temporary)
    os.replace(temporary, path)


def _restore_state(tracker: Tracker, output: Path, done: int, device: torch.device) -> bool:
    """Load the state an interrupted run saved after frame ``done - 1``; False means replay from frame 0."""
    path = output / "state.pt"
    if done == 0 or not path.is_file():
        return False
    state = torch.load(path, map_location=device, weights_only=True)
    if state.pop("frames_done") != done:
        return False
    tracker.load_state_dict(state)
    return True


def _evaluate_run(output: Path, gt: Path) -> EvalReport:
    report = evaluate(output / "masks", gt)
    write_json(report, output / "metrics.json")
    write_csv(report, output / "metrics.csv")
    _write_plot_if_possible(report, output / "metrics.png")
    return report


def _write_plot_if_possible(report: EvalReport, path: Path) -> None:
    """The plot needs matplotlib (an optional extra): without it, warn and go on."""
    try:
        write_plot(report, path)
    except DinotrackError as error:
        log.warning("%s", error)


def benchmark_dataset(
    root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    sequences: list[str] | None = None,
    on_sequence: Callable[[str, int, int], None] | None = None,
    **track_options: object,
) -> EvalReport:
    """Track every sequence of a DAVIS-layout dataset from its first annotation, then score them all.

    ``root`` holds ``JPEGImages/480p/<seq>`` and ``Annotations/480p/<seq>``.
    Each sequence's results go to ``output/<seq>/``; a sequence whose
    ``run.json`` says complete is not run again, an interrupted one is
    resumed. Writes ``global_results.csv``, ``per-sequence_results.csv``,
    ``metrics.json`` and ``metrics.png`` to ``output``. ``track_options`` go
    to :func:`track_video`.
    """
    root, output = Path(root), Path(output)
    frames_root, annotations_root = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    for folder in (frames_root, annotations_root):
        if not folder.is_dir():
            raise UsageError(
                f"{root} is not a DAVIS-layout dataset: {folder} is missing. "
                "Give the folder that holds JPEGImages/480p/<sequence> and Annotations/480p/<sequence>."
            )
    names = sequences or sorted(p.name for p in frames_root.iterdir() if p.is_dir())
    unknown = [name for name in names if not (frames_root / name).is_dir() or not (annotations_root / name).is_dir()]
    if unknown or not names:
        raise UsageError(
            f"No frames or annotations for sequence(s) {', '.join(unknown) or '(none found)'} in {root}. "
            f"Known sequences: {', '.join(sorted(p.name for p in frames_root.iterdir() if p.is_dir()))}."
        )
    report = EvalReport(objects=[])
    for number, name in enumerate(names, start=1):
        if on_sequence is not None:
            on_sequence(name, number, len(names))
        run_dir = output / name
        annotations = sorted((annotations_root / name).glob("*.png"))
        if not annotations:
            raise UsageError(f"{annotations_root / name} holds no PNG annotation to start {name} from.")
        run_file = run_dir / "run.json"
        status = json.loads(run_file.read_text()).get("status") if run_file.is_file() else None
        if status != "complete":
            result = track_video(
                frames_root / name, annotations[0], run_dir, resume=status is not None, **track_options
            )
            if result.status != "complete":
                raise DinotrackError(f"Tracking {name} stopped ({result.status}); run the same command again to resume.")
        sequence = evaluate(run_dir / "masks", annotations_root / name)
        report.objects += sequence.objects
        report.warnings += sequence.warnings
    write_csv(report, output / "global_results.csv", per_sequence=output / "per-sequence_results.csv")
    write_json(report, output / "metrics.json")
    _write_plot_if_possible(report, output / "metrics.png")
    return report


def extract_features(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str = "vits16",
    weights: str | os.PathLike | None = None,
    short_side: int = 480,
    device: str = "auto",
    batch_size: int = 1,
    workers: int | None = None,
    compile: bool = False,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Write the feature cache of ``source`` to ``output`` (see :mod:`dinotrack.features`). Returns frames written."""
    frames = open_source(source)
    torch_device = resolve_device(device)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is an existing file. Give a folder path (it will be created).")
    backbone = create_backbone(model, weights=weights, device=torch_device)
    _check_frame_size(frames, backbone.patch_size)
    extractor = FeatureExtractor(
        backbone, short_side=short_side, device=torch_device, batch_size=batch_size, workers=workers, compile=compile
    )
    meta = {
        "model": model,
        "patch_size": backbone.patch_size,
        "short_side": short_side,
        "grid": list(extractor.grid(frames.size)),
        "frame_size": list(frames.size),
        "dim": backbone.dim,
        "frames": frames.frame_count,
        "weights": {"source": backbone.weights_source, "sha256": backbone.weights_sha256},
    }
    writer = FeatureCacheWriter(output, meta)
    complete = False
    try:
        for frame, frame_features in extractor(prefetch(frames)):
            writer.write(frame.stem, frame_features)
            if on_progress is not None:
                on_progress(writer.frames_written, frames.frame_count)
            if stop is not None and stop.is_set():
                break
        else:
            complete = True
    finally:
        writer.close(complete=complete)
    return writer.frames_written

