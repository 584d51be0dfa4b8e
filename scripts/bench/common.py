"""What every part of the benchmark shares: tables, timing, the looped DAVIS footage, the workspace.

Frames are the DAVIS sequences of ``../shared/data`` (854x480) played one after
another and looped, with their ground truth; or, where that folder is absent,
the sample clip and its ground truth upscaled to 854x480 (see :class:`Footage`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

from dinotrack import RunOptions, load_backbone
from dinotrack.backbones import Backbone, resolve_device
from dinotrack.features import FeatureExtractor
from dinotrack.masks import read_label_map, write_label_map
from dinotrack.pipeline import make_extractor
from dinotrack.sources import VideoWriter, open_source
from dinotrack.structs import TrackConfig
from dinotrack.testing import write_timm_checkpoint

REPO = Path(__file__).resolve().parents[2]
DAVIS = REPO.parent / "shared" / "data" / "DAVIS"
SAMPLE = REPO / "sample_videos"
FRAME_SIZE = (480, 854)
FPS = 24.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")
Row = tuple[str, ...]
T = TypeVar("T")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, formatted."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class Table:
    """One printed (Markdown) table: a title, a header and rows of text cells.

    Printing adds a line with the load averages when the table was made and when printed.
    """

    title: str
    header: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    load_at_start: str = field(default_factory=load_average)

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
        print(f"\nLoad average (1, 5, 15 min): {self.load_at_start} at start, {load_average()} at end.")
        sys.stdout.flush()


def describe(config: TrackConfig) -> str:
    """The settings a table's figures depend on, for its title."""
    return (
        f"N={config.context}, r={config.radius:g}, k={config.topk}, first mask {config.first_mask}, "
        f"refine {config.refine}, keyframe bound {config.keyframe_bound}"
    )


# --- footage: frames and their ground truth, looped --------------------------------------------


def davis_sequences() -> tuple[str, ...]:
    """The names of the DAVIS sequences of the shared data, sorted; empty when absent."""
    root = DAVIS / "JPEGImages" / "480p"
    return tuple(sorted(path.name for path in root.iterdir() if path.is_dir())) if root.is_dir() else ()


def looped(one_pass: Callable[[], Iterable[T]], count: int) -> Iterator[T]:
    """The first ``count`` items of ``one_pass()`` played again and again."""

    def forever() -> Iterator[T]:
        while True:
            yield from one_pass()

    return itertools.islice(forever(), count)


@dataclass(frozen=True)
class Footage:
    """DAVIS sequences played one after another and looped, with their ground truth;
    without sequences, the sample clip and its ground truth upscaled to 854x480."""

    sequences: tuple[str, ...]

    @property
    def name(self) -> str:
        """For file names."""
        return "+".join(self.sequences) or "sample"

    def first_only(self) -> Footage:
        """The first sequence alone, looped."""
        return Footage(self.sequences[:1])

    def describe(self) -> str:
        if self.sequences:
            return f"DAVIS {', '.join(self.sequences)} looped, with ground truth"
        return "sample clip shapes.mp4 and its ground truth upscaled, looped"

    def frames(self, count: int, size: tuple[int, int] = FRAME_SIZE) -> Iterator[np.ndarray]:
        """``count`` frames ``[H, W, 3] uint8`` RGB of ``size`` ``(H, W)`` (bicubic from 854x480)."""
        return (_resized(rgb, size, cv2.INTER_CUBIC) for rgb in looped(self._frame_pass, count))

    def masks(self, count: int, size: tuple[int, int] = FRAME_SIZE) -> Iterator[np.ndarray]:
        """The ground truth ``[H, W] uint8`` of the frames of :meth:`frames` (nearest from 854x480)."""
        return (_resized(ids, size, cv2.INTER_NEAREST) for ids in looped(self._mask_pass, count))

    def _frame_pass(self) -> Iterator[np.ndarray]:
        if self.sequences:
            for file in self._davis_files("JPEGImages", "*.jpg"):
                yield cv2.cvtColor(cv2.imread(str(file)), cv2.COLOR_BGR2RGB)
            return
        for frame in open_source(SAMPLE / "shapes.mp4"):
            yield cv2.resize(frame.rgb, FRAME_SIZE[::-1], interpolation=cv2.INTER_CUBIC)

    def _mask_pass(self) -> Iterator[np.ndarray]:
        files = self._davis_files("Annotations", "*.png") if self.sequences else sorted((SAMPLE / "shapes_gt").glob("*.png"))
        for file in files:
            yield cv2.resize(read_label_map(file), FRAME_SIZE[::-1], interpolation=cv2.INTER_NEAREST)

    def _davis_files(self, kind: str, pattern: str) -> list[Path]:
        return [file for name in self.sequences for file in sorted((DAVIS / kind / "480p" / name).glob(pattern))]


def _resized(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    return image if image.shape[:2] == size else cv2.resize(image, size[::-1], interpolation=interpolation)


FOOTAGE = Footage(davis_sequences())
"""Every DAVIS sequence of the shared data, or the sample clip: what the parts run on unless they say otherwise."""


def write_video(path: Path, count: int, footage: Footage = FOOTAGE, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """An H.264 (or mp4v) clip of the first ``count`` frames of ``footage`` at ``size`` ``(H, W)``, 24 fps."""
    with VideoWriter(path, FPS, size) as writer:
        for rgb in footage.frames(count, size):
            writer.write(rgb)
    return path


def write_folder(path: Path, count: int, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """A folder of the first ``count`` frames at ``size`` as JPEG (quality 95), named 00000.jpg, ..."""
    path.mkdir(parents=True)
    for index, rgb in enumerate(FOOTAGE.frames(count, size)):
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(path / f"{index:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


# --- timing -----------------------------------------------------------------------------------


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


def tries(seconds: list[float]) -> str:
    """``"; best of 3: 80.1, 81.0, 79.5 s"``, or nothing for a single try."""
    return f"; best of {len(seconds)}: {', '.join(f'{value:.1f}' for value in seconds)} s" if len(seconds) > 1 else ""


def verdict(value: float, target: float, *, at_most: bool) -> str:
    """``"target <= 1.2: met"`` (or ``>=``, or ``MISSED``)."""
    met = value <= target if at_most else value >= target
    return f"target {'<=' if at_most else '>='} {target:g}: {'met' if met else 'MISSED'}"


# --- the machine ------------------------------------------------------------------------------


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
    return table


# --- the workspace: clips, weights, backbone, made once when first needed ----------------------


class Workspace:
    """The command line's settings, and the temporary clips, mask and weights every part shares."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.device = resolve_device(args.device)

    def options(self, short_side: int | None = None, **changes: object) -> RunOptions:
        """The job settings of ``--preset``, ``--model``, ``--device`` at ``short_side``, with ``changes``."""
        options = RunOptions(preset=self.args.preset, short_side=short_side, model=self.args.model, device=self.args.device)
        return options.replace(**changes)

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames of every clip (``--frame-size``)."""
        return self.args.frame_size

    def config(self, short_side: int) -> TrackConfig:
        """The one preset's settings at ``short_side``, as a run derives them."""
        return self.options(short_side).config

    @cached_property
    def mask(self) -> np.ndarray:
        """The first frame's ``[H, W] uint8`` ground truth."""
        return next(FOOTAGE.masks(1, self.frame_size))

    @cached_property
    def mask_file(self) -> Path:
        write_label_map(self.root / "mask.png", self.mask)
        return self.root / "mask.png"

    @property
    def video(self) -> Path:
        """The clip of ``--frames`` frames."""
        return self.clip(self.args.frames)

    def clip(self, count: int, footage: Footage = FOOTAGE) -> Path:
        """An H.264 clip of the first ``count`` frames of ``footage`` (written once)."""
        path = self.root / f"clip{count}-{footage.name}-{self.frame_size[1]}x{self.frame_size[0]}.mp4"
        return path if path.exists() else write_video(path, count, footage, self.frame_size)

    @cached_property
    def folder(self) -> Path:
        return write_folder(self.root / f"clip{self.args.frames}", self.args.frames, self.frame_size)

    @cached_property
    def weights(self) -> Path:
        """``--weights``, or random weights of ``--model`` (dinotrack.testing, seed 0) in a .safetensors file."""
        if self.args.weights is not None:
            return Path(self.args.weights)
        return write_timm_checkpoint(self.root / "random.safetensors", self.args.model)

    @cached_property
    def backbone(self) -> Backbone:
        return load_backbone(self.options(weights=self.weights))

    def extractor(self, short_side: int, workers: int | None = None) -> FeatureExtractor:
        """The feature extractor a run of the clip at ``short_side`` uses (``workers``: its default if ``None``)."""
        return make_extractor(open_source(self.video), self.backbone, self.options(short_side, workers=workers), short_side)
