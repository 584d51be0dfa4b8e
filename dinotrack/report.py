"""The report page: one self-contained HTML file that shows where tracking failed.

:func:`write_report` reads a folder of results, either one run (the folder
holds ``run.json``) or many (sub-folders that hold ``run.json``: a
``benchmark`` or ``batch`` output), and writes ``report.html``:

- a summary: J&F, J, F with recall and decay over every scored object; the
  model, preset and settings; frames per second; how many runs ended how;
- one table row per run and object, worst first, sortable by any column
  (metric columns only when some run was scored);
- per run: its status and error, its ``overlay.mp4`` (a relative
  ``<video>`` source; a placeholder when there is none), an SVG chart per
  object of J and F (when scored) and the tracking confidence per frame,
  and thumbnails of its worst frames taken from the overlay.

The page needs nothing but itself and the overlay videos beside it: CSS,
JavaScript (column sorting) and charts are inline, thumbnails are data URIs,
and its Content-Security-Policy allows no network and no code but its own
(script and style by SHA-256 hash, media from its own folder, images from
data URIs). Every string that comes from a file or a name is HTML-escaped
(Jinja2 with autoescape; the page's own CSS and script are the only text
inserted unescaped).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import statistics
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup

from dinotrack.evaluation import EvalReport, ObjectResult, Scores, read_json
from dinotrack.files import atomic_write_text
from dinotrack.masks import PALETTE
from dinotrack.records import RUN_FILE, RunRecord
from dinotrack.sources import frame_order
from dinotrack.structs import DinotrackError, UsageError

REPORT_FILE = "report.html"
BATCH_FILE = "batch.json"
METRICS_FILE = "metrics.json"
OVERLAY_FILE = "overlay.mp4"
MASKS_FOLDER = "masks"
WORST_FRAMES = 3
"""Thumbnails per run: its frames with the lowest J&F (or, unscored, the lowest confidence)."""
THUMBNAIL_WIDTH = 320
JPEG_QUALITY = 80
CHART_SIZE = (640, 140)
"""Width and height of a per-object chart, in SVG user units."""
CHART_MARGIN = (34, 8, 10, 20)
"""Left, right, top and bottom margins inside a chart (axis labels)."""


@dataclass(frozen=True)
class Line:
    """One polyline of a chart: SVG ``points`` (numbers only), colour, dash style (a CSS class)."""

    points: str
    colour: str
    style: str


@dataclass(frozen=True)
class Chart:
    """One object's chart: lines of J, F and confidence per frame; ``marks``: x of its low-confidence frames."""

    title: str
    colour: str
    lines: list[Line]
    marks: list[float]
    last_frame: int


@dataclass(frozen=True)
class Thumbnail:
    uri: str
    caption: str


@dataclass(frozen=True)
class Row:
    """One table row: one object of one run (``object_id`` ``None`` for a run that tracked none)."""

    anchor: str
    name: str
    object_id: int | None
    colour: str
    status: str
    scores: Scores | None
    confidence: float | None
    drops: int
    frames: str


@dataclass
class RunView:
    """Everything the page shows of one run."""

    anchor: str
    name: str
    record: RunRecord | None = None
    status: str = "unreadable"
    error: str | None = None
    metrics: list[ObjectResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    video: str | None = None
    charts: list[Chart] = field(default_factory=list)
    thumbnails: list[Thumbnail] = field(default_factory=list)

    @property
    def confidence(self) -> dict[int, list[float | None]]:
        """Each object's recorded confidence per frame (none for records without it)."""
        return {int(key): values for key, values in (self.record.confidence or {}).items()} if self.record else {}

    @property
    def keyframes(self) -> set[int]:
        return set(self.record.keyframes) if self.record is not None else set()

    @property
    def drops(self) -> list[tuple[int, int]]:
        """``(object id, frame index)`` of each low-confidence frame."""
        found = (self.record.low_confidence_frames or []) if self.record is not None else []
        return [(int(drop["object"]), int(drop["index"])) for drop in found]

    @property
    def frames(self) -> str:
        """Frames done, and of how many when known."""
        if self.record is None:
            return ""
        total = f" / {self.record.frames_total}" if self.record.frames_total else ""
        return f"{self.record.frames_done}{total}"


def write_report(directory: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write the report page of the run(s) in ``directory`` to ``output`` (default ``directory/report.html``).

    Returns the page's path. Raises :class:`UsageError` when ``directory``
    holds no run, :class:`DinotrackError` when the page cannot be written.
    """
    directory = Path(directory)
    output = Path(output) if output is not None else directory / REPORT_FILE
    html = render_report(directory, output.parent)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, html)
    except OSError as error:
        raise DinotrackError(
            f"Cannot write the report page {output}: {error.strerror or error}. Free some space or choose a "
            f"folder you can write to, then run `dinotrack report {directory} --output FILE.html`."
        ) from None
    return output


def find_runs(directory: Path) -> list[Path]:
    """The run folders of ``directory``: itself if it holds ``run.json``, else its sub-folders that do (natural order)."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a folder. Give the --output folder of `dinotrack track` or `dinotrack benchmark`.")
    if (directory / RUN_FILE).is_file():
        return [directory]
    names = frame_order(child.name for child in directory.iterdir() if (child / RUN_FILE).is_file())
    return [directory / name for name in names]


def render_report(directory: Path, page_folder: Path) -> str:
    """The page's HTML for the run(s) in ``directory``; links are relative to ``page_folder``."""
    folders = find_runs(directory)
    shared = _shared_metrics(directory) if folders != [directory] else None
    runs = [_run_view(folder, f"run-{number}", shared, page_folder) for number, folder in enumerate(folders, start=1)]
    runs += _jobs_without_runs(directory, {folder.name for folder in folders}, len(runs))
    if not runs:
        raise UsageError(
            f"{directory} holds no dinotrack run: there is no {RUN_FILE} in it, nor in any folder directly inside it. "
            "Give the --output folder of `dinotrack track`, or of `dinotrack benchmark` or `dinotrack batch` "
            "(whose runs are its sub-folders)."
        )
    return _template().render(
        title=directory.resolve().name,
        directory=str(directory.resolve()),
        written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=_summary(runs),
        rows=_rows(runs),
        scored=any(run.metrics for run in runs),
        runs=runs,
        axis=_axis(),
        **_page_code(),
    )


def _jobs_without_runs(directory: Path, names: set[str], numbered: int) -> list[RunView]:
    """The videos a ``batch.json`` lists that left no run (refused before their folder was made), with their error."""
    try:
        videos = json.loads((directory / BATCH_FILE).read_text(encoding="utf-8"))["videos"]
        entries = [(str(video["name"]), str(video["status"]), video.get("error")) for video in videos]
    except (OSError, ValueError, TypeError, KeyError):
        return []
    missing = [(name, status, error) for name, status, error in entries if name not in names]
    return [
        RunView(f"run-{number}", name, status=status, error=str(error) if error is not None else None,
                problems=[f"No run folder: {directory / name} holds no {RUN_FILE}."])
        for number, (name, status, error) in enumerate(missing, start=numbered + 1)
    ]


def _shared_metrics(directory: Path) -> EvalReport | None:
    """A ``benchmark`` output's own metrics.json (runs of older versions have none of their own)."""
    try:
        return read_json(directory / METRICS_FILE) if (directory / METRICS_FILE).is_file() else None
    except UsageError:
        return None


def _run_view(folder: Path, anchor: str, shared: EvalReport | None, page_folder: Path) -> RunView:
    view = RunView(anchor, folder.name)
    try:
        view.record = RunRecord.read(folder)
        view.status, view.error = view.record.status, view.record.error
    except DinotrackError:
        view.problems.append(f"{folder / RUN_FILE} could not be read: it is damaged or not a dinotrack run record.")
    view.metrics = _run_metrics(folder, view, shared)
    stems = frame_order(path.stem for path in (folder / MASKS_FOLDER).glob("*.png"))
    positions = {stem: index for index, stem in enumerate(stems)}
    overlay = folder / OVERLAY_FILE
    if overlay.is_file():
        view.video = urllib.parse.quote(Path(os.path.relpath(overlay, page_folder)).as_posix())
        view.thumbnails = _thumbnails(overlay, _worst_frames(view, positions), stems)
    view.charts = _charts(view, positions, len(stems))
    return view


def _run_metrics(folder: Path, view: RunView, shared: EvalReport | None) -> list[ObjectResult]:
    path = folder / METRICS_FILE
    if path.is_file():
        try:
            return read_json(path).objects
        except UsageError as error:
            view.problems.append(str(error))
            return []
    return [result for result in shared.objects if result.sequence == view.name] if shared is not None else []


def _scored_frames(results: Sequence[ObjectResult], positions: dict[str, int]) -> dict[int, list[float]]:
    """``{frame index: [(J + F) / 2 of each object]}`` over the scored frames found in ``positions``."""
    frames: dict[int, list[float]] = {}
    for result in results:
        for stem, j, f in zip(result.frames, result.j, result.f):
            if stem in positions:
                frames.setdefault(positions[stem], []).append((j + f) / 2)
    return frames


def _worst_frames(view: RunView, positions: dict[str, int]) -> list[tuple[int, str]]:
    """``(frame index, caption)`` of the run's worst frames, in frame order."""
    quality, label = _frame_quality(view, positions)
    worst = sorted(quality, key=lambda index: (quality[index], index))[:WORST_FRAMES]
    return [(index, f"{label} {quality[index]:.3f}") for index in sorted(worst)]


def _frame_quality(view: RunView, positions: dict[str, int]) -> tuple[dict[int, float], str]:
    """``{frame index: quality}`` and its name: mean J&F over the objects when scored, else the lowest
    confidence of any object (keyframes left out)."""
    if view.metrics:
        scored = _scored_frames(view.metrics, positions)
        return {index: float(np.mean(values)) for index, values in scored.items()}, "J&F"
    quality: dict[int, float] = {}
    for values in view.confidence.values():
        for index, value in enumerate(values):
            if value is not None and index not in view.keyframes:
                quality[index] = min(value, quality.get(index, 1.0))
    return quality, "confidence"


def _thumbnails(video: Path, frames: list[tuple[int, str]], stems: list[str]) -> list[Thumbnail]:
    """JPEG data URIs of the given frames of ``video``, decoded in one pass up to the last of them."""
    wanted = dict(frames)
    pictures: dict[int, np.ndarray] = {}
    capture = cv2.VideoCapture(str(video))
    try:
        index = 0
        while len(pictures) < len(wanted) and capture.grab():
            if index in wanted:
                ok, bgr = capture.retrieve()
                if ok:
                    pictures[index] = bgr
            index += 1
    finally:
        capture.release()
    return [
        Thumbnail(_jpeg_uri(picture), f"frame {stems[index] if index < len(stems) else index} · {wanted[index]}")
        for index, picture in sorted(pictures.items())
    ]


def _jpeg_uri(bgr: np.ndarray) -> str:
    height, width = bgr.shape[:2]
    size = (THUMBNAIL_WIDTH, max(1, round(height * THUMBNAIL_WIDTH / width)))
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii") if ok else ""


def _charts(view: RunView, positions: dict[str, int], frames: int) -> list[Chart]:
    """One chart per object: J (solid) and F (dashed) when scored, confidence (dotted) when recorded."""
    confidence = view.confidence
    scored = {result.object_id: result for result in view.metrics}
    announced = view.record.frames_total if view.record is not None else None
    total = max(frames, announced or 0, 2)
    charts = []
    for label in sorted(scored.keys() | confidence.keys()):
        colour = _hex(label)
        lines = []
        if label in scored:
            result = scored[label]
            indices = [positions.get(stem) for stem in result.frames]
            lines.append(Line(_points(indices, result.j, total), colour, "j"))
            lines.append(Line(_points(indices, result.f, total), colour, "f"))
        if label in confidence:
            lines.append(Line(_points(list(range(len(confidence[label]))), confidence[label], total), colour, "confidence"))
        marks = [_chart_x(index, total) for object_id, index in view.drops if object_id == label]
        charts.append(Chart(f"object {label}", colour, lines, marks, total - 1))
    return charts


def _points(indices: Sequence[int | None], values: Sequence[float | None], total: int) -> str:
    """SVG polyline points of ``values`` at frame ``indices`` (frames or values that are ``None`` skipped)."""
    points = [
        f"{_chart_x(index, total):.1f},{_chart_y(value):.1f}"
        for index, value in zip(indices, values)
        if index is not None and value is not None and np.isfinite(value)
    ]
    return " ".join(points)


def _axis() -> dict[str, float]:
    """Where a chart's plot area and its 0, 0.5 and 1 lines are."""
    return {"width": CHART_SIZE[0], "height": CHART_SIZE[1], "left": CHART_MARGIN[0],
            "right": CHART_SIZE[0] - CHART_MARGIN[1], "top": _chart_y(1.0), "middle": _chart_y(0.5), "bottom": _chart_y(0.0)}


def _chart_x(index: int, total: int) -> float:
    left, right = CHART_MARGIN[0], CHART_SIZE[0] - CHART_MARGIN[1]
    return left + (right - left) * index / max(total - 1, 1)


def _chart_y(value: float) -> float:
    top, bottom = CHART_MARGIN[2], CHART_SIZE[1] - CHART_MARGIN[3]
    return bottom - (bottom - top) * min(max(float(value), 0.0), 1.0)


def _hex(label: int) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in PALETTE[label])


def _mean_confidence(values: Sequence[float | None], keyframes: set[int]) -> float | None:
    kept = [value for index, value in enumerate(values) if value is not None and index not in keyframes]
    return float(statistics.fmean(kept)) if kept else None


def _rows(runs: list[RunView]) -> list[Row]:
    """One row per object of every run, worst first (by J&F, else confidence; unscored last)."""
    rows = []
    for run in runs:
        confidence = run.confidence
        scored = {result.object_id: result.scores for result in run.metrics}
        drops = Counter(object_id for object_id, _ in run.drops)
        for label in sorted(scored.keys() | confidence.keys()) or [None]:
            rows.append(Row(
                run.anchor, run.name, label, _hex(label) if label is not None else "", run.status, scored.get(label),
                _mean_confidence(confidence.get(label, []), run.keyframes), drops[label], run.frames,
            ))
    return sorted(rows, key=_badness)


def _badness(row: Row) -> tuple[float, float]:
    inf = float("inf")
    jf = row.scores.jf_mean if row.scores is not None else inf
    return (jf if np.isfinite(jf) else inf, row.confidence if row.confidence is not None else inf)


def _summary(runs: list[RunView]) -> dict[str, object]:
    """The page's summary: global figures, statuses, models, presets, settings, frames per second."""
    records = [run.record for run in runs if run.record is not None]
    objects = [result.scores for run in runs for result in run.metrics]
    seconds = sum(record.seconds.get("total", 0.0) for record in records)
    frames = sum(record.frames_done for record in records)
    return {
        "scores": Scores.average(objects).as_dict() if objects else None,
        "objects": len(objects),
        "statuses": Counter(run.status for run in runs).most_common(),
        "model": _distinct(record.model for record in records),
        "preset": _distinct(record.preset for record in records),
        "settings": _settings(records),
        "frames": frames,
        "fps": f"{frames / seconds:.2f}" if seconds > 0 else "",
    }


def _settings(records: list[RunRecord]) -> list[tuple[str, str]]:
    keys = sorted({key for record in records for key in record.settings})
    return [(key, _distinct(record.settings.get(key) for record in records)) for key in keys]


def _distinct(values: object) -> str:
    """One value, or ``"varies: a, b"``."""
    seen = list(dict.fromkeys(json.dumps(value) if not isinstance(value, str) else value for value in values))
    return seen[0] if len(seen) == 1 else ("varies: " + ", ".join(seen) if seen else "")


def _page_code() -> dict[str, object]:
    """The page's own CSS and script (inserted unescaped) and the policy that allows exactly them."""
    folder = resources.files("dinotrack") / "templates"
    style = (folder / "report.css").read_text(encoding="utf-8")
    script = (folder / "report.js").read_text(encoding="utf-8")
    policy = (
        "default-src 'none'; "
        f"style-src '{_sha256(style)}'; script-src '{_sha256(script)}'; "
        "img-src data:; media-src 'self'; base-uri 'none'; form-action 'none'"
    )
    return {"style": Markup(style), "script": Markup(script), "policy": policy}


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _template() -> Template:
    environment = Environment(
        loader=PackageLoader("dinotrack", "templates"), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    environment.filters["figure"] = _figure
    return environment.get_template("report.html")


def _figure(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if value is not None and np.isfinite(value) else "–"
