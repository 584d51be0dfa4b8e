"""The ``dinotrack`` command: declares options, calls :mod:`dinotrack.pipeline`, reports.

Heavy imports (torch, timm, OpenCV) happen inside the commands, so ``--help``
is instant. A :class:`~dinotrack.structs.DinotrackError` becomes one message
and a non-zero exit status; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import logging
import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich import box
from rich.table import Table

from dinotrack import __version__
from dinotrack.memory import return_large_blocks
from dinotrack.structs import OVERLAY_MAX_SIDE, DinotrackError, UsageError

# Idle OpenMP workers (PyTorch's CPU threads) spin for a long while before they
# sleep. dinotrack runs decoding, writing and propagation beside the backbone, so
# spinning workers would take the cores those need; told to sleep sooner, they
# leave them free (none of the imports above loads torch; a value the user set wins).
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
return_large_blocks()  # large frames freed go back to the system, not to a thread's heap

app = typer.Typer(
    help="Follow objects through a video: DINOv3 features + label propagation of a first-frame mask.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(stderr=True)
INTERRUPTED = 130


class Preset(str, Enum):
    default = "default"
    paper = "paper"


class Direction(str, Enum):
    forward = "forward"
    both = "both"


class Export(str, Enum):
    coco = "coco"


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


def _verbose_after_command(value: bool) -> None:
    if value:
        _set_verbose(True)


Verbose = Annotated[
    bool,
    typer.Option("--verbose", "-v", callback=_verbose_after_command, expose_value=False, help="Log debug messages (also FFmpeg's and OpenCV's)."),
]
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
DirectionOpt = Annotated[
    Direction,
    typer.Option(
        "--direction",
        help="Frames between two keyframes: both = tracked from the keyframe before and the one after, the two "
        "fused; forward = from the one before only. Frames before the first keyframe are tracked backward.",
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


ExportOpt = Annotated[
    Optional[Export],
    typer.Option("--export", help="Also write the masks as coco: annotations.coco.json (RLE per object per frame), when the run completes."),
]
LabelsOpt = Annotated[
    Optional[Path],
    typer.Option("--labels", help='JSON file naming the object ids for --export coco, e.g. {"1": "person", "2": "dog"}. Default: object_<id>.'),
]


def _export_options(export: Export | None, labels: Path | None) -> dict[str, Any]:
    """``RunOptions`` fields of ``--export`` and ``--labels`` (the labels file read and checked now)."""
    from dinotrack.coco import read_labels

    return {"export": (export.value,) if export else (), "labels": read_labels(labels) if labels else {}}


RUN_SETTINGS = (
    "short_side", "context", "radius", "topk", "temperature", "keyframe_bound", "model", "weights", "device",
    "batch_size", "workers",
)
"""Options of ``track``, ``batch`` and ``benchmark`` that pass to :class:`RunOptions` under their own name."""


def _run_options(params: Mapping[str, Any]) -> Any:
    """The :class:`RunOptions` of ``track``, ``batch`` or ``benchmark``, from its parsed options (``ctx.params``)."""
    from dinotrack.pipeline import RunOptions

    return RunOptions(
        preset=params["preset_name"].value, compile=params["compile_model"], direction=params["direction"].value,
        overlay=_overlay_choice(params["overlay"], params["no_overlay"]),
        overlay_max_side=_overlay_max_side(params["overlay_max_side"]),
        **{name: params[name] for name in RUN_SETTINGS}, **_export_options(params["export"], params["labels"]),
    )


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
    logger.propagate = False
    _set_verbose(verbose)


def _set_verbose(verbose: bool) -> None:
    """Debug messages, and the video libraries' own log lines, only with ``--verbose``."""
    logging.getLogger("dinotrack").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, quiet in QUIET_VIDEO_LIBRARIES.items():
        if not verbose:
            os.environ.setdefault(name, quiet)
        elif os.environ.get(name) == quiet:
            del os.environ[name]


QUIET_VIDEO_LIBRARIES = {"OPENCV_LOG_LEVEL": "OFF", "OPENCV_FFMPEG_LOGLEVEL": "-8"}  # -8: AV_LOG_QUIET
"""OpenCV's and FFmpeg's own log lines (``moov atom not found``, ``[ WARN:0] cap.cpp``) are silenced unless
``--verbose``: dinotrack says what went wrong in its own words. Read when OpenCV first logs and when its
FFmpeg backend starts, both after the options are parsed (the commands import OpenCV); a value the user set wins."""


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
    """A rich progress bar; yields (update(done, total), restart(description)).

    Until the first frame is done, a status line says that the model loads.
    The bar's frames/s counts the frames done in this process since its first
    frame (a resumed run's earlier frames do not count); the summary's counts
    the whole run, start-up included.
    """
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]:.2f} frames/s"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    ]
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(description, total=None, fps=0.0, start=False)
    starting = console.status(f"{description}: checking the inputs and loading the model ...")
    starting.start()
    first: dict[str, int] = {}
    try:
        def update(done: int, total: int | None) -> None:
            if not progress.live.is_started:  # shown from the first frame on, not before inputs are checked
                starting.stop()
                progress.start()
                progress.start_task(task)
            first.setdefault("done", done)
            elapsed = progress.tasks[task].elapsed or 0.0
            fps = (done - first["done"]) / elapsed if elapsed else 0.0
            progress.update(task, completed=done, total=total, fps=fps)

        def restart(new_description: str) -> None:
            first.clear()
            progress.reset(task, description=new_description, total=None, fps=0.0)

        yield update, restart
    finally:
        starting.stop()
        progress.stop()


@app.command(short_help="Track the objects of keyframe masks through a video.")
def track(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A video file (mp4, avi, mov, mkv, webm) or a folder of frames (jpg/png, sorted by name).")],
    mask: Annotated[Path, typer.Option("--mask", help="One frame's label map (PNG: indexed ids or 0/255 grayscale; the first frame's unless --mask-frame says), a folder of keyframe masks named like the frames, or a COCO instances .json (RLE or polygons) of one or more frames.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for masks/, overlay.mp4, run.json (and metrics with --gt).")],
    mask_frame: Annotated[Optional[str], typer.Option("--mask-frame", help="The frame a single --mask file belongs to: its name or its index from 0. Default: the first frame.")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Track from this frame on (name or index from 0; default the first).")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="Track up to this frame, included (name or index; default the last).")] = None,
    direction: DirectionOpt = Direction.both,
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
    export: ExportOpt = None,
    labels: LabelsOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the results of an earlier run in --output.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --output from its last frame (same options).")] = False,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Track the objects of keyframe masks (on any frames) through a video."""
    with _reported(debug):
        from dinotrack.pipeline import track_video

        if overwrite and resume:
            raise UsageError("--overwrite and --resume contradict each other: choose one.")
        options = _run_options(ctx.params)
        with _stop_on_signals() as stop, _progress("Tracking") as (on_progress, _):
            report = track_video(
                source, mask, output, options, gt=gt, features=features, overwrite=overwrite, resume=resume,
                mask_frame=mask_frame, start=start, end=end, on_progress=on_progress, stop=stop,
            )
        _print_run_summary(report)
        if gt is not None:
            console.print(f"Wrote {output / 'report.html'}")
        if report.status == "interrupted":
            console.print(f"[yellow]Interrupted.[/] To continue, run:\n  {_resume_command(ctx)}", highlight=False, soft_wrap=True)
            raise typer.Exit(INTERRUPTED)


def _resume_command(ctx: typer.Context, *, flag: str | None = "--resume") -> str:
    """The command line that continues this run: the options given, ``flag`` instead of ``--overwrite``."""
    words = ["dinotrack", ctx.info_name or "track"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in ("overwrite", "resume") or value is None or value is False or value == param.default:
            continue
        value = str(getattr(value, "value", value))
        if param.param_type_name == "argument":
            words.append(value)
        else:
            words += [max(param.opts, key=len)] + ([] if value == "True" else [value])
    return shlex.join([*words, *filter(None, [flag])])


def _print_run_summary(report: Any) -> None:
    table = _table(f"dinotrack: {report.status}", ("", ""), left=2, show_header=False)
    table.add_row("output", str(report.output))
    table.add_row("frames", f"{report.frames_done}" + (f" / {report.frames_total}" if report.frames_total else ""))
    table.add_row("keyframes", f"{len(report.record.keyframes)} of {report.frames_total or report.frames_done} (masks given)")
    table.add_row("frames/s overall", f"{report.fps:.2f} (start-up included)")
    for stage, seconds in report.seconds.items():
        table.add_row(f"{stage} (s)", f"{seconds:.2f}")
    if report.metrics is not None:
        figures = report.metrics.scores.as_dict()
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            table.add_row(f"{key} (%)", _percent(figures[key]))
    _stdout().print(table)


@app.command(short_help="Cache every frame's features for `track --features`.")
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
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the feature cache already in --output.")] = False,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Write the dense features of every frame to a cache that `track --features` reuses."""
    with _reported(debug):
        from dinotrack.pipeline import RunOptions, extract_features

        options = RunOptions(
            short_side=short_side, model=model, weights=weights, device=device, batch_size=batch_size,
            workers=workers, compile=compile_model,
        )
        with _stop_on_signals() as stop, _progress("Features") as (on_progress, _):
            done = extract_features(source, output, options, overwrite=overwrite, on_progress=on_progress, stop=stop)
        console.print(f"Wrote the features of {done} frames to {output}")
        if stop.is_set():
            raise typer.Exit(INTERRUPTED)


@app.command(short_help="Score masks against ground truth (DAVIS J and F).")
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Predicted masks: one sequence's PNG folder, or a root with one folder per sequence.")],
    gt: Annotated[Path, typer.Argument(help="Ground truth in the same layout (a DAVIS root or Annotations/480p works).")],
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Write every figure as JSON.")] = None,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="Write the DAVIS toolkit's CSV tables.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of J and F per frame for each object.")] = None,
    all_frames: Annotated[bool, typer.Option("--all-frames", help="Keep the first and last frame (the DAVIS protocol drops them).")] = False,
    debug: Debug = False,
    verbose: Verbose = False,
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
    """One row per object, worst first, in percent with one decimal as the DAVIS papers print them."""
    from dinotrack.evaluation import report_rows

    table = _table("DAVIS J&F in % (worst first)", ("sequence", "obj", "J&F", "J", "F", "J rec", "F rec", "frames"))
    keys = ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall")
    for row in report_rows(report):
        table.add_row(str(row["sequence"]), str(row["object"]), *(_percent(row[key]) for key in keys), str(row["frames"]))
    _stdout().print(table)
    summary = report.scores.as_dict()
    _stdout().print(
        f"J&F-Mean {_percent(summary['J&F-Mean'])}   J-Mean {_percent(summary['J-Mean'])}   "
        f"F-Mean {_percent(summary['F-Mean'])}   (%)"
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _stdout() -> Console:
    return Console()


def _table(title: str | None, columns: tuple[str, ...], *, left: int = 1, show_header: bool = True) -> Table:
    """A table that fits 80 columns: light rules in a terminal, plain aligned text otherwise (logs, pipes).

    The first ``left`` columns are text (left-aligned), the others numbers. A
    cell too long wraps (folds); none is cut short with an ellipsis.
    """
    table = Table(
        title=title, box=box.SIMPLE if _stdout().is_terminal else None, show_header=show_header,
        pad_edge=False, title_justify="left",
    )
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < left else "right", overflow="fold")
    return table


Sequences = Annotated[Optional[str], typer.Option("--sequences", help="Comma-separated sequence names of a DAVIS root (default: all).")]
Address = Annotated[
    Optional[str],
    typer.Option("--address", help="Join this Ray cluster (auto or HOST:PORT, as `ray start --head` prints). Default: a local Ray instance."),
]
NumWorkers = Annotated[Optional[int], typer.Option("--num-workers", min=1, help="Workers, each with its own model. Default: one per GPU, else one per 2 CPU cores.")]
GpusPerWorker = Annotated[Optional[float], typer.Option("--gpus-per-worker", min=0, help="GPUs per worker; 0.5 packs two workers on a GPU.")]
OverwriteRuns = Annotated[bool, typer.Option("--overwrite", help="Track again the videos whose earlier runs in --output used other settings.")]


@app.command(short_help="Track many videos on Ray workers (resumable).")
def batch(
    ctx: typer.Context,
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
    direction: DirectionOpt = Direction.both,
    export: ExportOpt = None,
    labels: LabelsOpt = None,
    address: Address = None,
    num_workers: NumWorkers = None,
    gpus_per_worker: GpusPerWorker = None,
    overwrite: OverwriteRuns = False,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Track many videos at once, on every core, GPU and machine of a Ray cluster (resumable)."""
    with _reported(debug):
        options = _run_options(ctx.params)
        _run_batch(jobs, output, options, sequences=sequences, address=address, num_workers=num_workers,
                   gpus_per_worker=gpus_per_worker, overwrite=overwrite, again=_resume_command(ctx, flag=None))


app.command(
    "benchmark",
    help="Track every sequence of a DAVIS-layout dataset and score it: the same runner as `batch`, given a DAVIS root.",
    short_help="Track and score every sequence of a DAVIS root.",
)(batch)


def _run_batch(jobs_path: Path, output: Path, options: Any, *, sequences: str | None, again: str, **engine: Any) -> None:
    """Read the jobs (every mistake before any work), run them, print the tables, exit 1 or 130 as the batch ended.

    ``again``: the command line that resumes the batch, printed when it is interrupted.
    """
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
        console.print(f"[yellow]Interrupted.[/] To resume the unfinished videos, run:\n  {again}", highlight=False, soft_wrap=True)
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
    title = f"dinotrack batch: {record.status} ({record.engine}, {record.workers} workers, {record.model_loads} model loads)"
    table = _table(title, ("video", "status", "frames", "frames/s", "J&F %"), left=2)
    for video in record.videos:
        frames = f"{video['frames_done']}" + (f"/{video['frames_total']}" if video.get("frames_total") else "")
        status = video["status"] + (" (reused)" if video.get("skipped") else "")
        score = _percent(video["J&F-Mean"]) if "J&F-Mean" in video else ""
        table.add_row(video["name"], status, frames, f"{video.get('fps', 0.0):.2f}", score)
    _stdout().print(table)


@app.command(short_help="Write one HTML page of the runs in a folder.")
def report(
    directory: Annotated[Path, typer.Argument(help="A `track` output (holding run.json) or a `benchmark`/`batch` output (runs in its sub-folders).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The HTML file to write. Default: DIR/report.html.")] = None,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Write one self-contained HTML page of the runs in DIR: scores, charts, overlay videos, worst frames."""
    with _reported(debug):
        from dinotrack.report import write_report

        console.print(f"Wrote {write_report(directory, output)}")


@app.command(short_help="Masks between a PNG folder and a COCO file.")
def convert(
    source: Annotated[Path, typer.Argument(help="A folder of palette PNG masks, or a COCO instances .json file.")],
    destination: Annotated[Path, typer.Argument(help="The COCO .json to write (from a folder), or the new masks folder (from a .json).")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help='Names of the object ids for a COCO file written, e.g. {"1": "person"}.')] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DESTINATION if it exists.")] = False,
    debug: Debug = False,
) -> None:
    """Convert masks between a folder of palette PNGs and a COCO instances file (RLE), either way, exactly."""
    with _reported(debug):
        from dinotrack.coco import convert, read_labels

        written = convert(source, destination, labels=read_labels(labels) if labels else None, overwrite=overwrite)
        console.print(f"Wrote {written} frame(s) to {destination}")


@app.command(short_help="List the backbones and their hub weights.")
def models(
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON (every field, for scripts).")] = False,
) -> None:
    """List the backbones dinotrack knows, with the hub weights each loads."""
    import json

    from dinotrack.backbones import list_backbones

    specs = list_backbones()
    if json_output:
        fields = ("name", "timm_name", "hub_id", "params", "dim", "depth", "patch_size", "meta_file")
        print(json.dumps([{key: getattr(spec, key) for key in fields} for spec in specs], indent=2))
        return
    table = _table("DINOv3 backbones", ("name", "weights (Hugging Face)", "params", "dim"), left=2)
    for spec in specs:
        table.add_row(spec.name, spec.hub_id or "none published", spec.params, str(spec.dim))
    _stdout().print(table)


def main() -> None:
    try:
        app()
    finally:
        # Everything is written and closed by now. Python's last garbage collection
        # would walk every object that torch and timm created at import (about 1 s
        # here); frozen objects are left to the operating system instead.
        gc.freeze()
