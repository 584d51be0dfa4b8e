"""Time every stage of dinotrack and check its performance targets.

Prints the machine, then one table per short side ``S``: milliseconds per frame
of decoding, the backbone, label propagation (dinotrack's windowed propagation
and the literal full-matrix reference of dinotrack.testing, on the same
features, with the context queue full), upsample + argmax, PNG writing and the
overlay; then frames/s of ``dinotrack track`` on a looped clip, run as a user
runs it (a fresh process, start-up included, ``--preset`` as given), against the
bare backbone forward passes on the same frames; then peak RSS of
``dinotrack track`` on a long and a short video; and last, the cost of each
overlay mode (``--overlay plain``, ``evaluated``, ``side-by-side``) per frame
on one thread, against DAVIS ground truth.

Frames are the DAVIS sequences of ``../shared/data`` (854x480) played one after
another and looped, or the sample clip upscaled to 854x480 where that folder is
absent. Without ``--weights`` the backbone has random weights (seeded): timings
do not depend on the weights' values. Besides wall-clock time, every row gives
CPU time, which is less disturbed by other programs. On a shared machine, check
the load averages printed with each table, and pass ``--repeats`` to keep the
best of several end-to-end runs.

    python scripts/benchmark.py                                  # everything (long on a small CPU)
    python scripts/benchmark.py --only propagation --short-sides 960
    python scripts/benchmark.py --only end-to-end --short-sides 480 --frames 100 --repeats 3
    python scripts/benchmark.py --only memory --memory-frames 150,1500
    python scripts/benchmark.py --only overlay-modes
    python scripts/benchmark.py --device cuda --model vitl16 --short-sides 960
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # dinotrack from this checkout
os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # as the dinotrack CLI sets it, for a like-for-like bare backbone

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dinotrack.backbones import Backbone, create_backbone  # noqa: E402
from dinotrack.features import FeatureExtractor, ThreadShare, default_workers, preprocess  # noqa: E402
from dinotrack.masks import object_ids, read_label_map, write_label_map  # noqa: E402
from dinotrack.propagate import LabelPropagator, labels_to_probs  # noqa: E402
from dinotrack.refine import probs_to_ids  # noqa: E402
from dinotrack.render import overlay  # noqa: E402
from dinotrack.sinks import EvaluatedPainter, GroundTruth, Painter, PlainPainter, Prediction  # noqa: E402
from dinotrack.sources import Frame, VideoWriter, open_source  # noqa: E402
from dinotrack.structs import TrackConfig  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "sample_videos"
FRAME_SIZE = (480, 854)
FPS = 24.0
STAGES = ("decode", "backbone", "propagation", "output", "overlay", "end-to-end", "memory", "overlay-modes")
NEEDS_FEATURES = {"backbone", "propagation", "output", "overlay"}
OUTPUT_FRAMES = 50
"""Frames over which upsample/argmax, PNG writing and the overlay are timed."""
PROPAGATION_TARGET = (960, 10.0)  # at this S, fast must beat literal by this factor
END_TO_END_TARGET = (480, 1.2)  # at this S, end to end within this factor of the bare backbone
MEMORY_TARGET = 1.1  # peak RSS of the long video within this factor of the short one
EVALUATED_TARGET = 10.0  # ms per 854x480 frame that the evaluated overlay may cost above the plain one
ERROR_SHIFT = 8
"""Pixels by which the overlay-modes stage shifts the ground truth to make a prediction with errors."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


@dataclass
class Table:
    """One printed (Markdown) table: a title, a header and rows of text cells."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        """Append a row; missing trailing cells are empty."""
        self.rows.append((*cells, *[""] * (len(self.header) - len(cells))))

    def print(self) -> None:
        print(f"\n### {self.title}\n")
        widths = [max(len(row[i]) for row in (self.header, *self.rows)) for i in range(len(self.header))]
        line = lambda row: "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"  # noqa: E731
        print(line(self.header))
        print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
        for row in self.rows:
            print(line(row))
        sys.stdout.flush()


# --- frames and clips -------------------------------------------------------------------


def davis_sequences() -> list[Path]:
    """The DAVIS JPEG sequence folders of the shared data, sorted; empty when absent."""
    root = DATA / "DAVIS" / "JPEGImages" / "480p"
    return sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []


def looped_frames(count: int) -> Iterator[np.ndarray]:
    """``count`` frames ``[480, 854, 3] uint8`` RGB: the source played again and again."""
    produced = 0
    while True:
        for rgb in _source_pass():
            if produced == count:
                return
            yield rgb
            produced += 1


def _source_pass() -> Iterator[np.ndarray]:
    sequences = davis_sequences()
    if sequences:
        for sequence in sequences:
            for file in sorted(sequence.glob("*.jpg")):
                yield cv2.cvtColor(cv2.imread(str(file)), cv2.COLOR_BGR2RGB)
        return
    for frame in open_source(SAMPLE / "shapes.mp4"):
        yield cv2.resize(frame.rgb, FRAME_SIZE[::-1], interpolation=cv2.INTER_CUBIC)


def first_mask() -> np.ndarray:
    """The label map ``[480, 854] uint8`` of the first frame of :func:`looped_frames`."""
    sequences = davis_sequences()
    if sequences:
        return read_label_map(DATA / "DAVIS" / "Annotations" / "480p" / sequences[0].name / "00000.png")
    ids = read_label_map(SAMPLE / "shapes_mask.png")
    return cv2.resize(ids, FRAME_SIZE[::-1], interpolation=cv2.INTER_NEAREST)


def source_description() -> str:
    if davis_sequences():
        return f"DAVIS {', '.join(path.name for path in davis_sequences())} looped"
    return "sample clip shapes.mp4 upscaled, looped"


def write_video(path: Path, count: int) -> Path:
    """An H.264 (or mp4v) clip of ``count`` looped frames at 24 fps."""
    with VideoWriter(path, FPS, FRAME_SIZE) as writer:
        for rgb in looped_frames(count):
            writer.write(rgb)
    return path


def write_folder(path: Path, count: int) -> Path:
    """A folder of ``count`` looped frames as JPEG (quality 95), named 00000.jpg, ..."""
    path.mkdir(parents=True)
    for index, rgb in enumerate(looped_frames(count)):
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(path / f"{index:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


# --- timing helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds (this process, all its threads) of one call."""

    wall: float
    cpu: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable, *args: object, device: torch.device = torch.device("cpu")) -> tuple[object, Timing]:
    """``(function(*args), its Timing)``, waiting for the device before and after."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    synchronize(device)
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def median_ms(timings: list[Timing]) -> tuple[str, str]:
    """Median wall and median CPU milliseconds, formatted."""
    return ms(statistics.median(t.wall for t in timings)), ms(statistics.median(t.cpu for t in timings))


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# --- the machine ------------------------------------------------------------------------


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_table(device: torch.device) -> Table:
    import av
    import timm

    table = Table("Machine", ("", "", ""))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    table.add("CPU", cpu_model(), f"{os.cpu_count()} logical cores, {usable} usable, {memory:.1f} GiB RAM")
    if device.type == "cuda":
        table.add("GPU", torch.cuda.get_device_name(device), f"CUDA {torch.version.cuda}")
    table.add("OS", platform.platform(), f"Python {platform.python_version()}")
    threads = f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads"
    table.add("torch", torch.__version__, threads)
    settings = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    table.add("environment", ", ".join(settings) or "no thread variables set", ", ".join(THREAD_VARIABLES))
    libraries = f"OpenCV {cv2.__version__}, PyAV {av.__version__}, numpy {np.__version__}"
    table.add("others", f"timm {timm.__version__}", libraries)
    table.add("load average", load_average(), "1, 5, 15 min, at start")
    return table


# --- the workspace: clips, weights, backbone, built once when first needed -----------------


class Workspace:
    """Temporary clips, mask and weights shared by every measurement."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.device = torch.device(args.device)
        self.config = TrackConfig()

    @cached_property
    def mask(self) -> np.ndarray:
        return first_mask()

    @cached_property
    def mask_file(self) -> Path:
        write_label_map(self.root / "mask.png", self.mask)
        return self.root / "mask.png"

    @cached_property
    def labels(self) -> list[int]:
        return [0, *object_ids(self.mask)]

    @cached_property
    def video(self) -> Path:
        return write_video(self.root / f"clip{self.args.frames}.mp4", self.args.frames)

    @cached_property
    def folder(self) -> Path:
        return write_folder(self.root / f"clip{self.args.frames}", self.args.frames)

    @cached_property
    def weights(self) -> Path:
        """``--weights``, or the backbone's random weights saved as a timm-format .safetensors."""
        if self.args.weights is not None:
            return Path(self.args.weights)
        from safetensors.torch import save_file

        state = self.backbone.model.state_dict()
        path = self.root / f"{self.args.model}-random.safetensors"
        save_file({key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}, str(path))
        return path

    @cached_property
    def backbone(self) -> Backbone:
        if self.args.weights is not None:
            return create_backbone(self.args.model, weights=self.args.weights, device=self.device)
        torch.manual_seed(0)  # the same random weights, hence the same features, on every run
        return create_backbone(self.args.model, pretrained=False, device=self.device)


# --- stages: each returns table rows (what, wall ms/frame, CPU ms/frame, notes) --------------


def decode_rows(work: Workspace) -> list[tuple[str, ...]]:
    """Reading the clip as an mp4 video and as a JPEG folder (one pass each)."""
    rows = []
    for name, path in (("decode, H.264 mp4", work.video), ("decode, JPEG folder", work.folder)):
        source = open_source(path)
        count, timing = timed(lambda: sum(1 for _ in source))
        note = f"{count} frames of {FRAME_SIZE[1]}x{FRAME_SIZE[0]}"
        rows.append((name, ms(timing.wall / count), ms(timing.cpu / count), note))
    return rows


@dataclass
class Features:
    """Backbone features of the first frames of the clip at one short side."""

    features: list[torch.Tensor]  # [h, w, D] float32 per frame
    timings: list[Timing]  # per frame, after one warm-up call


def extract_features(work: Workspace, short_side: int, count: int) -> Features:
    extractor = FeatureExtractor(work.backbone, short_side=short_side, device=work.device)
    frames = list(looped_frames(count))
    extractor.extract(frames[0])  # warm-up: first-call allocations and kernel selection
    results = [timed(extractor.extract, rgb, device=work.device) for rgb in frames]
    return Features([features for features, _ in results], [timing for _, timing in results])


@dataclass
class Propagation:
    """Both propagations over the same features; timings of the frames with the queue full."""

    fast_probs: list[torch.Tensor] = field(default_factory=list)  # [M, h, w] per propagated frame
    literal_probs: list[torch.Tensor] = field(default_factory=list)
    fast: list[Timing] = field(default_factory=list)
    literal: list[Timing] = field(default_factory=list)


@torch.inference_mode()
def propagate_both(work: Workspace, features: list[torch.Tensor], *, literal: bool) -> Propagation:
    """Steps dinotrack's propagator and (when ``literal``) the reference, frame by frame,
    alternately, so that both see the same machine load. The reference always runs on the CPU."""
    from dinotrack.testing import propagate_literal

    config = work.config
    grid = tuple(features[0].shape[:2])
    first_probs = labels_to_probs(work.mask, work.labels, grid, mode=config.first_mask).to(work.device)
    settings = dict(context=config.context, radius=config.radius, topk=config.topk, temperature=config.temperature)
    propagator = LabelPropagator(**settings, neighbourhood=config.neighbourhood)
    propagator.add_keyframe(features[0], first_probs)
    on_cpu = [frame_features.cpu() for frame_features in features]
    reference = propagate_literal(on_cpu[0], first_probs.cpu(), on_cpu[1:], **settings, shape=config.neighbourhood)
    result = Propagation()
    for index, frame_features in enumerate(features[1:], start=1):
        steady = index > config.context  # the queue holds `context` frames
        probs, timing = timed(propagator.step, frame_features, device=work.device)
        result.fast_probs.append(probs.cpu())
        result.fast += [timing] if steady else []
        if literal:
            probs, timing = timed(next, reference)
            result.literal_probs.append(probs)
            result.literal += [timing] if steady else []
    return result


def propagation_rows(work: Workspace, short_side: int, result: Propagation) -> list[tuple[str, ...]]:
    wall = statistics.median(t.wall for t in result.literal) / statistics.median(t.wall for t in result.fast)
    cpu = statistics.median(t.cpu for t in result.literal) / statistics.median(t.cpu for t in result.fast)
    target_side, target = PROPAGATION_TARGET
    same_device = work.device.type == "cpu"
    verdict = f"; target >= {target:g}x: {'met' if wall >= target else 'MISSED'}"
    verdict = verdict if short_side == target_side and same_device else ""
    queue = f"N={work.config.context} queue full, median of {len(result.fast)} frames"
    rows = [
        ("propagation, fast (LabelPropagator)", *median_ms(result.fast), queue),
        (
            "propagation, literal (dinotrack.testing)" + ("" if same_device else ", on the CPU"),
            *median_ms(result.literal),
            f"{_speedup(wall)} (CPU time {cpu:.2g}x){verdict}",
        ),
    ]
    return rows + agreement_rows(work, result)


def _speedup(factor: float) -> str:
    return f"fast is {factor:.1f}x faster" if factor >= 1 else f"fast is {1 / factor:.1f}x SLOWER"


def agreement_rows(work: Workspace, result: Propagation) -> list[tuple[str, ...]]:
    """How far apart the two propagations' probabilities and full-resolution masks are."""
    differences = [(f - r).abs().max().item() for f, r in zip(result.fast_probs, result.literal_probs)]
    identical, differing, pixels, ious = 0, 0, 0, []
    for fast, literal in zip(result.fast_probs, result.literal_probs):
        fast_ids = probs_to_ids(fast, work.labels, FRAME_SIZE)
        literal_ids = probs_to_ids(literal, work.labels, FRAME_SIZE)
        identical += bool(np.array_equal(fast_ids, literal_ids))
        differing += int((fast_ids != literal_ids).sum())
        pixels += fast_ids.size
        ious += [_iou(fast_ids == label, literal_ids == label) for label in work.labels[1:]]
    frames = len(result.fast_probs)
    return [
        ("fast vs literal: max abs diff of probs", f"{max(differences):.2e}", "", f"over {frames} propagated frames"),
        (
            "fast vs literal: masks",
            f"{identical}/{frames} identical",
            "",
            f"{differing} of {pixels} pixels differ, mean IoU {np.mean(ious):.6f}",
        ),
    ]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def output_rows(work: Workspace, probs: list[torch.Tensor]) -> tuple[list[tuple[str, ...]], list[np.ndarray]]:
    """``probs_to_ids`` and ``write_label_map`` per frame; also returns the label maps."""
    config = work.config
    upsample, write, maps = [], [], []
    out = work.root / "masks"
    out.mkdir(exist_ok=True)
    refined = []
    for index, rgb in zip(range(OUTPUT_FRAMES), looped_frames(OUTPUT_FRAMES)):
        frame_probs = probs[index % len(probs)]
        ids, timing = timed(
            lambda: probs_to_ids(frame_probs, work.labels, FRAME_SIZE, upsample=config.upsample, minmax=config.minmax),
            device=work.device,
        )
        upsample.append(timing)
        refined.append(timed(lambda: probs_to_ids(frame_probs, work.labels, FRAME_SIZE, refine="colour", guide=rgb), device=work.device)[1])
        write.append(timed(write_label_map, out / f"{index:05d}.png", ids)[1])
        maps.append(ids)
    note = f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]}, {len(work.labels)} labels, median of {OUTPUT_FRAMES}"
    rows = [
        ("upsample + argmax (probs_to_ids, paper)", *median_ms(upsample), note),
        ("colour refinement (probs_to_ids, default)", *median_ms(refined), "scores boundary pixels only: cost follows their number"),
        ("PNG write (write_label_map)", *median_ms(write), f"palette PNG, median of {OUTPUT_FRAMES}"),
    ]
    return rows, maps


def overlay_rows(work: Workspace, maps: list[np.ndarray]) -> list[tuple[str, ...]]:
    """Rendering overlays, and encoding them (writer throughput, open and close included;
    CPU time includes the encoder's threads)."""
    frames = list(looped_frames(len(maps)))
    results = [timed(overlay, rgb, ids) for rgb, ids in zip(frames, maps)]

    def encode() -> str:
        with VideoWriter(work.root / "overlay.mp4", FPS, FRAME_SIZE) as writer:
            for picture, _ in results:
                writer.write(picture)
        return writer.codec

    codec, timing = timed(encode)
    count = len(results)
    return [
        ("overlay render (render.overlay)", *median_ms([t for _, t in results]), f"median of {count}"),
        (f"overlay encode ({codec})", ms(timing.wall / count), ms(timing.cpu / count), f"{count} frames, VideoWriter"),
    ]


# --- end to end, in a fresh process ---------------------------------------------------------


CHILD = """
import os, resource, sys
sys.argv[0] = "dinotrack"
try:
    if os.environ["BENCHMARK_TINY"]:
        from dinotrack.testing import register_tiny_backbone
        register_tiny_backbone()
    from dinotrack.cli import main
    main()
finally:
    try:
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    with open(os.environ["BENCHMARK_PEAK"], "w") as peak:
        peak.write(str(kib / 1024))
"""
"""The child process: ``dinotrack`` as its console script runs it, then its peak RSS (MiB) written
to a file: the ru_maxrss that wait4 reports starts from the parent's size at the fork."""


def run_track_process(spec: dict) -> dict:
    """Run ``dinotrack track`` as a user would, in a fresh Python (interpreter start-up
    included): its run.json, plus ``wall`` and ``cpu`` seconds and ``peak_rss_mib`` of
    that process. ``spec["tiny"]`` registers the tiny test backbone first."""
    arguments = [
        "track", spec["source"], "--mask", spec["mask"], "--output", spec["output"], "--model", spec["model"],
        "--weights", spec["weights"], "--device", spec["device"], "--short-side", str(spec["short_side"]),
        "--preset", spec["preset"], "--overwrite",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        peak, errors = Path(folder) / "peak", Path(folder) / "stderr"
        environment = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "BENCHMARK_TINY": "1" if spec["tiny"] else "",
            "BENCHMARK_PEAK": str(peak),
        }
        if spec["threads"] is not None:
            environment["OMP_NUM_THREADS"] = str(spec["threads"])
        with errors.open("w") as stderr:
            wall = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", CHILD, *arguments], env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - wall
        if status != 0:
            sys.exit(f"dinotrack {' '.join(arguments)} failed:\n{errors.read_text()[-4000:]}")
        peak_mib = float(peak.read_text())
    report = json.loads((Path(spec["output"]) / "run.json").read_text())
    return {
        "frames": report["frames_done"],
        "seconds": report["seconds"],
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": peak_mib,
    }


def bare_backbone(work: Workspace, short_side: int) -> Timing:
    """Summed time of the backbone's forward passes alone over the clip's frames, one frame at
    a time on torch's threads (decoding and resizing not counted), under the same autocast
    as :class:`FeatureExtractor`."""
    wall = cpu = 0.0
    for images in _clip_images(work, short_side):
        timing = timed(_forward, work, images, device=work.device)[1]
        wall, cpu = wall + timing.wall, cpu + timing.cpu
    return Timing(wall, cpu)


def bare_backbone_in_parallel(work: Workspace, short_side: int, workers: int) -> Timing:
    """Like :func:`bare_backbone`, with ``workers`` frames at a time on a share of the threads
    each, as :class:`FeatureExtractor` runs them on a CPU: wall and CPU time of the whole clip,
    its frames resized beforehand."""
    clip = list(_clip_images(work, short_side))
    with ThreadShare(workers) as pool:
        return timed(lambda: list(pool.map(lambda images: _forward(work, images), clip)))[1]


def _clip_images(work: Workspace, short_side: int) -> Iterator[torch.Tensor]:
    """The clip's frames as the backbone's input, ``[1, 3, H', W'] float32``."""
    backbone = work.backbone
    grid = FeatureExtractor(backbone, short_side=short_side, device=work.device).grid(FRAME_SIZE)
    for frame in open_source(work.video):
        pixels = torch.from_numpy(frame.rgb[None]).to(work.device)
        yield preprocess(pixels, grid, backbone.patch_size, backbone.mean, backbone.std)


@torch.inference_mode()
def _forward(work: Workspace, images: torch.Tensor) -> torch.Tensor:
    with torch.autocast(work.device.type, dtype=torch.bfloat16, enabled=work.device.type == "cuda"):
        return work.backbone(images)


def end_to_end_rows(work: Workspace, short_side: int) -> list[tuple[str, ...]]:
    spec = {
        "source": str(work.video),
        "mask": str(work.mask_file),
        "output": str(work.root / f"run{short_side}"),
        "model": work.args.model,
        "weights": str(work.weights),
        "device": work.args.device,
        "short_side": short_side,
        "threads": work.args.threads,
        "preset": work.args.preset,
        "tiny": False,
    }
    workers = default_workers(work.device, compile=False)
    runs, bares, parallels = [], [], []
    for _ in range(work.args.repeats):  # alternated, so that all see the same drifts in load
        runs.append(run_track_process(spec))
        bares.append(bare_backbone(work, short_side))
        if workers > 1:
            parallels.append(bare_backbone_in_parallel(work, short_side, workers))
    run = min(runs, key=lambda r: r["wall"])
    bare = min(bares, key=lambda t: t.wall)
    frames, wall = run["frames"], run["wall"]
    ratio = wall / bare.wall
    target_side, target = END_TO_END_TARGET
    verdict = f"; target <= {target:g}: {'met' if ratio <= target else 'MISSED'}" if short_side == target_side else ""
    in_run = run["seconds"]["total"] / bare.wall
    return [
        (
            f"end to end (dinotrack track --preset {work.args.preset})",
            f"{frames / wall:.3f} frames/s",
            f"{run['cpu']:.1f} s",
            f"{frames} frames in {wall:.1f} s, start-up included{_tries([r['wall'] for r in runs])}",
        ),
        (
            "bare backbone forward, same frames",
            f"{frames / bare.wall:.3f} frames/s",
            f"{bare.cpu:.1f} s",
            f"{bare.wall:.1f} s{_tries([t.wall for t in bares])}",
        ),
        ("end to end / bare backbone", f"{ratio:.3f}", f"{run['cpu'] / bare.cpu:.3f}", f"in-run {in_run:.3f}{verdict}"),
        *_parallel_rows(parallels, frames, wall, workers),
        ("stage seconds (run.json)", "", "", ", ".join(f"{k} {v:.1f}" for k, v in run["seconds"].items())),
        ("peak RSS, end to end", f"{run['peak_rss_mib']:.0f} MiB", "", "peak RSS (VmHWM) of the process"),
    ]


def _parallel_rows(parallels: list[Timing], frames: int, wall: float, workers: int) -> list[tuple[str, ...]]:
    """The bare backbone run as dinotrack runs it on a CPU (``workers`` frames at a time), if it does."""
    if not parallels:
        return []
    best = min(parallels, key=lambda t: t.wall)
    return [
        (
            f"bare backbone forward, {workers} frames at a time",
            f"{frames / best.wall:.3f} frames/s",
            f"{best.cpu:.1f} s",
            f"{best.wall:.1f} s{_tries([t.wall for t in parallels])}; as FeatureExtractor runs it here",
        ),
        (f"end to end / bare backbone, {workers} frames at a time", f"{wall / best.wall:.3f}", "", ""),
    ]


def _tries(seconds: list[float]) -> str:
    """``"; best of 3: 80.1, 81.0, 79.5 s"``, or nothing for a single try."""
    return f"; best of {len(seconds)}: {', '.join(f'{value:.1f}' for value in seconds)} s" if len(seconds) > 1 else ""


def memory_table(work: Workspace, counts: list[int]) -> Table:
    """Peak RSS of ``dinotrack track`` with the tiny random backbone on videos of ``counts`` frames."""
    from dinotrack.testing import register_tiny_backbone, write_timm_checkpoint

    register_tiny_backbone()
    weights = write_timm_checkpoint(work.root / "tiny.safetensors")
    table = Table(
        f"Peak RSS of dinotrack track: tiny random backbone, --preset {work.args.preset}, S={work.config.short_side}, "
        f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]} H.264, overlay on",
        ("frames", "peak RSS", "wall s", "notes"),
    )
    peaks = []
    for count in counts:
        spec = {
            "source": str(write_video(work.root / f"memory{count}.mp4", count)),
            "mask": str(work.mask_file),
            "output": str(work.root / f"memory{count}"),
            "model": "tiny",
            "weights": str(weights),
            "device": work.args.device,
            "short_side": work.config.short_side,
            "threads": work.args.threads,
            "preset": work.args.preset,
            "tiny": True,
        }
        run = run_track_process(spec)
        peaks.append(run["peak_rss_mib"])
        peak = f"{run['peak_rss_mib']:.0f} MiB"
        table.add(str(run["frames"]), peak, f"{run['wall']:.1f}", f"fresh process; load after {load_average()}")
    ratio = peaks[-1] / peaks[0]
    verdict = f"target <= {MEMORY_TARGET:g}: {'met' if ratio <= MEMORY_TARGET else 'MISSED'}"
    table.add(f"{counts[-1]} / {counts[0]}", f"{ratio:.3f}", "", verdict)
    return table


# --- overlay modes -------------------------------------------------------------------------


def overlay_modes_table() -> Table:
    """Each overlay painter on one thread: a DAVIS sequence's frames and ground truth at 854x480, the
    prediction its ground truth shifted by ``ERROR_SHIFT`` pixels (misses and wrong pixels on every object).

    A painter's time is the whole picture: ground truth read from PNG, J and F,
    the picture, the caption and the timeline (not the H.264 encoding)."""
    table = Table(f"Overlay modes, one thread; load at start {load_average()}", ("mode", "ms/frame", "CPU ms/frame", "notes"))
    sequences = davis_sequences()
    if not sequences:
        table.add("(skipped)", "", "", f"needs the DAVIS ground truth in {DATA / 'DAVIS'}")
        return table
    gt_folder = DATA / "DAVIS" / "Annotations" / "480p" / sequences[0].name
    frames = [Frame(index, file.stem, cv2.cvtColor(cv2.imread(str(file)), cv2.COLOR_BGR2RGB))
              for index, file in enumerate(sorted(sequences[0].glob("*.jpg"))[:OUTPUT_FRAMES])]
    predictions = [Prediction(np.roll(read_label_map(gt_folder / f"{frame.stem}.png"), ERROR_SHIFT, axis=1), {1: 0.9})
                   for frame in frames]
    truth = GroundTruth(gt_folder, FRAME_SIZE)
    painters: dict[str, Callable[[], Painter]] = {
        "plain": lambda: PlainPainter(FRAME_SIZE, len(frames), truth.objects),
        "evaluated": lambda: EvaluatedPainter(FRAME_SIZE, len(frames), truth),
        "side-by-side": lambda: EvaluatedPainter(FRAME_SIZE, len(frames), truth, side=True),
    }
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        medians = {}
        for mode, make in painters.items():
            painter = make()
            timings = [timed(painter.paint, frame, prediction)[1] for frame, prediction in zip(frames, predictions)]
            medians[mode] = statistics.median(timing.cpu for timing in timings) * 1000
            table.add(f"--overlay {mode}", *median_ms(timings), f"median of {len(frames)} frames of {sequences[0].name}")
    finally:
        cv2.setNumThreads(threads)
    extra = medians["evaluated"] - medians["plain"]
    verdict = "met" if extra <= EVALUATED_TARGET else "MISSED"
    table.add("evaluated - plain", "", f"{extra:.1f}", f"target <= {EVALUATED_TARGET:g} ms (CPU time): {verdict}")
    return table


# --- one table per short side ----------------------------------------------------------------


def setting_table(work: Workspace, short_side: int, decoded: list[tuple[str, ...]]) -> Table:
    only, samples, config = work.args.only, work.args.samples, work.config
    grid = FeatureExtractor(work.backbone, short_side=short_side, device=work.device).grid(FRAME_SIZE)
    weights = "random weights" if work.args.weights is None else "weights file"
    title = (
        f"S={short_side}: {work.args.model} ({weights}), {work.device.type}, grid {grid[0]}x{grid[1]}, "
        f"N={config.context}, r={config.radius:g}, k={config.topk}; load at start {load_average()}"
    )
    table = Table(title, ("stage", "ms/frame", "CPU ms/frame", "notes"))
    table.rows += decoded
    if only & NEEDS_FEATURES:
        features = extract_features(work, short_side, 1 + config.context + samples)
        if "backbone" in only:
            note = f"resize + forward + normalise, median of {len(features.timings)} frames"
            table.add("backbone (FeatureExtractor.extract)", *median_ms(features.timings), note)
        result = propagate_both(work, features.features, literal="propagation" in only)
        if "propagation" in only:
            table.rows += propagation_rows(work, short_side, result)
        if only & {"output", "overlay"}:
            rows, maps = output_rows(work, result.fast_probs)
            table.rows += rows if "output" in only else []
            table.rows += overlay_rows(work, maps) if "overlay" in only else []
    if "end-to-end" in only:
        table.rows += end_to_end_rows(work, short_side)
    table.add("load average at end", load_average(), "", "1, 5, 15 min")
    return table


def comma_list(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", type=comma_list(str), default=list(STAGES), help=f"stages to run, comma-separated: {','.join(STAGES)}"
    )
    parser.add_argument("--short-sides", type=comma_list(int), default=[480, 960], help="short sides S, e.g. 480,960")
    parser.add_argument("--frames", type=int, default=100, help="frames of the end-to-end clip")
    parser.add_argument("--samples", type=int, default=5, help="timed propagation frames after the queue is full")
    parser.add_argument(
        "--repeats", type=int, default=1, help="end-to-end and bare-backbone runs, alternated; the best of each counts"
    )
    parser.add_argument(
        "--memory-frames", type=comma_list(int), default=[150, 1500], help="short,long video lengths for peak RSS"
    )
    parser.add_argument("--model", default="vits16", help="registered backbone name")
    parser.add_argument("--weights", default=None, help="weights file (default: random weights)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--preset", default="default", choices=("default", "paper"), help="preset of the end-to-end and memory runs"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    unknown = set(args.only) - set(STAGES)
    if unknown:
        parser.error(f"--only: unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    if min(args.frames, args.samples, args.repeats, args.threads or 1) < 1 or len(args.memory_frames) != 2:
        parser.error("--frames, --samples, --repeats and --threads must be at least 1; --memory-frames takes 2 lengths")
    args.only = set(args.only)
    return args


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine_table(torch.device(args.device)).print()
    print(f"\nFrames: {source_description()}, {FRAME_SIZE[1]}x{FRAME_SIZE[0]}. CPU time: all threads of the process.")
    with tempfile.TemporaryDirectory(prefix="dinotrack-benchmark-") as folder:
        work = Workspace(Path(folder), args)
        decoded = decode_rows(work) if "decode" in args.only else []
        if args.only - {"memory", "overlay-modes"}:
            for short_side in args.short_sides:
                setting_table(work, short_side, decoded).print()
        if "memory" in args.only:
            memory_table(work, sorted(args.memory_frames)).print()
        if "overlay-modes" in args.only:
            overlay_modes_table().print()


if __name__ == "__main__":
    main()
