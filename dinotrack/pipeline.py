"""Whole jobs over files: track a video, write a feature cache, evaluate.

The only module that writes a run's results. Everything streams: frames are
decoded in a background thread, features computed in small batches, masks
and overlay frames written off the main thread, so memory stays flat however
long the video is.

A job takes its settings as one :class:`RunOptions` and, optionally, an
already-built backbone, so that one loaded model can serve many videos:

    options = RunOptions(preset="default", model="vits16", weights="dinov3_vits16....pth")
    backbone = load_backbone(options)
    for video, mask in jobs:
        track_video(video, mask, f"runs/{Path(video).stem}", options, backbone=backbone)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import cv2
import numpy as np
import torch

from dinotrack.backbones import Backbone, create_backbone, get_backbone_spec, resolve_device, weights_source
from dinotrack.confidence import ConfidenceLog, keyframe_confidence, object_confidence, sharp_drops
from dinotrack.evaluation import EvalReport, evaluate, write_csv, write_json, write_plot
from dinotrack.features import FeatureCache, FeatureCacheWriter, FeatureExtractor, open_feature_cache
from dinotrack.files import atomic_write
from dinotrack.masks import object_ids, read_label_map
from dinotrack.records import RUN_FILE, RunRecord, library_versions
from dinotrack.report import REPORT_FILE, write_report
from dinotrack.sinks import (
    SINK_TYPES,
    EvaluatedPainter,
    GroundTruth,
    MaskSink,
    OverlayMode,
    OverlayVideo,
    Painter,
    PlainPainter,
    PngMasks,
    Prediction,
)
from dinotrack.sources import Frame, FrameSource, open_source, prefetch
from dinotrack.structs import OVERLAY_MAX_SIDE, DinotrackError, TrackConfig, UsageError, preset
from dinotrack.tracker import Tracker

if TYPE_CHECKING:
    from dinotrack.backbones import BackboneSpec

log = logging.getLogger("dinotrack")

Progress = Callable[[int, "int | None"], None]
STATE_FILE = "state.pt"
METRIC_FILES = {"json": "metrics.json", "csv": "metrics.csv", "plot": "metrics.png"}
RESULT_FILES = (RUN_FILE, STATE_FILE, *(sink.file for sink in SINK_TYPES), *METRIC_FILES.values(), REPORT_FILE)
"""Everything a run may leave in its folder: another run's results are recognised by these."""
OverlayChoice = Literal["auto", "plain", "evaluated", "side-by-side", "none"]
"""``overlay.mp4``'s pictures: see :class:`RunOptions`."""


@dataclass(frozen=True)
class RunOptions:
    """How a job runs, the same for every video of a batch (picklable).

    ``preset`` names the :data:`~dinotrack.structs.PRESETS` entry; the
    propagation settings left ``None`` take the preset's values, and
    :attr:`config` derives the one :class:`TrackConfig` that both runs and
    is recorded. ``model``: a registered name or a ``BackboneSpec``;
    ``weights``: a checkpoint file (``None``: the hub weights). ``batch_size``,
    ``workers``, ``compile``: see :class:`~dinotrack.features.FeatureExtractor`.
    ``overlay``: what ``overlay.mp4`` shows: ``"plain"`` (the prediction,
    each object's area and confidence), ``"evaluated"`` (against the ground
    truth: missed and wrongly claimed pixels, J and F per frame),
    ``"side-by-side"`` (prediction | ground truth), ``"none"`` (no video), or
    ``"auto"``: evaluated with ground truth, plain without. ``overlay_max_side``:
    the overlay's long side at most this many pixels (frames larger than that
    are shrunk for it; ``None``: the frame size); masks always keep the frame
    size. ``tweaks``: any other
    :class:`TrackConfig` fields to change (``{"first_mask": "area"}``), for
    experiments; the record's ``settings`` show the result.
    """

    preset: str = "default"
    short_side: int | None = None
    context: int | None = None
    radius: float | None = None
    topk: int | None = None
    temperature: float | None = None
    keyframe_bound: int | None = None
    model: str | BackboneSpec = "vits16"
    weights: str | os.PathLike | None = None
    device: str = "auto"
    batch_size: int = 1
    workers: int | None = None
    compile: bool = False
    overlay: OverlayChoice = "auto"
    overlay_max_side: int | None = OVERLAY_MAX_SIDE
    tweaks: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config  # noqa: B018 - raises a UsageError for an unknown preset or a bad setting
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1 (got {self.workers}).")
        if self.overlay not in get_args(OverlayChoice):
            raise UsageError(f"--overlay must be one of {', '.join(get_args(OverlayChoice))} (got {self.overlay!r}).")
        if self.overlay_max_side is not None and self.overlay_max_side < 16:
            raise UsageError(
                f"--overlay-max-side must be at least 16 pixels, or 0 for the frame size (got {self.overlay_max_side})."
            )

    @property
    def config(self) -> TrackConfig:
        """The preset's settings with this run's overrides."""
        named = {
            "short_side": self.short_side, "context": self.context, "radius": self.radius, "topk": self.topk,
            "temperature": self.temperature, "keyframe_bound": self.keyframe_bound,
        }
        return preset(self.preset).replace(**{**named, **self.tweaks})

    def replace(self, **changes: object) -> RunOptions:
        return dataclasses.replace(self, **changes)

    def overlay_mode(self, *, with_gt: bool) -> OverlayMode | None:
        """The overlay a run writes (``None``: none), given whether it has ground truth."""
        if self.overlay == "auto":
            return "evaluated" if with_gt else "plain"
        if self.overlay in ("evaluated", "side-by-side") and not with_gt:
            raise UsageError(
                f"--overlay {self.overlay} draws the prediction against the ground truth, and this run has none. "
                "Pass --gt DIR with the ground-truth masks, or choose --overlay plain."
            )
        return None if self.overlay == "none" else self.overlay


@dataclass
class RunReport:
    """What a finished (or stopped) run did: its record (as in ``run.json``) and its scores."""

    output: Path
    record: RunRecord
    metrics: EvalReport | None = None

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def frames_done(self) -> int:
        return self.record.frames_done

    @property
    def frames_total(self) -> int | None:
        return self.record.frames_total

    @property
    def seconds(self) -> dict[str, float]:
        return self.record.seconds

    @property
    def fps(self) -> float:
        return self.record.fps


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

    def rounded(self) -> dict[str, float]:
        return {stage: round(value, 4) for stage, value in self.seconds.items()}


class _SinkWriter:
    """Hands each frame's prediction to every sink on a worker thread.

    At most ``depth`` frames wait; errors surface on the next call.
    """

    def __init__(self, sinks: list[MaskSink], stopwatch: _Stopwatch, depth: int = 8) -> None:
        self.sinks = sinks
        self.stopwatch = stopwatch
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinotrack-writer")
        self._pending: list[Future] = []

    def submit(self, frame: Frame, prediction: Prediction, *, replay: bool = False) -> None:
        """Queue a frame for every sink (with ``replay``: only the sinks that need the frames before a resume)."""
        sinks = [sink for sink in self.sinks if sink.replays or not replay]
        self._pending.append(self._pool.submit(self._write, sinks, frame, prediction))
        while len(self._pending) > self.depth:
            self._pending.pop(0).result()

    def _write(self, sinks: list[MaskSink], frame: Frame, prediction: Prediction) -> None:
        for sink in sinks:
            start = time.perf_counter()
            sink.write(frame, prediction)
            self.stopwatch.add(sink.stage, time.perf_counter() - start)

    def close(self) -> None:
        """Wait for every queued frame, then close every sink (all of them, even after an error)."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
            _close_all(self.sinks)


def _close_all(sinks: list[MaskSink]) -> None:
    if not sinks:
        return
    try:
        sinks[0].close()
    finally:
        _close_all(sinks[1:])


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

    def get(self, index: int) -> np.ndarray | None:
        """``[H, W] uint8`` ids of frame ``index``'s mask at the frame size; ``None`` if it has none."""
        if index not in self.files:
            return None
        return self._first if index == 0 else read_keyframe(self.files[index], self.frame_size)


def _keyframe_files(folder: Path, source: FrameSource) -> dict[int, Path]:
    by_stem = {file.stem: file for file in sorted(folder.glob("*.png"))}
    if not by_stem:
        raise UsageError(
            f"--mask {folder} is a folder without PNG files. Give the first frame's mask, "
            "or a folder of PNG masks named like the frames."
        )
    stems = _source_stems(source, by_stem)
    unknown = sorted(set(by_stem) - set(stems))
    if unknown:
        log.warning(
            "Ignoring %d mask file(s) not named like a frame of %s: %s",
            len(unknown), source.path, ", ".join(unknown[:5]),
        )
    files = {index: by_stem[stem] for index, stem in enumerate(stems) if stem in by_stem}
    if 0 not in files:
        raise UsageError(
            f"--mask {folder} has no mask for the first frame ({source.stem(0)}.png). Tracking starts from the "
            "first frame, so it needs a mask; add one named like that frame."
        )
    return files


def _source_stems(source: FrameSource, mask_stems: Iterable[str]) -> list[str]:
    """The frames' names; for a video whose container gives no frame count, up to the last numbered mask."""
    if source.kind == "folder":
        return [file.stem for file in source.files]
    count = source.frame_count
    if count is None:
        count = 1 + max((int(stem) for stem in mask_stems if stem.isdigit()), default=0)
    return [source.stem(index) for index in range(count)]


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


def check_output(output: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse an output that is a file, or that holds another run's results unless told what to do with them.

    Creates nothing, so it can run before the model loads.
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is an existing file. Give a folder path (it will be created).")
    links = [name for name in RESULT_FILES if (output / name).is_symlink()]
    if links:
        raise UsageError(
            f"--output {output} holds symbolic links where dinotrack writes its results ({', '.join(links)}). "
            "dinotrack never writes through links; remove them or choose another folder."
        )
    previous = _previous_results(output)
    if previous and not (overwrite or resume):
        raise UsageError(
            f"--output {output} already holds results of another run ({', '.join(previous)}). "
            "Choose a new folder, pass --overwrite to replace them, or --resume to continue that run."
        )


def prepare_output(output: Path, *, overwrite: bool) -> None:
    """Create ``output`` (removing an earlier run's results with ``overwrite``) and check it is writable."""
    if overwrite:
        for name in _previous_results(output):
            target = output / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    try:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write(output / ".dinotrack-write-test", lambda temporary: temporary.write_text(""))
        (output / ".dinotrack-write-test").unlink()
    except OSError as error:
        raise DinotrackError(f"Cannot write to --output {output} ({error.strerror}). Choose a folder you can write to.") from None


def _previous_results(output: Path) -> list[str]:
    return [name for name in RESULT_FILES if (output / name).exists() or (output / name).is_symlink()]


def load_backbone(options: RunOptions) -> Backbone:
    """The backbone ``options`` name, built once on its device; pass it to many :func:`track_video` calls."""
    return create_backbone(options.model, weights=options.weights, device=resolve_device(options.device))


def _check_frame_size(source: FrameSource, patch_size: int) -> None:
    height, width = source.size
    if min(height, width) < patch_size:
        raise UsageError(
            f"The frames of {source.path} are {width}x{height}, smaller than one {patch_size}-pixel patch. "
            "dinotrack needs frames at least one patch wide and high."
        )


@dataclass
class _FeatureStream:
    """Where a run's features come from (a backbone or a cache) and what to record about it."""

    pairs_from: Callable[[int], Iterator[tuple[Frame, torch.Tensor]]]
    device: torch.device
    model: str
    weights: dict[str, object]
    settings: dict[str, object] = field(default_factory=dict)


def make_extractor(frames: FrameSource, backbone: Backbone, options: RunOptions, short_side: int) -> FeatureExtractor:
    """The feature extractor for ``frames`` on ``backbone``'s device, batched as ``options`` say."""
    _check_frame_size(frames, backbone.patch_size)
    return FeatureExtractor(
        backbone, short_side=short_side, device=backbone.device, batch_size=options.batch_size,
        workers=options.workers, compile=options.compile,
    )


def _extractor_stream(
    frames: FrameSource, backbone: Backbone, options: RunOptions, config: TrackConfig, stopwatch: _Stopwatch
) -> _FeatureStream:
    extractor = make_extractor(frames, backbone, options, config.short_side)

    def pairs_from(index: int) -> Iterator[tuple[Frame, torch.Tensor]]:
        return extractor(stopwatch.timed("decode", prefetch(frames.frames(index))))

    return _FeatureStream(
        pairs_from, backbone.device, backbone.spec.name, {"source": backbone.weights_source, "sha256": backbone.weights_sha256},
        {"batch_size": options.batch_size, "workers": extractor.workers, "compile": options.compile,
         "device": str(backbone.device)},
    )


def _cache_stream(frames: FrameSource, cache: FeatureCache, device: torch.device, stopwatch: _Stopwatch) -> _FeatureStream:
    def pairs_from(index: int) -> Iterator[tuple[Frame, torch.Tensor]]:
        return cache.features(stopwatch.timed("decode", prefetch(frames.frames(index))), device)

    return _FeatureStream(
        pairs_from, device, cache.meta["model"], {"source": f"features:{cache.path.resolve()}", "sha256": None},
        {"device": str(device)},
    )


def _cache_config(cache: FeatureCache, options: RunOptions) -> TrackConfig:
    """The run's settings with the short side the cache was made at (the one that applies)."""
    made_at = cache.meta["short_side"]
    if options.short_side is not None and options.short_side != made_at:
        log.warning(
            "The feature cache was made at --short-side %s; using it as it is (--short-side %s does not apply).",
            made_at, options.short_side,
        )
    return options.config.replace(short_side=made_at)


def track_video(
    source: str | os.PathLike,
    mask: str | os.PathLike,
    output: str | os.PathLike,
    options: RunOptions = RunOptions(),
    *,
    gt: str | os.PathLike | None = None,
    features: str | os.PathLike | None = None,
    backbone: Backbone | None = None,
    overwrite: bool = False,
    resume: bool = False,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Track the objects of ``mask`` through ``source``; write masks, overlay and ``run.json`` to ``output``.

    ``mask``: the first frame's label map (PNG) or a folder of keyframe masks.
    ``gt``: ground-truth masks named like the frames: the run is scored
    (``metrics.json``, ``.csv``, ``.png``), the overlay is evaluated (unless
    ``options.overlay`` says otherwise) and ``report.html`` is written.
    ``features``: a feature cache folder to use instead of running the backbone.
    ``backbone``: an already-built backbone (see :func:`load_backbone`);
    without one, ``options`` name the backbone, built here. ``stop``: when set,
    the run finishes the frame in hand, saves its state and ends with status
    ``interrupted``. ``resume``: continue such a run (or a failed or killed
    one) from its last written frame, with the same masks as an
    uninterrupted run. Every input is checked before ``output`` is created.
    """
    started = time.perf_counter()
    output = Path(output)
    frames = open_source(source)
    cache = open_feature_cache(features) if features is not None else None
    if gt is not None and not Path(gt).is_dir():
        raise UsageError(f"--gt {gt} is not a folder. Give the folder of ground-truth PNG masks named like the frames.")
    masks = Keyframes(Path(mask), frames)
    painter = _painter(options.overlay_mode(with_gt=gt is not None), frames, masks, gt, options.overlay_max_side)
    check_output(output, overwrite=overwrite, resume=resume)
    previous = RunRecord.read(output) if resume else None
    if previous is not None and previous.status == "complete":
        _check_same_run(planned_changes(previous, source, mask, options), output)
        log.info("%s already holds a complete run; nothing to resume.", output)
        return RunReport(output, previous)
    stopwatch = _Stopwatch()
    config = _cache_config(cache, options) if cache is not None else options.config
    stream = _feature_stream(frames, cache, backbone, options, config, stopwatch)
    record = RunRecord(
        source=str(Path(source).resolve()), mask=str(Path(mask).resolve()), preset=options.preset,
        settings={**config.as_dict(), **stream.settings}, model=stream.model, weights=stream.weights,
        frames_total=frames.frame_count, keyframes=sorted(masks.files), versions=library_versions(),
    )
    done = 0
    if previous is not None:
        _check_same_run(record.changes_from(previous), output)
        done = _leading_masks(output / PngMasks.file, frames)
        record.resumed_at = done
    prepare_output(output, overwrite=overwrite)
    confidence = ConfidenceLog(previous.confidence if previous is not None else None)
    run = _Run(output, frames, masks, Tracker(config), record, stopwatch, painter, confidence)
    try:
        record.write(output)
        run.go(stream, done, on_progress, stop)
    except OSError as error:  # the disk filled up, the folder vanished or turned read-only
        unsaved = _finish_record(record, run, stopwatch, started)
        raise _output_fault(output, error, run.frames_done, unsaved) from None
    except BaseException:
        _finish_record(record, run, stopwatch, started)
        raise
    unsaved = _finish_record(record, run, stopwatch, started)
    if unsaved is not None:
        raise _output_fault(output, unsaved, run.frames_done, unsaved)
    metrics = _evaluate_run(output, Path(gt), frames) if record.status == "complete" and gt is not None else None
    if gt is not None:
        write_report(output)
    return RunReport(output, record, metrics)


def _painter(
    mode: OverlayMode | None, frames: FrameSource, masks: Keyframes, gt: str | os.PathLike | None, max_side: int | None
) -> Painter | None:
    """What draws the run's overlay pictures (checking the ground truth now, before any output exists)."""
    if mode is None:
        return None
    if mode == "plain":
        return PlainPainter(frames.size, frames.frame_count, object_ids(masks.get(0)), max_side=max_side)
    truth = GroundTruth(Path(gt), frames.size)
    return EvaluatedPainter(frames.size, frames.frame_count, truth, side=mode == "side-by-side", max_side=max_side)


def _finish_record(record: RunRecord, run: _Run, stopwatch: _Stopwatch, started: float) -> OSError | None:
    """Write how the run ended to ``run.json``; the error if that write failed (never raises it)."""
    stopwatch.add("total", time.perf_counter() - started)
    record.finish(run.status, run.frames_done, stopwatch.rounded())
    try:
        record.write(run.output)
    except OSError as error:
        return error
    return None


def _output_fault(output: Path, error: OSError, frames_done: int, unsaved: OSError | None) -> DinotrackError:
    """One paragraph for a write that the machine refused: what happened, what was kept, how to go on."""
    where = f" ({error.filename})" if error.filename else ""
    record = (
        f"{RUN_FILE} could not be updated either, so it may still say 'running'; --resume replays the run "
        "from the masks on disk"
        if unsaved is not None
        else f"{RUN_FILE} says 'failed'"
    )
    return DinotrackError(
        f"Writing the results to {output} failed: {error.strerror or error}{where}. The masks of the "
        f"{frames_done} frames done before are whole and kept, and {record}. Free some space (or make the "
        "folder writable again, or recreate it), then run the same command with --resume to continue."
    )


def _feature_stream(
    frames: FrameSource,
    cache: FeatureCache | None,
    backbone: Backbone | None,
    options: RunOptions,
    config: TrackConfig,
    stopwatch: _Stopwatch,
) -> _FeatureStream:
    """The cache's features, or the backbone's (built now, before any output exists, if not given)."""
    if cache is not None:
        return _cache_stream(frames, cache, backbone.device if backbone else resolve_device(options.device), stopwatch)
    if backbone is None:
        start = time.perf_counter()
        backbone = load_backbone(options)
        stopwatch.add("load_model", time.perf_counter() - start)
    return _extractor_stream(frames, backbone, options, config, stopwatch)


class _Run:
    """One run's frame loop: features in, tracker, sinks out; the state saved when it stops early."""

    def __init__(
        self, output: Path, frames: FrameSource, masks: Keyframes, tracker: Tracker, record: RunRecord,
        stopwatch: _Stopwatch, painter: Painter | None, confidence: ConfidenceLog,
    ) -> None:
        self.output = output
        self.frames = frames
        self.masks = masks
        self.tracker = tracker
        self.record = record
        self.stopwatch = stopwatch
        self.painter = painter
        self.confidence = confidence
        self.masks_sink = PngMasks(output)
        self.overlay: OverlayVideo | None = None
        self.status = "running"
        self.frames_done = 0

    def go(
        self,
        stream: _FeatureStream,
        done: int,
        on_progress: Progress | None,
        stop: threading.Event | None,
    ) -> None:
        """Track from frame ``done`` on (restoring the saved state, or replaying the frames before it)."""
        self.frames_done = done
        self.masks_sink.folder.mkdir(exist_ok=True)
        if self.painter is not None:
            self.overlay = OverlayVideo(self.output, self.frames.fps, self.painter)
        self.writer = _SinkWriter([self.masks_sink, *filter(None, [self.overlay])], self.stopwatch)
        try:
            resumed = _restore_state(self.tracker, self.output, done, stream.device)
            if resumed:
                self._replay_written(done)
            for frame, frame_features in self.stopwatch.timed("features", stream.pairs_from(done if resumed else 0)):
                start = time.perf_counter()
                prediction = self._predict(frame, frame_features)
                self.stopwatch.add("propagate", time.perf_counter() - start)
                if frame.index < done:  # replaying the frames before a resume
                    self.writer.submit(frame, self._written(frame), replay=True)
                    continue
                self.writer.submit(frame, prediction)
                self.frames_done += 1
                if on_progress is not None:
                    on_progress(self.frames_done, self.frames.frame_count)
                if stop is not None and stop.is_set():
                    self.status = "interrupted"
                    break
            else:
                self.status = "complete"
        except BaseException as error:
            self.status = "failed"
            self.record.error = str(error) or type(error).__name__
            raise
        finally:
            try:
                self.writer.close()
            finally:
                self._record_confidence()
                self._keep_state()

    def _predict(self, frame: Frame, features: torch.Tensor) -> Prediction:
        """Track one frame (a keyframe takes its mask) and score each object's confidence."""
        mask = self.masks.get(frame.index)
        if mask is not None:
            ids = self.tracker.add_mask(mask, features)
            confidence = keyframe_confidence(object_ids(ids))
        else:
            probs = self.tracker.propagate(features)
            ids = self.tracker.decode(probs, frame.rgb)
            confidence = object_confidence(probs, self.tracker.labels, ids, self.tracker.objects)
        self.confidence.add(frame.index, confidence)
        return Prediction(ids, confidence)

    def _written(self, frame: Frame) -> Prediction:
        """What the run wrote for ``frame`` before it stopped: its mask on disk and its recorded confidence."""
        return Prediction(read_label_map(self.masks_sink.path(frame.stem)), self.confidence.at(frame.index))

    def _record_confidence(self) -> None:
        """Put each object's confidence per frame, and the sharp drops, in the record."""
        self.record.confidence = self.confidence.as_record(self.frames_done)
        self.record.low_confidence_frames = [
            {"index": drop.index, "frame": self.frames.stem(drop.index), "object": drop.object_id,
             "confidence": drop.confidence, "before": drop.before}
            for drop in sharp_drops(self.confidence, self.masks.files)
            if drop.index < self.frames_done
        ]

    def _replay_written(self, done: int) -> None:
        """Feed the sinks that need it the masks of the frames before ``done`` (the state covers the tracker)."""
        if not any(sink.replays for sink in self.writer.sinks):
            return
        for frame in self.frames.frames(0):
            if frame.index >= done:
                break
            self.writer.submit(frame, self._written(frame), replay=True)

    def _keep_state(self) -> None:
        """Save the context of an interrupted run for ``--resume``; drop a stale one otherwise."""
        if self.overlay is not None:
            self.record.overlay = self.overlay.describe()
        state_file = self.output / STATE_FILE
        if self.status == "interrupted":
            state = {"frames_done": self.frames_done, **self.tracker.state_dict()}
            atomic_write(state_file, lambda temporary: torch.save(state, temporary))
        else:
            state_file.unlink(missing_ok=True)


def planned_changes(previous: RunRecord, source: str | os.PathLike, mask: str | os.PathLike, options: RunOptions) -> list[str]:
    """How ``previous`` differs from a run of ``source`` and ``mask`` with ``options``, known before any model loads.

    Compares the inputs, preset, model, where the weights come from and the
    settings that decide the masks (see :meth:`RunRecord.changes_from`); empty
    when ``previous`` may be reused or resumed.
    """
    spec = get_backbone_spec(options.model)
    planned = dataclasses.replace(
        previous, source=str(Path(source).resolve()), mask=str(Path(mask).resolve()), preset=options.preset,
        model=spec.name, weights={**previous.weights, "source": weights_source(spec, options.weights)},
        settings={**previous.settings, **options.config.as_dict()},
    )
    return planned.changes_from(previous)


def _check_same_run(changes: list[str], output: Path) -> None:
    """A resumed run must use the same input and settings as the run it continues."""
    if changes:
        raise UsageError(
            f"--resume: the run in {output} was made with other inputs or settings ({'; '.join(changes)}). "
            "Resume with the same options, or start again with --overwrite."
        )


def _leading_masks(masks_dir: Path, frames: FrameSource) -> int:
    """How many frames, from the first on, already have their mask on disk."""
    done = 0
    while (frames.frame_count is None or done < frames.frame_count) and (masks_dir / f"{frames.stem(done)}.png").is_file():
        done += 1
    return done


def _restore_state(tracker: Tracker, output: Path, done: int, device: torch.device) -> bool:
    """Load the state an interrupted run saved after frame ``done - 1``; False means replay from frame 0."""
    path = output / STATE_FILE
    if done == 0 or not path.is_file():
        return False
    state = torch.load(path, map_location=device, weights_only=True)
    if state.pop("frames_done") != done:
        return False
    tracker.load_state_dict(state)
    return True


def _evaluate_run(output: Path, gt: Path, frames: FrameSource) -> EvalReport:
    """Score a complete run, named after its source (the video's stem or the frame folder's name)."""
    report = evaluate(output / PngMasks.file, gt, sequences=[frames.path.stem if frames.kind == "video" else frames.path.name])
    write_json(report, output / METRIC_FILES["json"])
    write_csv(report, output / METRIC_FILES["csv"])
    _write_plot_if_possible(report, output / METRIC_FILES["plot"])
    return report


def _write_plot_if_possible(report: EvalReport, path: Path) -> None:
    """Without matplotlib (a dependency, but one an environment can lack), warn and go on: the scores are written."""
    try:
        write_plot(report, path)
    except DinotrackError as error:
        log.warning("%s", error)


def extract_features(
    source: str | os.PathLike,
    output: str | os.PathLike,
    options: RunOptions = RunOptions(),
    *,
    backbone: Backbone | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Write the feature cache of ``source`` to ``output`` (see :mod:`dinotrack.features`). Returns frames written.

    The cache is made at ``options.config.short_side`` with the backbone
    ``options`` name (or ``backbone``, already built).
    """
    frames = open_source(source)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is an existing file. Give a folder path (it will be created).")
    backbone = backbone or load_backbone(options)
    extractor = make_extractor(frames, backbone, options, options.config.short_side)
    meta = {
        "model": backbone.spec.name,
        "patch_size": backbone.patch_size,
        "short_side": extractor.short_side,
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
