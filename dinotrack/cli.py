"""The ``dinotrack`` command: declares options, calls :mod:`dinotrack.pipeline`, reports.

Heavy imports (torch, timm, OpenCV) happen inside the commands, so ``--help``
is instant. A :class:`~dinotrack.structs.DinotrackError` becomes one message
and a non-zero exit status; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dinotrack import __version__
from dinotrack.structs import OVERLAY_MAX_SIDE, DinotrackError, UsageError

# Idle OpenMP workers (PyTorch's CPU threads) spin for a long while before they
# sleep. dinotrack runs decoding, writing and propagation beside the backbone, so
# spinning workers would take the cores those need; told to sleep sooner, they
# leave them free (none of the imports above loads torch; a value the user set wins).
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

app = typer.Typer(
    help="Follow objects through a video: DINOv3 features + label propagation of a first-frame mask.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
INTERRUPTED = 130


class Preset(str, Enum):
    default = "default"
    paper = "paper"


class Overlay(str, Enum):
    auto = "auto"
    plain = "plain"
    evaluated = "evaluated"
    side_by_side = "side-by-side"
    none = "none"


Model = Annotated[str, typer.Option("--model", help="Backbone short name (see `dinotrack models`).")]
Weights = Annotated[
    Optional[Path],
    typer.Option("--weights", help="Local checkpoint: Meta's original .pth or a timm .safetensors/.pth. Default: the timm hub weights."),
]
ShortSide = Annotated[Optional[int], typer.Option("--short-side", help="Short side in pixels fed to the backbone (rounded up to 16). Default 480; the paper uses 960.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the backbone and propagation run: auto, cpu, cuda, cuda:N or mps.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Frames per backbone batch.")]
Workers = Annotated[
    Optional[int],
    typer.Option("--workers", min=1, help="Batches in the backbone at once, each on a share of the CPU threads. Default: 2 on a CPU with 2+ threads, else 1."),
]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the backbone (pays off on a GPU for long videos).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show Python tracebacks on errors.")]
Context = Annotated[Optional[int], typer.Option("--context", help="Past frames kept as context (paper: 7).")]
Radius = Annotated[Optional[float], typer.Option("--radius", help="Neighbourhood radius in patches (paper: 12).")]
TopK = Annotated[Optional[int], typer.Option("--topk", help="Most similar context patches kept per patch (paper: 5).")]
Temperature = Annotated[Optional[float], typer.Option("--temperature", help="Softmax temperature (paper: 0.2).")]
PresetOpt = Annotated[
    Preset, typer.Option("--preset", help="'paper' = exactly the published algorithm; 'default' = dinotrack's measured improvements.")
]
KeyframeBound = Annotated[
    Optional[int],
    typer.Option("--keyframe-bound", help="Later keyframes kept in the context besides the first (default 4)."),
]
OverlayOpt = Annotated[
    Overlay,
    typer.Option(
        "--overlay",
        help="What overlay.mp4 shows: plain (prediction, area and confidence per object), evaluated (missed and "
        "wrong pixels against the ground truth, J and F per frame), side-by-side (prediction | ground truth), "
        "none. auto: evaluated with ground truth, else plain.",
    ),
]
NoOverlay = Annotated[bool, typer.Option("--no-overlay", help="Do not write overlay.mp4 (same as --overlay none).")]
OverlayMaxSide = Annotated[
    int,
    typer.Option(
        "--overlay-max-side",
        help=f"Shrink overlay.mp4 so that its long side is at most N pixels (default {OVERLAY_MAX_SIDE}: 4K "
        "frames are halved); 0: the frame size. Masks always keep the frame size.",
    ),
]


def _overlay_choice(overlay: Overlay, no_overlay: bool) -> str:
    """``--overlay``'s value, ``none`` with ``--no-overlay`` (which contradicts any other explicit choice)."""
    if no_overlay and overlay not in (Overlay.auto, Overlay.none):
        raise UsageError(f"--no-overlay and --overlay {overlay.value} contradict each other: choose one.")
    return Overlay.none.value if no_overlay else overlay.value


def _overlay_max_side(pixels: int) -> int | None:
    """``--overlay-max-side``'s value for :class:`RunOptions` (0: the frame size, ``None``)."""
    return pixels or None


def _version(value: bool) -> None:
    if value:
        print(f"dinotrack {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    logger = logging.getLogger("dinotrack")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@contextmanager
def _reported(debug: bool) -> Iterator[None]:
    """Turn a DinotrackError into one red paragraph and its exit status."""
    try:
        yield
    except DinotrackError as error:
        if debug:
            raise
        console.print(f"[bold red]Error:[/] {error}", highlight=False)
        raise typer.Exit(error.exit_code) from None


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set the yielded event instead of killing the process mid-frame."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        console.print("[yellow]Stopping after the frame in hand (press Ctrl-C again to abort at once)...[/]")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _progress(description: str) -> Iterator[tuple[Callable[[int, "int | None"], None], Callable[[str], None]]]:
    """A rich progress bar; yields (update(done, total), restart(description))."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.2f} frames/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(description, total=None, fps=0.0, start=False)
    try:
        def update(done: int, total: int | None) -> None:
            if not progress.live.is_started:  # shown from the first frame on, not before inputs are checked
                progress.start()
                progress.start_task(task)
            elapsed = progress.tasks[task].elapsed or 0.0
            progress.update(task, completed=done, total=total, fps=done / elapsed if elapsed else 0.0)

        def restart(new_description: str) -> None:
            progress.reset(task, description=new_description, total=None, fps=0.0)

        yield update, restart
    finally:
        progress.stop()


@app.command()
def track(
    source: Annotated[Path, typer.Argument(help="A video file (mp4, avi, mov, mkv, webm) or a folder of frames (jpg/png, sorted by name).")],
    mask: Annotated[Path, typer.Option("--mask", help="First frame's label map (PNG: indexed ids or 0/255 grayscale), or a folder of keyframe masks named like the frames.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for masks/, overlay.mp4, run.json (and metrics with --gt).")],
    model: Model = "vits16",
    weights: Weights = None,
    short_side: ShortSide = None,
    context: Context = None,
    radius: Radius = None,
    topk: TopK = None,
    temperature: Temperature = None,
    keyframe_bound: KeyframeBound = None,
    preset_name: PresetOpt = Preset.default,
    device: DeviceOpt = "auto",
    features: Annotated[Optional[Path], typer.Option("--features", help="Use this feature cache (from `dinotrack features`) instead of running the backbone.")] = None,
    batch_size: BatchSize = 1,
    workers: Workers = None,
    compile_model: Compile = False,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Folder of ground-truth masks: also write metrics.json/csv/png and report.html.")] = None,
    overlay: OverlayOpt = Overlay.auto,
    no_overlay: NoOverlay = False,
    overlay_max_side: OverlayMaxSide = OVERLAY_MAX_SIDE,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the results of an earlier run in --output.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --output from its last frame (same options).")] = False,
    debug: Debug = False,
) -> None:
    """Track the objects of the first frame's mask through a video."""
    with _reported(debug):
        from dinotrack.pipeline import RunOptions, track_video

        if overwrite and resume:
            raise UsageError("--overwrite and --resume contradict each other: choose one.")
        options = RunOptions(
            preset=preset_name.value, short_side=short_side, context=context, radius=radius, topk=topk,
            temperature=temperature, keyframe_bound=keyframe_bound, model=model, weights=weights, device=device,
            batch_size=batch_size, workers=workers, compile=compile_model, overlay=_overlay_choice(overlay, no_overlay),
            overlay_max_side=_overlay_max_side(overlay_max_side),
        )
        with _stop_on_signals() as stop, _progress("Tracking") as (on_progress, _):
            report = track_video(
                source, mask, output, options, gt=gt, features=features, overwrite=overwrite, resume=resume,
                on_progress=on_progress, stop=stop,
            )
        _print_run_summary(report)
        if gt is not None:
            console.print(f"Wrote {output / 'report.html'}")
        if report.status == "interrupted":
            raise typer.Exit(INTERRUPTED)


def _print_run_summary(report: Any) -> None:
    table = Table(title=f"dinotrack: {report.status}", show_header=False)
    table.add_row("output", str(report.output))
    table.add_row("frames", f"{report.frames_done}" + (f" / {report.frames_total}" if report.frames_total else ""))
    table.add_row("frames/s", f"{report.fps:.2f}")
    for stage, seconds in report.seconds.items():
        table.add_row(f"{stage} (s)", f"{seconds:.2f}")
    if report.metrics is not None:
        figures = report.metrics.scores.as_dict()
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            table.add_row(key, f"{figures[key]:.4f}")
    Console().print(table)


@app.command()
def features(
    source: Annotated[Path, typer.Argument(help="A video file or a folder of frames.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for meta.json and one <frame>.npy per frame.")],
    model: Model = "vits16",
    weights: Weights = None,
    short_side: ShortSide = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 1,
    workers: Workers = None,
    compile_model: Compile = False,
    debug: Debug = False,
) -> None:
    """Write the dense features of every frame to a cache that `track --features` reuses."""
    with _reported(debug):
        from dinotrack.pipeline import RunOptions, extract_features

        options = RunOptions(
            short_side=short_side, model=model, weights=weights, device=device, batch_size=batch_size,
            workers=workers, compile=compile_model,
        )
        with _stop_on_signals() as stop, _progress("Features") as (on_progress, _):
            done = extract_features(source, output, options, on_progress=on_progress, stop=stop)
        console.print(f"Wrote the features of {done} frames to {output}")
        if stop.is_set():
            raise typer.Exit(INTERRUPTED)


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Predicted masks: one sequence's PNG folder, or a root with one folder per sequence.")],
    gt: Annotated[Path, typer.Argument(help="Ground truth in the same layout (a DAVIS root or Annotations/480p works).")],
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Write every figure as JSON.")] = None,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write the DAVIS toolkit's CSV tables.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of J and F per frame for each object.")] = None,
    all_frames: Annotated[bool, typer.Option("--all-frames", help="Keep the first and last frame (the DAVIS protocol drops them).")] = False,
    debug: Debug = False,
) -> None:
    """Score predicted masks against ground truth with the DAVIS 2017 toolkit's J and F."""
    with _reported(debug):
        from dinotrack.evaluation import evaluate as run_evaluation
        from dinotrack.evaluation import write_csv, write_json, write_plot

        report = run_evaluation(pred, gt, all_frames=all_frames)
        for warning in report.warnings:
            logging.getLogger("dinotrack").warning("%s", warning)
        _print_eval_table(report)
        for path, write in ((json_file, write_json), (csv_file, write_csv), (plot, write_plot)):
            if path is not None:
                write(report, path)
                console.print(f"Wrote {path}")


def _print_eval_table(report: Any) -> None:
    from dinotrack.evaluation import report_rows

    rows = report_rows(report)
    table = Table(title="DAVIS J&F (worst first)")
    for column in rows[0] if rows else []:
        table.add_column(column, justify="right" if column not in ("sequence",) else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    summary = report.scores.as_dict()
    Console().print(
        f"J&F-Mean {summary['J&F-Mean']:.4f}   J-Mean {summary['J-Mean']:.4f}   F-Mean {summary['F-Mean']:.4f}"
    )


Sequences = Annotated[Optional[str], typer.Option("--sequences", help="Comma-separated sequence names of a DAVIS root (default: all).")]
Address = Annotated[
    Optional[str],
    typer.Option("--address", help="Join this Ray cluster (auto or HOST:PORT, as `ray start --head` prints). Default: a local Ray instance."),
]
NumWorkers = Annotated[Optional[int], typer.Option("--num-workers", min=1, help="Workers, each with its own model. Default: one per GPU, else one per 2 CPU cores.")]
GpusPerWorker = Annotated[Optional[float], typer.Option("--gpus-per-worker", min=0, help="GPUs per worker; 0.5 packs two workers on a GPU.")]
OverwriteRuns = Annotated[bool, typer.Option("--overwrite", help="Track again the videos whose earlier runs in --output used other settings.")]


@app.command()
def batch(
    jobs: Annotated[Path, typer.Argument(help="A manifest (.csv with a header, or .jsonl; fields source, mask, and optionally gt, name) or a DAVIS-layout root.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for one run per video, batch.json and, with ground truth, the dataset's scores.")],
    sequences: Sequences = None,
    model: Model = "vits16",
    weights: Weights = None,
    short_side: ShortSide = None,
    context: Context = None,
    radius: Radius = None,
    topk: TopK = None,
    temperature: Temperature = None,
    keyframe_bound: KeyframeBound = None,
    preset_name: PresetOpt = Preset.default,
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 1,
    workers: Workers = None,
    compile_model: Compile = False,
    overlay: OverlayOpt = Overlay.auto,
    no_overlay: NoOverlay = False,
    overlay_max_side: OverlayMaxSide = OVERLAY_MAX_SIDE,
    address: Address = None,
    num_workers: NumWorkers = None,
    gpus_per_worker: GpusPerWorker = None,
    overwrite: OverwriteRuns = False,
    debug: Debug = False,
) -> None:
    """Track many videos at once, on every core, GPU and machine of a Ray cluster (resumable)."""
    with _reported(debug):
        from dinotrack.pipeline import RunOptions

        options = RunOptions(
            preset=preset_name.value, short_side=short_side, context=context, radius=radius, topk=topk,
            temperature=temperature, keyframe_bound=keyframe_bound, model=model, weights=weights, device=device,
            batch_size=batch_size, workers=workers, compile=compile_model, overlay=_overlay_choice(overlay, no_overlay),
            overlay_max_side=_overlay_max_side(overlay_max_side),
        )
        _run_batch(jobs, output, options, sequences=sequences, address=address, num_workers=num_workers,
                   gpus_per_worker=gpus_per_worker, overwrite=overwrite)


app.command(
    "benchmark",
    help="Track every sequence of a DAVIS-layout dataset and score it: the same runner as `batch`, given a DAVIS root.",
)(batch)


def _run_batch(jobs_path: Path, output: Path, options: Any, *, sequences: str | None, **engine: Any) -> None:
    """Read the jobs (every mistake before any work), run them, print the tables, exit 1 or 130 as the batch ended."""
    from dinotrack.batch import DATASET_FILES, run_batch, write_dataset_scores
    from dinotrack.manifest import BATCH_RECORD, read_jobs

    names = [name.strip() for name in sequences.split(",") if name.strip()] if sequences else None
    jobs = read_jobs(jobs_path, sequences=names)
    with _stop_on_signals() as stop, _batch_progress() as on_event:
        record = run_batch(jobs, output, options, on_event=on_event, stop=stop, **engine)
    _print_batch_table(record)
    report = write_dataset_scores(jobs, output, options)
    if report is not None:
        _print_eval_table(report)
        console.print(f"Wrote {output / DATASET_FILES['global']} and {output / DATASET_FILES['per_sequence']}")
    console.print(f"Wrote {output / BATCH_RECORD}" + (f" and {output / 'report.html'}" if record.videos else ""))
    if record.status == "interrupted":
        console.print("[yellow]Interrupted:[/] run the same command again to resume the unfinished videos.")
        raise typer.Exit(INTERRUPTED)
    if record.failed:
        console.print(f"[bold red]Failed:[/] {', '.join(record.failed)} (see batch.json for each error).", highlight=False)
        raise typer.Exit(1)


@contextmanager
def _batch_progress() -> Iterator[Callable[[str, dict], None]]:
    """One bar over the frames of all videos, with the videos done, running and failed; yields ``on_event``."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.2f} frames/s"),
        TextColumn("{task.fields[videos]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    ]
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task("Batch", total=None, videos="", fps=0.0, start=False)
    first: dict[str, int] = {}

    def on_event(kind: str, payload: dict) -> None:
        if kind == "started":
            progress.start()
            progress.start_task(task)
            progress.update(task, description=f"Batch ({payload['engine']}, {payload['workers']} workers)")
        if kind in ("started", "progress"):
            first.setdefault("frames", payload["frames_done"])  # frames done before this run do not count for speed
            elapsed = progress.tasks[task].elapsed or 0.0
            fps = (payload["frames_done"] - first["frames"]) / elapsed if elapsed else 0.0
            videos = f"{payload.get('videos_done', 0)} done, {len(payload.get('running', {}))} running, {payload.get('videos_failed', 0)} failed"
            progress.update(task, completed=payload["frames_done"], total=payload["frames_total"] or None, videos=videos, fps=fps)
        if kind == "video_finished" and payload.get("status") == "failed":
            progress.console.print(f"[red]{payload['name']} failed:[/] {payload.get('error', '')}", highlight=False)

    try:
        yield on_event
    finally:
        progress.stop()


def _print_batch_table(record: Any) -> None:
    table = Table(title=f"dinotrack batch: {record.status} ({record.engine}, {record.workers} workers, {record.model_loads} model loads)")
    for column in ("video", "status", "frames", "frames/s", "J&F"):
        table.add_column(column, justify="left" if column in ("video", "status") else "right")
    for video in record.videos:
        frames = f"{video['frames_done']}" + (f"/{video['frames_total']}" if video.get("frames_total") else "")
        status = video["status"] + (" (reused)" if video.get("skipped") else "")
        score = f"{100 * video['J&F-Mean']:.1f}" if "J&F-Mean" in video else ""
        table.add_row(video["name"], status, frames, f"{video.get('fps', 0.0):.2f}", score)
    Console().print(table)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="A `track` output (holding run.json) or a `benchmark`/`batch` output (runs in its sub-folders).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The HTML file to write. Default: DIR/report.html.")] = None,
    debug: Debug = False,
) -> None:
    """Write one self-contained HTML page of the runs in DIR: scores, charts, overlay videos, worst frames."""
    with _reported(debug):
        from dinotrack.report import write_report

        console.print(f"Wrote {write_report(directory, output)}")


@app.command()
def models() -> None:
    """List the backbones dinotrack knows."""
    from dinotrack.backbones import list_backbones

    table = Table(title="DINOv3 backbones")
    for column in ("name", "timm name", "params", "dim", "weights"):
        table.add_column(column)
    for spec in list_backbones():
        table.add_row(spec.name, spec.timm_name, spec.params, str(spec.dim), spec.hub_id)
    Console().print(table)


def main() -> None:
    try:
        app()
    finally:
        # Everything is written and closed by now. Python's last garbage collection
        # would walk every object that torch and timm created at import (about 1 s
        # here); frozen objects are left to the operating system instead.
        gc.freeze()
