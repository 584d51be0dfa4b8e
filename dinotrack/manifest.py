"""Batch jobs: which videos to track, read from a manifest or a DAVIS-layout root.

A manifest is a ``.csv`` file with a header or a ``.jsonl`` file (one JSON
object a line). Its fields are ``source`` and ``mask`` (required), ``gt`` and
``name`` (optional); paths are relative to the manifest's folder, and ``name``
defaults to the source's stem. A DAVIS-layout root gives one job per sequence
of ``ROOT/JPEGImages/480p``, from the first annotation of
``ROOT/Annotations/480p/<seq>``, with that folder as ground truth.

Every name becomes a folder inside the batch's output folder, so names must be
plain folder names that stay inside it and stay distinct on a case-insensitive
file system. Everything is checked here, before any work starts and before
the output folder exists; each problem is one :class:`UsageError` that names
the line and the field.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dinotrack.inputs import folded, path_problem, printable
from dinotrack.structs import UsageError

FIELDS = ("source", "mask", "gt", "name")
REQUIRED = ("source", "mask")
BATCH_RECORD = "batch.json"
RESERVED_NAMES = frozenset(
    {BATCH_RECORD, "global_results.csv", "per-sequence_results.csv", "metrics.json", "metrics.csv", "metrics.png",
     "report.html"}
)
"""Files a batch writes at the top of its output folder: no video may be named like them."""
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class VideoJob:
    """One video of a batch: its frames, its first mask (or keyframe folder), optional ground truth.

    ``name`` is the folder of its results inside the batch's output folder.
    Paths are absolute.
    """

    name: str
    source: Path
    mask: Path
    gt: Path | None = None


@dataclass(frozen=True)
class _Entry:
    """A job and where it was declared (``"jobs.csv, line 3"``), for error messages."""

    origin: str
    job: VideoJob


def read_jobs(path: str | os.PathLike, *, sequences: list[str] | None = None) -> list[VideoJob]:
    """The jobs of a ``.csv``/``.jsonl`` manifest or of a DAVIS-layout root, in their order.

    ``sequences`` keeps only the jobs of these names (in the order given); an
    unknown name is a :class:`UsageError` that lists the known ones.
    """
    path = Path(path)
    entries = _davis_entries(path, sequences) if path.is_dir() else _manifest_entries(path)
    _check_names(entries)
    jobs = [entry.job for entry in entries]
    return jobs if sequences is None else _selected(jobs, sequences, path)


def _selected(jobs: list[VideoJob], names: list[str], where: Path) -> list[VideoJob]:
    by_name = {job.name: job for job in jobs}
    _check_known(list(by_name), names, where)
    return [by_name[name] for name in dict.fromkeys(names)]


def _check_known(known: list[str], names: list[str], where: Path) -> None:
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(
            f"{where} has no video named {', '.join(map(repr, unknown)) or '(no name given)'}. "
            f"Known names: {', '.join(known)}."
        )


# --- manifests ---------------------------------------------------------------------------------------------------


def _manifest_entries(path: Path) -> list[_Entry]:
    readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows}
    problem = path_problem(path)
    if problem is not None:
        raise UsageError(
            f"The batch jobs {printable(path)} {problem}. Give a .csv or .jsonl manifest, or a DAVIS-layout folder."
        )
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UsageError(
            f"{path} is neither a CSV (.csv) nor a JSON Lines (.jsonl) manifest. Give a manifest with the "
            "fields source and mask (gt and name optional), or a DAVIS-layout folder."
        )
    entries = [_entry(path, line, row) for line, row in reader(path, _read_text(path))]
    if not entries:
        raise UsageError(
            f"The manifest {path} lists no video. Add one line per video with its source and mask."
        )
    return entries


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"The manifest {path} is not UTF-8 text (byte {error.start} cannot be decoded). Save it as UTF-8."
        ) from None
    except OSError as error:
        raise UsageError(f"Cannot read the manifest {path} ({error.strerror}).") from None


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    """``(line, {field: value})`` for each row of a CSV manifest, after checking its header."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [column.strip() for column in next(reader, [])]
        _check_header(path, header)
        for row in reader:
            if not any(value.strip() for value in row):
                continue
            if len(row) > len(header):
                raise _line_error(path, reader.line_num, None, f"has {len(row)} values but the header names {len(header)} columns")
            yield reader.line_num, dict(zip(header, [value.strip() for value in row]))
    except csv.Error as error:
        raise _line_error(path, reader.line_num, None, f"is not valid CSV ({error})") from None


def _check_header(path: Path, header: list[str]) -> None:
    if not any(header):
        raise UsageError(
            f"The manifest {path} is empty. Its first line must be a header naming the columns "
            "source and mask (gt and name optional), then one line per video."
        )
    for column in header:
        _check_field_name(path, 1, column)
    for column in REQUIRED:
        if column not in header:
            raise _line_error(path, 1, column, "is missing from the header; the columns source and mask are required")
    duplicated = [column for column in FIELDS if header.count(column) > 1]
    if duplicated:
        raise _line_error(path, 1, duplicated[0], "appears twice in the header")


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    """``(line, {field: value})`` for each non-blank line of a JSON Lines manifest."""
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as error:
            raise _line_error(path, line, None, f"is not valid JSON ({error})") from None
        if not isinstance(row, dict):
            raise _line_error(path, line, None, "is not a JSON object such as {\"source\": ..., \"mask\": ...}")
        for field, value in row.items():
            _check_field_name(path, line, field)
            if value is not None and not isinstance(value, str):
                raise _line_error(path, line, field, f"must be a string (got {json.dumps(value)})")
        yield line, row


def _check_field_name(path: Path, line: int, field: str) -> None:
    if field not in FIELDS:
        raise _line_error(path, line, field, f"is not a manifest field; the fields are {', '.join(FIELDS)}")


def _entry(path: Path, line: int, row: dict[str, str | None]) -> _Entry:
    """The job of one manifest row, its paths resolved against the manifest's folder and checked."""
    values = {field: (row.get(field) or "").strip() or None for field in FIELDS}
    for field in REQUIRED:
        if values[field] is None:
            raise _line_error(path, line, field, "is missing or empty; every video needs a source and a mask")
    base = path.parent
    source = _existing(path, line, "source", base, values["source"], folder_only=False)
    mask = _existing(path, line, "mask", base, values["mask"], folder_only=False)
    gt = _existing(path, line, "gt", base, values["gt"], folder_only=True) if values["gt"] else None
    name = values["name"] if values["name"] is not None else source.stem
    return _Entry(f"{path}, line {line}", VideoJob(name, source, mask, gt))


def _existing(manifest: Path, line: int, field: str, base: Path, value: str, *, folder_only: bool) -> Path:
    """``value`` as an absolute path (relative ones from ``base``): a regular file or a folder (``folder_only``: a folder)."""
    if "\0" in value:
        raise _line_error(manifest, line, field, "holds a NUL byte, which no path can hold")
    path = Path(os.path.abspath(base / value))
    problem = path_problem(path)
    if problem is None and folder_only and not path.is_dir():
        problem = "is not a folder of ground-truth masks"
    if problem is not None:
        where = f"{value!r} ({printable(path)})"
        raise _line_error(manifest, line, field, f"{where} {problem}; paths are relative to the manifest's folder")
    return path


def _line_error(path: Path, line: int, field: str | None, problem: str) -> UsageError:
    where = f"{path}, line {line}" + (f", field {field!r}" if field is not None else "")
    return UsageError(f"{where}: {problem}. Fix the manifest and run again; nothing was tracked.")


# --- DAVIS layout ---------------------------------------------------------------------------------------------------


def _davis_entries(root: Path, sequences: list[str] | None) -> list[_Entry]:
    frames_root, annotations_root = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    for folder in (frames_root, annotations_root):
        if not folder.is_dir():
            raise UsageError(
                f"{root} is a folder but not a DAVIS-layout dataset: {folder} is missing. Give the folder that holds "
                "JPEGImages/480p/<sequence> and Annotations/480p/<sequence>, or a .csv/.jsonl manifest."
            )
    names = sorted(entry.name for entry in frames_root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise UsageError(f"{frames_root} holds no sequence folder. Give a DAVIS-layout dataset with at least one sequence.")
    if sequences is not None:
        _check_known(names, sequences, root)
        names = list(dict.fromkeys(sequences))
    return [_davis_entry(frames_root, annotations_root, name) for name in names]


def _davis_entry(frames_root: Path, annotations_root: Path, name: str) -> _Entry:
    annotations = annotations_root / name
    first = min(annotations.glob("*.png"), default=None) if annotations.is_dir() else None
    if first is None:
        raise UsageError(
            f"Sequence {name!r}: {annotations} holds no PNG annotation to start it from. "
            "Add its first frame's mask there, or leave the sequence out with --sequences."
        )
    source = Path(os.path.abspath(frames_root / name))
    return _Entry(f"sequence folder {source}", VideoJob(name, source, Path(os.path.abspath(first)), Path(os.path.abspath(annotations))))


# --- names ---------------------------------------------------------------------------------------------------------


def _check_names(entries: list[_Entry]) -> None:
    """Each name a safe folder name, and no two alike once case and Unicode form are folded."""
    seen: dict[str, _Entry] = {}
    for entry in entries:
        name = entry.job.name
        problem = _name_problem(name)
        if problem is not None:
            raise UsageError(
                f"{entry.origin}, field 'name': the name {name!r} {problem}. Each name becomes a folder inside the "
                "output folder, so it must be a plain folder name; give this video another name."
            )
        key = folded(name)
        if key in seen:
            first = seen[key]
            alike = "the same name" if first.job.name == name else f"a name that differs only in case ({first.job.name!r})"
            raise UsageError(
                f"{entry.origin}, field 'name': {name!r} has {alike} as {first.origin}, and their results would go to "
                "one folder. Give each video its own name (a name column sets it; the default is the source's stem)."
            )
        seen[key] = entry


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a results folder, or ``None``."""
    checks = (
        (not name, "is empty"),
        ("\0" in name, "holds a NUL byte"),
        ("/" in name or "\\" in name, "holds a path separator (it would leave its folder)"),
        (any(ord(char) < 32 or ord(char) == 127 for char in name), "holds a control character"),
        (name.startswith("."), "starts with a dot ('.', '..' and hidden names are reserved)"),
        (name.casefold() in RESERVED_NAMES, "is the name of a file the batch writes in the output folder"),
        (len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES, f"is longer than {MAX_NAME_BYTES} bytes"),
    )
    return next((problem for failed, problem in checks if failed), None)
