"""Per-stage timings at one short side, each of the library's own function for that stage.

Decoding (``open_source``, an mp4 and a JPEG folder), the backbone
(``FeatureExtractor.extract``: resize + forward + normalise), propagation
(``Tracker.propagate``, with the context queue full) against the literal
full-matrix reference of ``dinotrack.testing`` on the same features and first
probabilities, and how far apart their masks are; turning probabilities into a
label map (``Tracker.decode``: upsampling, and colour refinement with the
default preset), PNG writing (the ``PngMasks`` sink) and the overlay
(``render.overlay``, then ``VideoWriter``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import FOOTAGE, FPS, Row, Table, Timing, Workspace, describe, median_ms, ms, timed, verdict
from dinotrack.render import overlay
from dinotrack.sinks import PngMasks, Prediction
from dinotrack.sources import Frame, VideoWriter, open_source
from dinotrack.structs import TrackConfig
from dinotrack.propagate import LabelPropagator
from dinotrack.testing import propagate_literal
from dinotrack.tracker import Tracker

STAGES = ("decode", "backbone", "propagation", "output", "overlay")
"""The stages this part can time; ``--only`` may name a few of them instead of ``stages``."""
NEEDS_FEATURES = {"backbone", "propagation", "output", "overlay"}
OUTPUT_FRAMES = 50
"""Frames over which decoding probabilities, PNG writing and the overlay are timed."""
PROPAGATION_TARGETS = {960: 10.0, 240: 3.0}
"""At these S, on the CPU, dinotrack's propagation must beat the literal one by these factors."""


def table(work: Workspace, short_side: int) -> Table:
    """The stages ``--only`` selects, timed at ``short_side``."""
    stages, config = work.args.stages, work.config(short_side)
    weights = "random weights" if work.args.weights is None else "weights file"
    title = (
        f"Stages at S={short_side}, --preset {work.args.preset} ({describe(config)}): "
        f"{work.args.model} ({weights}), {work.device.type}"
    )
    result = Table(title, ("stage", "ms/frame", "CPU ms/frame", "notes"))
    if "decode" in stages:
        result.rows += decode_rows(work)
    if stages & NEEDS_FEATURES:
        result.rows += feature_rows(work, short_side, config)
    return result


def decode_rows(work: Workspace) -> list[Row]:
    """Reading the clip as an mp4 video and as a JPEG folder (one pass each)."""
    rows = []
    for name, path in (("decode, H.264 mp4", work.video), ("decode, JPEG folder", work.folder)):
        source = open_source(path)
        count, timing = timed(lambda: sum(1 for _ in source))
        note = f"{count} frames of {work.frame_size[1]}x{work.frame_size[0]}"
        rows.append((name, ms(timing.wall / count), ms(timing.cpu / count), note))
    return rows


def feature_rows(work: Workspace, short_side: int, config: TrackConfig) -> list[Row]:
    """The rows of the stages that need features: the backbone and everything after it."""
    stages = work.args.stages
    clip = extract_features(work, short_side, 1 + config.context + work.args.samples)
    rows = []
    if "backbone" in stages:
        grid = "x".join(map(str, clip.features[0].shape[:2]))
        note = f"resize + forward + normalise, grid {grid}, median of {len(clip.timings)} frames"
        rows.append(("backbone (FeatureExtractor.extract)", *median_ms(clip.timings), note))
    tracker, result = propagate_both(work, config, clip, literal="propagation" in stages)
    if "propagation" in stages:
        rows += propagation_rows(work, short_side, config, result)
        rows += agreement_rows(tracker, clip, result)
    if stages & {"output", "overlay"}:
        output, labelled = output_rows(work, short_side, tracker, clip, result)
        rows += output if "output" in stages else []
        rows += overlay_rows(work, labelled) if "overlay" in stages else []
    return rows


@dataclass
class Clip:
    """The first frames of the clip and their backbone features at one short side."""

    frames: list[Frame]
    features: list[torch.Tensor]  # [h, w, D] float32 per frame
    timings: list[Timing]  # per frame, after one warm-up call


def extract_features(work: Workspace, short_side: int, count: int) -> Clip:
    extractor = work.extractor(short_side)
    frames = [Frame(index, f"{index:05d}", rgb) for index, rgb in enumerate(FOOTAGE.frames(count, work.frame_size))]
    extractor.extract(frames[0].rgb)  # warm-up: first-call allocations and kernel selection
    results = [timed(extractor.extract, frame.rgb, device=work.device) for frame in frames]
    return Clip(frames, [features for features, _ in results], [timing for _, timing in results])


@dataclass
class Propagation:
    """Both propagations over the same features; timings of the frames with the queue full."""

    fast_probs: list[torch.Tensor] = field(default_factory=list)  # [M, h, w] per propagated frame, on the device
    literal_probs: list[torch.Tensor] = field(default_factory=list)  # on the CPU
    fast: list[Timing] = field(default_factory=list)
    literal: list[Timing] = field(default_factory=list)
    path: str = ""  # the scoring path dinotrack picked for the grid, "dense" or "windowed"
    other: list[Timing] = field(default_factory=list)  # the other path, same features


@torch.inference_mode()
def propagate_both(work: Workspace, config: TrackConfig, clip: Clip, *, literal: bool) -> tuple[Tracker, Propagation]:
    """Steps a :class:`Tracker` and (when ``literal``) the reference, frame by frame, alternately,
    so that both see the same machine load; the reference starts from the tracker's own first
    probabilities and always runs on the CPU. Returns the tracker too, for decoding."""
    tracker = Tracker(config)
    tracker.add_mask(work.mask, clip.features[0])
    first_probs = tracker.state_dict()["keyframes"][0][1].cpu()
    on_cpu = [features.cpu() for features in clip.features]
    settings = dict(context=config.context, radius=config.radius, topk=config.topk, temperature=config.temperature)
    reference = propagate_literal(on_cpu[0], first_probs, on_cpu[1:], **settings, shape=config.neighbourhood)
    result = Propagation(path="dense" if tracker.propagator.dense_for(clip.features[0].shape[:2]) else "windowed")
    other = _other_path(tracker, result.path)
    for index, features in enumerate(clip.features[1:], start=1):
        steady = index > config.context  # the queue holds `context` frames
        probs, timing = timed(tracker.propagate, features, device=work.device)
        result.fast_probs.append(probs)
        result.fast += [timing] if steady else []
        _, timing = timed(other.step, features, device=work.device)
        result.other += [timing] if steady else []
        if literal:
            probs, timing = timed(next, reference)
            result.literal_probs.append(probs)
            result.literal += [timing] if steady else []
    return tracker, result


def _other_path(tracker: Tracker, path: str) -> LabelPropagator:
    """A propagator with the tracker's settings and context that scores by the path it did not pick."""
    config = tracker.config
    other = LabelPropagator(
        context=config.context, radius=config.radius, topk=config.topk, temperature=config.temperature,
        neighbourhood=config.neighbourhood, keyframe_bound=config.keyframe_bound,
        path="windowed" if path == "dense" else "dense",
    )  # fmt: skip
    other.load_state_dict(tracker.propagator.state_dict())
    return other


def propagation_rows(work: Workspace, short_side: int, config: TrackConfig, result: Propagation) -> list[Row]:
    wall = statistics.median(t.wall for t in result.literal) / statistics.median(t.wall for t in result.fast)
    cpu = statistics.median(t.cpu for t in result.literal) / statistics.median(t.cpu for t in result.fast)
    target = PROPAGATION_TARGETS.get(short_side)
    same_device = work.device.type == "cpu"
    check = f"; {verdict(wall, target, at_most=False)}" if target is not None and same_device else ""
    queue = f"N={config.context} queue full, median of {len(result.fast)} frames"
    other = "windowed" if result.path == "dense" else "dense"
    return [
        ("propagation, dinotrack (Tracker.propagate)", *median_ms(result.fast), f"{result.path} scoring (picked for this grid); {queue}"),
        (f"propagation, {other} scoring (LabelPropagator)", *median_ms(result.other), "the path not picked, same features"),
        (
            "propagation, literal (dinotrack.testing)" + ("" if same_device else ", on the CPU"),
            *median_ms(result.literal),
            f"{_speedup(wall)} (CPU time {cpu:.2g}x){check}",
        ),
    ]


def _speedup(factor: float) -> str:
    return f"dinotrack is {factor:.1f}x faster" if factor >= 1 else f"dinotrack is {1 / factor:.1f}x SLOWER"


def agreement_rows(tracker: Tracker, clip: Clip, result: Propagation) -> list[Row]:
    """How far apart the two propagations' probabilities and their label maps (``Tracker.decode``) are."""
    pairs = list(zip(clip.frames[1:], result.fast_probs, result.literal_probs))
    differences = [(fast.cpu() - literal).abs().max().item() for _, fast, literal in pairs]
    identical, differing, pixels, ious = 0, 0, 0, []
    for frame, fast, literal in pairs:
        fast_ids, literal_ids = tracker.decode(fast, frame.rgb), tracker.decode(literal.to(fast.device), frame.rgb)
        identical += bool(np.array_equal(fast_ids, literal_ids))
        differing += int((fast_ids != literal_ids).sum())
        pixels += fast_ids.size
        ious += [_iou(fast_ids == label, literal_ids == label) for label in tracker.labels[1:]]
    frames = len(pairs)
    return [
        ("dinotrack vs literal: max abs diff of probs", f"{max(differences):.2e}", "", f"over {frames} propagated frames"),
        (
            "dinotrack vs literal: masks",
            f"{identical}/{frames} identical",
            "",
            f"{differing} of {pixels} pixels differ, mean IoU {np.mean(ious):.6f}",
        ),
    ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def output_rows(
    work: Workspace, short_side: int, tracker: Tracker, clip: Clip, result: Propagation
) -> tuple[list[Row], list[tuple[np.ndarray, np.ndarray]]]:
    """``Tracker.decode`` and the ``PngMasks`` sink per frame, cycling over the propagated frames;
    also returns each frame's pixels with its label map."""
    config = tracker.config
    pairs = list(zip(clip.frames[1:], result.fast_probs))
    sink = PngMasks(work.root / f"stages{short_side}")
    sink.folder.mkdir(parents=True, exist_ok=True)  # as a run makes it, before its sinks write
    decode, write, labelled = [], [], []
    for index in range(OUTPUT_FRAMES):
        frame, probs = pairs[index % len(pairs)]
        ids, timing = timed(tracker.decode, probs, frame.rgb, device=work.device)
        decode.append(timing)
        write.append(timed(sink.write, Frame(index, f"{index:05d}", frame.rgb), Prediction(ids, {}))[1])
        labelled.append((frame.rgb, ids))
    how = "colour refinement" if config.refine == "colour" else "min-max + argmax" if config.minmax else "argmax"
    note = f"{work.frame_size[1]}x{work.frame_size[0]}, {len(tracker.labels)} labels, median of {OUTPUT_FRAMES}"
    if config.refine == "colour":
        note += "; scores boundary pixels only: cost follows their number"
    rows = [
        (f"probabilities to ids (Tracker.decode: {config.upsample} upsample, {how})", *median_ms(decode), note),
        ("PNG write (PngMasks sink)", *median_ms(write), f"palette PNG, median of {OUTPUT_FRAMES}"),
    ]
    return rows, labelled


def overlay_rows(work: Workspace, labelled: list[tuple[np.ndarray, np.ndarray]]) -> list[Row]:
    """Rendering overlays of ``(rgb, ids)`` pairs, and encoding them (writer throughput, open and
    close included; CPU time includes the encoder's threads)."""
    results = [timed(overlay, rgb, ids) for rgb, ids in labelled]

    def encode() -> str:
        with VideoWriter(work.root / "overlay.mp4", FPS, work.frame_size) as writer:
            for picture, _ in results:
                writer.write(picture)
        return writer.codec

    codec, timing = timed(encode)
    count = len(results)
    video = work.root / "overlay.mp4"
    psnr, ssim = picture_quality([picture for picture, _ in results], video)
    quality = f"{video.stat().st_size / count / 1024:.1f} KiB/frame, PSNR {psnr:.2f} dB, SSIM {ssim:.4f} against the pictures"
    return [
        ("overlay render (render.overlay)", *median_ms([t for _, t in results]), f"median of {count}"),
        (f"overlay encode ({codec})", ms(timing.wall / count), ms(timing.cpu / count), f"{count} frames, VideoWriter; {quality}"),
    ]


def picture_quality(pictures: list[np.ndarray], video: Path) -> tuple[float, float]:
    """Mean PSNR (dB, RGB) and mean SSIM (luma, 11x11 Gaussian window, sigma 1.5) of ``video``'s frames
    against the ``[H, W, 3] uint8`` pictures that were encoded into it."""
    psnrs, ssims = [], []
    for picture, frame in zip(pictures, open_source(video)):
        decoded = frame.rgb[: picture.shape[0], : picture.shape[1]]
        mse = np.mean((picture.astype(np.float64) - decoded) ** 2)
        psnrs.append(10 * np.log10(255**2 / max(mse, 1e-12)))
        ssims.append(_ssim(*(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64) for x in (picture, decoded))))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two ``[H, W] float64`` grey images in 0..255 (Wang et al. 2004's constants)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    return float(np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))))
