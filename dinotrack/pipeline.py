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

import collections
import dataclasses
import itertools
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from dinotrack.backbones import Backbone, create_backbone, get_backbone_spec, resolve_device, weights_source
from dinotrack.coco import COCO_FILE, CocoWriter, check_labels
from dinotrack.confidence import ConfidenceLog, keyframe_confidence, object_confidence, sharp_drops
from dinotrack.evaluation import EvalReport, check_ground_truth, evaluate, write_csv, write_json, write_plot
from dinotrack.features import (
    FeatureCache,
    FeatureCacheWriter,
    FeatureExtractor,
    check_cache_source,
    open_feature_cache,
    source_identity,
)
from dinotrack.files import atomic_write
from dinotrack.fusion import Side, fuse
from dinotrack.keyframes import FrameRange, Keyframes, frame_index, frame_range, open_keyframes
from dinotrack.masks import object_ids, read_label_map
from dinotrack.queues import Budget
from dinotrack.records import RUN_FILE, RunRecord, library_versions
from dinotrack.report import REPORT_FILE, write_report
from dinotrack.sinks import (
    SINK_TYPES,
    CocoAnnotations,
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
from dinotrack.schedule import DIRECTIONS, Direction, Schedule
from dinotrack.sources import Frame, FrameSource, open_source, prefetch
from dinotrack.spill import SPILL_FOLDER, Spill
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
ExportFormat = Literal["coco"]
"""Extra result files ``--export`` may ask for: ``coco`` writes :data:`~dinotrack.coco.COCO_FILE`."""


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
    size. ``export``: extra formats of the masks, written when the run
    completes (``("coco",)``: ``annotations.coco.json``); ``labels``:
    ``{object id: name}`` for the COCO categories (every id named must be in
    the keyframes). ``tweaks``: any other
    :class:`TrackConfig` fields to change (``{"first_mask": "area"}``), for
    experiments; the record's ``settings`` show the result. ``direction``:
    ``"both"`` tracks the frames between two keyframes from both and fuses
    the two (see :mod:`dinotrack.schedule`), ``"forward"`` only from the one
    before; frames before the first keyframe are tracked backward either way.
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
    direction: Direction = "both"
    export: tuple[ExportFormat, ...] = ()
    labels: Mapping[int, str] = field(default_factory=dict)
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
        if self.direction not in DIRECTIONS:
            raise UsageError(f"--direction must be one of {', '.join(DIRECTIONS)} (got {self.direction!r}).")
        unknown = set(self.export) - set(get_args(ExportFormat))
        if unknown:
            raise UsageError(f"--export must be one of {', '.join(get_args(ExportFormat))} (got {', '.join(sorted(unknown))}).")
        if self.labels and "coco" not in self.export:
            raise UsageError("--labels names the categories of the COCO export: pass --export coco with it.")

    @property
    def export_files(self) -> list[str]:
        """The files ``export`` adds to a run's folder."""
        return [COCO_FILE] if "coco" in self.export else []

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

    At most ``budget.max_items`` frames wait, holding at most
    ``budget.max_bytes`` of pixels and label maps (eight 854x480 frames, one
    3840x2160 one by default); errors surface on the next call.
    """

    def __init__(self, sinks: list[MaskSink], stopwatch: _Stopwatch, budget: Budget = Budget(8)) -> None:
        self.sinks = sinks
        self.stopwatch = stopwatch
        self.budget = budget
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinotrack-writer")
        self._pending: collections.deque[tuple[Future, int]] = collections.deque()
        self.nbytes = 0

    def submit(self, frame: Frame, prediction: Prediction, *, replay: bool = False) -> None:
        """Queue a frame for every sink (with ``replay``: only the sinks that need the frames before a resume).

        First waits for the oldest frames until this one fits in the budget.
        """
        sinks = [sink for sink in self.sinks if sink.replays or not replay]
        frames = [sink.pixels(frame) for sink in sinks]  # only what each reads: no 4K frame waits for PNG writing
        size = sum(each.nbytes for each in frames) + prediction.ids.nbytes
        while not self.budget.admits(len(self._pending) + 1, self.nbytes + size):
            self._wait_oldest()
        self._pending.append((self._pool.submit(self._write, sinks, frames, prediction), size))
        self.nbytes += size

    def _wait_oldest(self) -> None:
        future, size = self._pending.popleft()
        self.nbytes -= size
        future.result()

    def _write(self, sinks: list[MaskSink], frames: list[Frame], prediction: Prediction) -> None:
        for sink, frame in zip(sinks, frames):
            start = time.perf_counter()
            sink.write(frame, prediction)
            self.stopwatch.add(sink.stage, time.perf_counter() - start)

    def close(self) -> None:
        """Wait for every queued frame, then close every sink (all of them, even after an error)."""
        try:
            while self._pending:
                self._wait_oldest()
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
    mask_frame: int | str | None = None,
    start: int | str | None = None,
    end: int | str | None = None,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Track the objects of ``mask`` through ``source``; write masks, overlay and ``run.json`` to ``output``.

    ``mask``: one frame's label map (PNG; the first frame's, or the frame
    ``mask_frame`` names) or a folder of keyframe masks named like the frames.
    ``start``, ``end``: track only these frames and the ones between (names
    or indices; see :mod:`dinotrack.keyframes`).
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
    if cache is not None:
        check_cache_source(cache, frames)
    if gt is not None and not Path(gt).is_dir():
        raise UsageError(f"--gt {gt} is not a folder. Give the folder of ground-truth PNG masks named like the frames.")
    span = frame_range(frames, start, end)
    masks = open_keyframes(Path(mask), frames, mask_frame=mask_frame, frames=span)
    if options.labels:
        check_labels(options.labels, masks.object_ids(), f"the keyframe masks of {mask}")
    keyframe_names = [frames.stem(index) for index in masks.indices]
    for warning in check_ground_truth(Path(gt), frames, keyframes=keyframe_names) if gt is not None else []:
        log.warning("%s", warning)
    painter = _painter(
        options.overlay_mode(with_gt=gt is not None), frames, span, masks, gt, options.overlay_max_side
    )
    check_output(output, overwrite=overwrite, resume=resume)
    previous = RunRecord.read(output) if resume else None
    if previous is not None and previous.status == "complete":
        changes = planned_changes(previous, source, mask, options, mask_frame=mask_frame, start=start, end=end)
        _check_same_run(changes, output)
        log.info("%s already holds a complete run; nothing to resume.", output)
        _export_written(output, frames, span, previous.frames_done, options)
        return RunReport(output, previous)
    stopwatch = _Stopwatch()
    config = _cache_config(cache, options) if cache is not None else options.config
    stream = _feature_stream(frames, cache, backbone, options, config, stopwatch)
    record = RunRecord(
        source=str(Path(source).resolve()), mask=str(Path(mask).resolve()), preset=options.preset,
        settings={**config.as_dict(), **stream.settings, **_plan_settings(frames, options, span, mask_frame)},
        model=stream.model, weights=stream.weights, frames_total=span.total(frames.frame_count),
        keyframes=masks.indices, versions=library_versions(),
    )
    done = 0
    if previous is not None:
        _check_same_run(record.changes_from(previous), output)
        done = _leading_masks(output / PngMasks.file, frames, span)
        record.resumed_at = done
    prepare_output(output, overwrite=overwrite)
    confidence = ConfidenceLog(previous.confidence if previous is not None else None)
    plan = _Plan(frames, span, masks, Schedule(masks.indices, options.direction))
    coco = CocoAnnotations(output, _file_name(frames, span), options.labels) if "coco" in options.export else None
    run = _Run(output, plan, Tracker(config), record, stopwatch, painter, confidence, coco)
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
    metrics = None
    if record.status == "complete" and gt is not None:
        metrics = _evaluate_run(output, Path(gt), frames, span, keyframe_names)
    if gt is not None:
        write_report(output)
    return RunReport(output, record, metrics)


def _file_name(frames: FrameSource, span: FrameRange) -> Callable[[int], str]:
    """The name, in exported annotations, of the frame at ``position`` in ``span``: its image file's name, or
    ``<stem>.png`` for a video's frames."""
    if frames.kind == "folder":
        return lambda position: frames.files[span.first + position].name
    return lambda position: f"{frames.stem(span.first + position)}.png"


def _export_written(output: Path, frames: FrameSource, span: FrameRange, frames_done: int, options: RunOptions) -> None:
    """Write the exports a complete run lacks from its masks on disk (a run made without ``--export``)."""
    if "coco" not in options.export or (output / COCO_FILE).exists():
        return
    writer = CocoWriter(options.labels)
    name = _file_name(frames, span)
    for position in range(frames_done):
        writer.add(name(position), read_label_map(output / PngMasks.file / f"{frames.stem(span.first + position)}.png"))
    writer.write(output / COCO_FILE)


def _painter(
    mode: OverlayMode | None,
    frames: FrameSource,
    span: FrameRange,
    masks: Keyframes,
    gt: str | os.PathLike | None,
    max_side: int | None,
) -> Painter | None:
    """What draws the run's overlay pictures (checking the ground truth now, before any output exists)."""
    if mode is None:
        return None
    total = span.total(frames.frame_count)
    if mode == "plain":
        return PlainPainter(frames.size, total, object_ids(masks.get(masks.first)), max_side=max_side)
    truth = GroundTruth(Path(gt), frames.size)
    return EvaluatedPainter(frames.size, total, truth, side=mode == "side-by-side", max_side=max_side)


def _plan_settings(
    frames: FrameSource, options: RunOptions, span: FrameRange, mask_frame: int | str | None
) -> dict[str, object]:
    """The settings of the run's plan, recorded beside the tracking settings: a change in any is a new run."""
    return {
        "direction": options.direction, "start": span.first, "end": span.last,
        "mask_frame": frame_index(frames, mask_frame, "--mask-frame") if mask_frame is not None else None,
    }


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


@dataclass(frozen=True)
class _Plan:
    """What a run tracks: the frames of ``span`` of ``frames``, from ``masks``, in the passes ``schedule`` says."""

    frames: FrameSource
    span: FrameRange
    masks: Keyframes
    schedule: Schedule

    @property
    def total(self) -> int | None:
        return self.span.total(self.frames.frame_count)


class _Run:
    """One run's frame loop: features in, trackers, sinks out; the state saved when it stops early.

    Frames are read forward once. The forward tracker follows the whole
    range; a frame that a backward pass also reaches waits in a :class:`Spill`
    until the keyframe that closes its stretch is read, then the stretch is
    tracked backward from it, fused and written, in frame order. The record's
    confidence and the sinks count frames from the range's first
    (``Frame.index`` there is the position in the range).
    """

    def __init__(
        self, output: Path, plan: _Plan, tracker: Tracker, record: RunRecord,
        stopwatch: _Stopwatch, painter: Painter | None, confidence: ConfidenceLog, coco: CocoAnnotations | None = None,
    ) -> None:
        self.output = output
        self.plan = plan
        self.frames = plan.frames
        self.tracker = tracker
        self.record = record
        self.stopwatch = stopwatch
        self.painter = painter
        self.confidence = confidence
        self.masks_sink = PngMasks(output)
        self.overlay: OverlayVideo | None = None
        self.coco = coco
        self.status = "running"
        self.frames_done = 0
        self.resume_at = plan.span.first
        self.spill: Spill | None = None
        self.checkpoint: dict | None = None  # the forward tracker's state before the waiting frames

    def go(
        self,
        stream: _FeatureStream,
        done: int,
        on_progress: Progress | None,
        stop: threading.Event | None,
    ) -> None:
        """Track from the range's frame ``done`` on (restoring the saved state, or replaying the frames before it)."""
        self.frames_done = done
        self.resume_at = self.plan.span.first + done
        self.on_progress = on_progress
        self.device = stream.device
        self.masks_sink.folder.mkdir(exist_ok=True)
        if self.painter is not None:
            self.overlay = OverlayVideo(self.output, self.frames.fps, self.painter)
        else:  # a run resumed without an overlay: the earlier run's partial one would look like this run's
            (self.output / OverlayVideo.file).unlink(missing_ok=True)
        self.writer = _SinkWriter([self.masks_sink, *filter(None, [self.overlay, self.coco])], self.stopwatch)
        try:
            self.spill = Spill(self.output / SPILL_FOLDER)
            resumed = _restore_state(self.tracker, self.output, done, stream.device)
            if resumed:
                self._replay_written()
            first = self.resume_at if resumed else self.plan.span.first
            pairs = itertools.takewhile(lambda pair: self.plan.span.covers(pair[0].index), stream.pairs_from(first))
            for frame, frame_features in self.stopwatch.timed("features", pairs):
                start = time.perf_counter()
                self._take(frame, frame_features)
                self.stopwatch.add("propagate", time.perf_counter() - start)
                if stop is not None and stop.is_set():
                    self.status = "interrupted"
                    break
            else:
                self._check_no_frame_waits()
                self.status = "complete"
        except BaseException as error:
            self._failed(error)
            raise
        finally:
            try:
                self.writer.close()
            finally:
                self._record_confidence()
                self._keep_state()
                if self.spill is not None:
                    self.spill.remove()
        if self.status == "complete" and self.coco is not None:
            self._save_coco()

    def _save_coco(self) -> None:
        """Write the COCO annotations of a complete run (the run fails if they cannot be written)."""
        start = time.perf_counter()
        try:
            self.coco.save()
        except BaseException as error:
            self._failed(error)
            raise
        self.stopwatch.add(self.coco.stage, time.perf_counter() - start)

    def _failed(self, error: BaseException) -> None:
        self.status = "failed"
        self.record.error = str(error) or type(error).__name__

    def _take(self, frame: Frame, features: torch.Tensor) -> None:
        """Track one frame read: write it (and a closed stretch's waiting frames before it), or keep it waiting."""
        mask = self.plan.masks.get(frame.index)
        if mask is not None:
            self._close_stretch(mask, features)
            ids = self.tracker.add_mask(mask, features)
            self._emit(frame, Prediction(ids, keyframe_confidence(object_ids(ids))))
            return
        passes = self.plan.schedule.plan(frame.index)
        if passes.waits and not self.spill.waiting:
            self.checkpoint = self.tracker.state_dict()
        forward = self.tracker.propagate(features) if passes.after is not None else None
        if passes.waits:
            self.spill.put(frame, features, forward)
            return
        ids = self.tracker.decode(forward, frame.rgb)
        self._emit(frame, Prediction(ids, object_confidence(forward, self.tracker.labels, ids, self.tracker.objects)))

    def _close_stretch(self, mask: np.ndarray, features: torch.Tensor) -> None:
        """Track the waiting frames backward from the keyframe (``mask``, ``features``) after them; fuse; write."""
        waiting = self.spill.waiting
        if not waiting:
            return
        if waiting[-1][0] < self.resume_at:  # written before a resume: replayed from disk
            for index, stem in waiting:
                self._emit(Frame(index, stem, self.spill.rgb(index)), None)
            self.spill.clear()
            return
        labels, objects = self._backward_pass(mask, features)
        for index, stem in waiting:
            frame = Frame(index, stem, self.spill.rgb(index))
            forward_weight, backward_weight = self.plan.schedule.plan(index).distance_weights()
            backward = Side(self.spill.backward(index, self.device), labels, backward_weight)
            forward_probs = self.spill.forward(index, self.device)
            probs, channels, tracked = backward.probs, labels, objects
            if forward_probs is not None:
                forward = Side(forward_probs, self.tracker.labels[: len(forward_probs)], forward_weight)
                probs, channels = fuse(forward, backward, self.tracker.config.fusion)
                tracked = [label for label in channels[1:] if label in objects or label in self.tracker.objects]
            ids = self.tracker.decode(probs, frame.rgb, labels=channels)
            self._emit(frame, Prediction(ids, object_confidence(probs, channels, ids, tracked)))
        self.spill.clear()

    def _backward_pass(self, mask: np.ndarray, features: torch.Tensor) -> tuple[list[int], list[int]]:
        """Track the waiting frames from the keyframe after them, last first; spill their probabilities.

        Returns the backward tracker's labels (channel -> id) and objects. A
        keyframe with no object ends every object: backward, all is background.
        """
        grid = tuple(features.shape[:2])
        if not object_ids(mask):
            for index, _ in self.spill.waiting:
                self.spill.put_backward(index, torch.ones((1, *grid)))
            return [0], []
        backward = Tracker(self.tracker.config)
        backward.add_mask(mask, features)
        for index, _ in reversed(self.spill.waiting):
            self.spill.put_backward(index, backward.propagate(self.spill.features(index, self.device)))
        return list(backward.labels), backward.objects

    def _check_no_frame_waits(self) -> None:
        """The source ended with frames still waiting for a keyframe it did not reach: a damaged or shorter video."""
        if self.spill.waiting:
            index = self.spill.waiting[-1][0]
            raise DinotrackError(
                f"{self.frames.path} ended after frame {index}, before the keyframe that comes after it, so the "
                "frames since the last keyframe could not be finished. Check the video (it is shorter than its "
                "keyframes say), or remove the keyframe masks past its end."
            )

    def _emit(self, frame: Frame, prediction: Prediction | None) -> None:
        """Write one frame's prediction (``None``, or a frame before the resume: what was written before)."""
        position = frame.index - self.plan.span.first
        at = Frame(position, frame.stem, frame.rgb)
        if frame.index < self.resume_at or prediction is None:
            self.writer.submit(at, self._written(at), replay=True)
            return
        self.confidence.add(position, prediction.confidence)
        self.writer.submit(at, prediction)
        self.frames_done += 1
        if self.on_progress is not None:
            self.on_progress(self.frames_done, self.plan.total)

    def _written(self, frame: Frame) -> Prediction:
        """What the run wrote for ``frame`` (at its position) before it stopped: its mask and recorded confidence."""
        return Prediction(read_label_map(self.masks_sink.path(frame.stem)), self.confidence.at(frame.index))

    def _record_confidence(self) -> None:
        """Put each object's confidence per frame, and the sharp drops, in the record."""
        first = self.plan.span.first
        self.record.confidence = self.confidence.as_record(self.frames_done)
        self.record.low_confidence_frames = [
            {"index": first + drop.index, "frame": self.frames.stem(first + drop.index), "object": drop.object_id,
             "confidence": drop.confidence, "before": drop.before}
            for drop in sharp_drops(self.confidence, [index - first for index in self.plan.masks.indices])
            if drop.index < self.frames_done
        ]

    def _replay_written(self) -> None:
        """Feed the sinks that need it the masks of the frames before the resume (the state covers the tracker)."""
        if not any(sink.replays for sink in self.writer.sinks):
            return
        for frame in self.frames.frames(self.plan.span.first):
            if frame.index >= self.resume_at:
                break
            self._emit(frame, None)

    def _keep_state(self) -> None:
        """Save the context of an interrupted run for ``--resume``; drop a stale one otherwise.

        With frames waiting, the state saved is the one before them: a resume
        tracks their stretch again from its start.
        """
        if self.overlay is not None:
            self.record.overlay = self.overlay.describe()
        state_file = self.output / STATE_FILE
        if self.status == "interrupted":
            tracker_state = self.checkpoint if self.spill is not None and self.spill.waiting else self.tracker.state_dict()
            state = {"frames_done": self.frames_done, **tracker_state}
            atomic_write(state_file, lambda temporary: torch.save(state, temporary))
        else:
            state_file.unlink(missing_ok=True)


def planned_changes(
    previous: RunRecord, source: str | os.PathLike, mask: str | os.PathLike, options: RunOptions, *,
    mask_frame: int | str | None = None, start: int | str | None = None, end: int | str | None = None,
) -> list[str]:
    """How ``previous`` differs from a run of ``source`` and ``mask`` with ``options``, known before any model loads.

    Compares the inputs, preset, model, where the weights come from, the
    settings that decide the masks and the run's plan (direction, frame
    range, ``mask_frame``; see :meth:`RunRecord.changes_from`); empty
    when ``previous`` may be reused or resumed.
    """
    spec = get_backbone_spec(options.model)
    frames = open_source(source)
    plan = _plan_settings(frames, options, frame_range(frames, start, end), mask_frame)
    planned = dataclasses.replace(
        previous, source=str(Path(source).resolve()), mask=str(Path(mask).resolve()), preset=options.preset,
        model=spec.name, weights={**previous.weights, "source": weights_source(spec, options.weights)},
        settings={**previous.settings, **options.config.as_dict(), **plan},
    )
    return planned.changes_from(previous)


def _check_same_run(changes: list[str], output: Path) -> None:
    """A resumed run must use the same input and settings as the run it continues."""
    if changes:
        raise UsageError(
            f"--resume: the run in {output} was made with other inputs or settings ({'; '.join(changes)}). "
            "Resume with the same options, or start again with --overwrite."
        )


def _leading_masks(masks_dir: Path, frames: FrameSource, span: FrameRange) -> int:
    """How many frames of ``span``, from its first on, already have their mask on disk."""
    done = 0
    total = span.total(frames.frame_count)
    while (total is None or done < total) and (masks_dir / f"{frames.stem(span.first + done)}.png").is_file():
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


def _evaluate_run(output: Path, gt: Path, frames: FrameSource, span: FrameRange, keyframes: list[str]) -> EvalReport:
    """Score a complete run over its frames, keyframes left out, named after its source (video stem or folder name).

    The ground truth was checked before the run; a failure now (a mask changed
    or unreadable since) is one at run time that leaves the masks complete.
    """
    stems = None if span.whole else {frames.stem(index) for index in range(span.first, span.first + span.total(frames.frame_count))}
    name = frames.path.stem if frames.kind == "video" else frames.path.name
    try:
        report = evaluate(output / PngMasks.file, gt, sequences=[name], frames=stems, exclude=set(keyframes))
    except DinotrackError as error:
        raise DinotrackError(
            f"The run is complete (its masks are in {output / PngMasks.file}), but scoring it failed: {error} "
            f"Once that is fixed, score the masks with `dinotrack evaluate {output / PngMasks.file} {gt}`."
        ) from None
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
    overwrite: bool = False,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Write the feature cache of ``source`` to ``output`` (see :mod:`dinotrack.features`). Returns frames written.

    The cache is made at ``options.config.short_side`` with the backbone
    ``options`` name (or ``backbone``, already built). A cache already in
    ``output`` is refused unless ``overwrite``, which removes it first.
    """
    frames = open_source(source)
    output = Path(output)
    _check_cache_output(output, overwrite=overwrite)
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
        "source": source_identity(frames),
    }
    if overwrite:
        _remove_cache(output)
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


def _check_cache_output(output: Path, *, overwrite: bool) -> None:
    """Refuse a file, or a folder holding a cache, as ``features --output`` (unless ``overwrite``), before any work."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is an existing file. Give a folder path (it will be created).")
    if (output / "meta.json").exists() and not overwrite:
        raise UsageError(
            f"--output {output} already holds a feature cache. Choose a new folder, or pass --overwrite to replace it."
        )


def _remove_cache(output: Path) -> None:
    """Remove the cache files in ``output`` (``meta.json`` and the ``.npy`` files), nothing else."""
    for file in [output / "meta.json", *output.glob("*.npy")]:
        file.unlink(missing_ok=True)
