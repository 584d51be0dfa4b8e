"""Score predicted mask PNGs against DAVIS ground truth, as the DAVIS 2017 toolkit does.

Layouts: ``pred`` and ``gt`` are each either one sequence's folder of PNGs
(``00000.png`` ...) or a root holding one such folder per sequence (the DAVIS
results layout). ``gt`` may also be a DAVIS root containing ``Annotations/480p``.
Frames pair by file name.

Ground truth: indexed (palette) PNGs whose indices are the object ids, with 255
= void, or DAVIS-2016 grayscale masks where 0/255 means background/object 1.
The objects of a sequence are the ids in its first ground-truth frame. Like the
toolkit in its semi-supervised task, void pixels count as background: the
toolkit zeroes them when it reads the annotations, so its void mask is always
empty. The first and last frames are left out unless ``all_frames``.

Scores (see :mod:`dinotrack.metrics`): per object J and F per frame with their
Mean, Recall and Decay; every object of every sequence weighs the same in the
global figures, and J&F-Mean = (J-Mean + F-Mean) / 2.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dinotrack import metrics
from dinotrack.files import atomic_write, atomic_write_text
from dinotrack.inputs import image_size
from dinotrack.masks import check_mask_pixels, object_ids, read_label_map
from dinotrack.structs import DinotrackError, UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dinotrack.sources import FrameSource

FIGURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
VOID_ID = 255
SHOWN_NAMES = 5
PLOT_ROWS = 8
"""Objects plotted one under the other; more go in two columns."""


@dataclass(frozen=True)
class Scores:
    """Mean, recall and decay of J and of F (each a float in [0, 1], decay in [-1, 1])."""

    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2

    @classmethod
    def of_frames(cls, j: np.ndarray, f: np.ndarray) -> "Scores":
        """Statistics of ``[T] float64`` per-frame J and F."""
        return cls(*metrics.statistics(j), *metrics.statistics(f))

    @classmethod
    def average(cls, scores: Sequence["Scores"]) -> "Scores":
        """Field-wise mean over ``scores``, each weighing the same."""
        return cls(*(float(np.mean([getattr(s, f.name) for s in scores])) for f in fields(cls)))

    def as_dict(self) -> dict[str, float]:
        """The figures under the toolkit's column names, J&F-Mean first."""
        values = (self.jf_mean, self.j_mean, self.j_recall, self.j_decay, self.f_mean, self.f_recall, self.f_decay)
        return dict(zip(FIGURES, values))


@dataclass(frozen=True)
class ObjectResult:
    """One object of one sequence: ``j`` and ``f`` are ``[T] float64``, one per frame in ``frames``."""

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray
    scores: Scores

    def as_dict(self) -> dict[str, object]:
        return {
            "sequence": self.sequence,
            "object": self.object_id,
            **self.scores.as_dict(),
            "frames": list(self.frames),
            "J": self.j.tolist(),
            "F": self.f.tolist(),
        }


@dataclass(frozen=True)
class SequenceSummary:
    """Figures of one sequence: the mean over its objects of each object's figures."""

    name: str
    objects: tuple[int, ...]
    frames: int
    scores: Scores


@dataclass
class EvalReport:
    """Results of :func:`evaluate`: one :class:`ObjectResult` per object, plus warnings."""

    objects: list[ObjectResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def scores(self) -> Scores:
        """Global figures, every object of every sequence weighing the same."""
        return Scores.average([o.scores for o in self.objects])

    @property
    def sequences(self) -> list[SequenceSummary]:
        """Per-sequence figures, in evaluation order."""
        grouped: dict[str, list[ObjectResult]] = {}
        for result in self.objects:
            grouped.setdefault(result.sequence, []).append(result)
        return [
            SequenceSummary(
                name, tuple(o.object_id for o in group), len(group[0].frames), Scores.average([o.scores for o in group])
            )
            for name, group in grouped.items()
        ]

    def to_dict(self) -> dict[str, object]:
        """The JSON contract.

        Top level: the seven figures (floats) under the toolkit's names;
        ``"sequences"``: a dict from sequence name to its seven figures plus
        ``"objects"`` (ids) and ``"frames"`` (how many were scored);
        ``"objects"``: a list of per-object dicts with ``"sequence"``,
        ``"object"``, the six J/F figures, ``"frames"`` (names) and the
        per-frame ``"J"`` and ``"F"`` lists; ``"warnings"``: a list of strings.
        """
        return {
            **self.scores.as_dict(),
            "sequences": {
                s.name: {**s.scores.as_dict(), "objects": list(s.objects), "frames": s.frames} for s in self.sequences
            },
            "objects": [o.as_dict() for o in self.objects],
            "warnings": list(self.warnings),
        }


def evaluate(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    *,
    all_frames: bool = False,
    sequences: Sequence[str] | None = None,
    binarize_predictions: bool = False,
    frames: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> EvalReport:
    """Score the predicted masks in ``pred`` against the ground truth in ``gt``.

    With two roots, the sequences are ``sequences`` if given, else every
    folder of ``pred`` that holds PNGs; each must exist on both sides. With a
    root on one side and a sequence folder on the other, the folder's name
    picks the sequence (for a prediction folder, ``sequences[0]`` if given);
    two sequence folders are named ``sequences[0]`` if given, else after the
    ground truth's folder. ``binarize_predictions`` turns every id > 0 into object
    1, to score multi-object predictions against single-object (DAVIS-2016)
    ground truth. Prediction ids that are not objects of the ground truth are
    ignored and reported in ``report.warnings``. ``frames``: score only the
    ground-truth frames of these names (a run over part of a video); the
    first and last of them are left out as usual.

    Raises :class:`UsageError` for missing folders or frames, empty prediction
    folders and frames whose sizes differ.
    """
    pairs = _sequence_folders(Path(pred), Path(gt), sequences)
    report = EvalReport(objects=[])
    for name, pred_dir, gt_dir in pairs:
        report.objects += _evaluate_sequence(
            name, pred_dir, gt_dir, all_frames=all_frames, binarize=binarize_predictions, warnings=report.warnings,
            only=frames,
            exclude=exclude,
        )
    if not report.objects:
        raise UsageError(
            f"No object to score: the first ground-truth frame of every sequence in {gt} is empty. "
            "Check that GT points at the annotations (ids > 0 mark objects)."
        )
    return report


def report_rows(report: EvalReport) -> list[dict[str, object]]:
    """One row per object for a terminal table, worst J&F-Mean first."""
    ranked = sorted(report.objects, key=lambda o: o.scores.jf_mean)
    return [
        {"sequence": o.sequence, "object": o.object_id, **o.scores.as_dict(), "frames": len(o.frames)} for o in ranked
    ]


def write_json(report: EvalReport, path: str | os.PathLike, *, about: dict[str, object] | None = None) -> None:
    """Write :meth:`EvalReport.to_dict` as indented JSON, atomically; ``about`` (e.g. the settings) is added first."""
    _writable(path)
    atomic_write_text(path, json.dumps({**(about or {}), **report.to_dict()}, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> EvalReport:
    """The report that :func:`write_json` wrote to ``path`` (figures recomputed from the per-frame J and F).

    Raises :class:`UsageError` when the file is missing or is not such a report.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        objects = [_object_from_dict(item) for item in data["objects"]]
        return EvalReport(objects, [str(warning) for warning in data.get("warnings", [])])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise UsageError(
            f"{path} is not a readable metrics file ({type(error).__name__}: {error}). "
            "Score the run again with `dinotrack evaluate PRED GT --json FILE`."
        ) from None


def _object_from_dict(item: dict) -> ObjectResult:
    j, f = np.asarray(item["J"], dtype=np.float64), np.asarray(item["F"], dtype=np.float64)
    if j.shape != f.shape or j.shape != (len(item["frames"]),):
        raise ValueError(f"object {item['object']} has {len(item['frames'])} frames but {j.size} J and {f.size} F values")
    return ObjectResult(str(item["sequence"]), int(item["object"]), tuple(map(str, item["frames"])), j, f, Scores.of_frames(j, f))


def write_csv(
    report: EvalReport, path: str | os.PathLike, *, per_sequence: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """Write the toolkit's two tables, atomically; returns both paths.

    ``path`` gets the global table (one row: J&F-Mean, J-Mean, J-Recall,
    J-Decay, F-Mean, F-Recall, F-Decay); ``per_sequence`` (default:
    ``<stem>_per-sequence.csv`` beside it) gets one row per object
    (Sequence, J-Mean, F-Mean), named ``<sequence>_<id>`` as the toolkit
    names them. Floats are written in full precision.
    """
    path = Path(path)
    per_object = Path(per_sequence) if per_sequence is not None else path.with_name(f"{path.stem}_per-sequence.csv")
    global_rows = [list(FIGURES), list(report.scores.as_dict().values())]
    object_rows = [["Sequence", "J-Mean", "F-Mean"]] + [
        [f"{o.sequence}_{o.object_id}", o.scores.j_mean, o.scores.f_mean] for o in report.objects
    ]
    for target, rows in ((path, global_rows), (per_object, object_rows)):
        _writable(target)
        atomic_write_text(target, _csv_text(rows))
    return path, per_object


def write_plot(report: EvalReport, path: str | os.PathLike) -> None:
    """Write one PNG with J and F per frame, one panel per object (1000 px wide, 2000 px past
    :data:`PLOT_ROWS` objects), titled with the sequence and its mean J&F, atomically."""
    figure = _plot_figure(report)
    _writable(path)
    atomic_write(path, lambda target: figure.savefig(target, format="png", dpi=100))


def _writable(path: str | os.PathLike) -> None:
    """Create the folder of an output file the user named."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def _evaluate_sequence(
    name: str, pred_dir: Path, gt_dir: Path, *, all_frames: bool, binarize: bool, warnings: list[str],
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[ObjectResult]:
    frames = [frame for frame in _frame_names(gt_dir) if only is None or frame in only]
    if not frames:
        raise UsageError(
            f"Ground-truth folder {gt_dir} holds no PNG masks. Point GT at the annotations of the sequences."
        )
    objects = object_ids(read_ids(gt_dir / f"{frames[0]}.png", ground_truth=True))
    scored = [frame for frame in (frames if all_frames else frames[1:-1]) if frame not in exclude]
    if not scored:
        raise UsageError(
            f"Sequence {name} has {len(frames)} annotated frame(s): none is left once the first and last "
            "are excluded. Evaluate every frame (all_frames=True, --all-frames) to score it."
        )
    _require_frames(pred_dir, scored, name)
    per_frame: list[dict[int, tuple[float, float]]] = []
    stray: set[int] = set()
    first: tuple[np.ndarray, np.ndarray] | None = None
    for frame in scored:  # one frame at a time: a long 4K sequence never sits in memory
        gt_ids, pred_ids = read_ids(gt_dir / f"{frame}.png", ground_truth=True), read_ids(pred_dir / f"{frame}.png", ground_truth=False)
        if first is None:
            _require_same_sizes(pred_dir, gt_dir, scored, pred_ids, gt_ids)
            first = (gt_ids, pred_ids)
        _require_one_size(gt_dir, scored[0], first[0], frame, gt_ids)
        _require_one_size(pred_dir, scored[0], first[1], frame, pred_ids)
        if binarize:
            pred_ids = (pred_ids > 0).view(np.uint8)
        stray.update(_stray_ids(pred_ids, objects))
        per_frame.append(score_frame(pred_ids, gt_ids, objects))
    warnings += _sequence_warnings(name, objects, sorted(stray))
    return [_object_result(name, object_id, scored, per_frame) for object_id in objects]


def check_ground_truth(gt_dir: Path, source: FrameSource, *, keyframes: Collection[str] = ()) -> list[str]:
    """Check, before a run of ``source``, that the masks in ``gt_dir`` can score it; returns warnings.

    Raises :class:`UsageError` when a mask is not named like a frame (all
    names are checked, sizes read from the file headers), when a mask's size
    differs from the frames', or when every frame to score (the DAVIS protocol:
    all but the first and last) is one of the ``keyframes`` (frame names).
    """
    names = _frame_names(gt_dir)
    if not names:
        raise UsageError(f"--gt {gt_dir} holds no PNG masks. Give the folder of ground-truth PNG masks named like the frames.")
    _require_paired_names(gt_dir, names, source)
    height, width = source.size
    for name in names:
        size = image_size(gt_dir / f"{name}.png")
        if size is not None and size != (width, height):
            raise UsageError(
                f"Ground truth {gt_dir / (name + '.png')} is {size[0]}x{size[1]}, but the frames are {width}x{height}. "
                "Give ground-truth masks at the frames' size."
            )
    warnings = []
    if source.frame_count is not None and len(names) < source.frame_count:
        warnings.append(f"--gt {gt_dir} annotates {len(names)} of the {source.frame_count} frames; only those are scored.")
    scored = names[1:-1]
    if not scored:
        raise UsageError(
            f"--gt {gt_dir} holds {len(names)} masks: none is left to score once the first and last are left out, "
            "as the DAVIS protocol does. Give the ground truth of at least 3 frames, or score the masks afterwards "
            "with `dinotrack evaluate --all-frames`."
        )
    given = [name for name in scored if name in keyframes]
    if given and len(given) == len(scored):
        raise UsageError(
            f"Every frame that --gt {gt_dir} scores is also a keyframe of --mask, so the score would only "
            "compare the given masks with themselves. Give the first frame's mask (or fewer keyframes) as --mask."
        )
    if given:
        warnings.append(
            f"{len(given)} of the {len(scored)} frames to score are keyframes (their masks are given, not tracked): "
            "they are left out of the scores, as DAVIS leaves out the first frame."
        )
    return warnings


def _require_paired_names(gt_dir: Path, names: list[str], source: FrameSource) -> None:
    """Every ground-truth mask must be named like a frame (``00000`` for a video's first frame)."""
    if source.kind == "folder":
        known = {file.stem for file in source.files}
        unpaired = [name for name in names if name not in known]
    else:
        unpaired = [name for name in names if not (name.isdigit() and source.stem(int(name)) == name)]
    if unpaired:
        shown = min(2, len(source.files)) if source.kind == "folder" else 2
        which = (
            f"No ground-truth mask in {gt_dir} is" if len(unpaired) == len(names)
            else f"{len(unpaired)} of the {len(names)} ground-truth masks in {gt_dir} are not"
        )
        raise UsageError(
            f"{which} named like a frame of {source.path} "
            f"({_listed([name + '.png' for name in unpaired])}), while its frames are named "
            f"{', '.join(source.stem(index) for index in range(shown))}, ... Name each mask like its "
            f"frame ({source.stem(0)}.png for the first), or give the ground truth of this video."
        )


def _object_result(sequence: str, object_id: int, frames: list[str], per_frame: list[dict[int, tuple[float, float]]]) -> ObjectResult:
    """One object's result from each frame's :func:`score_frame`."""
    j, f = (np.array([scores[object_id][which] for scores in per_frame], dtype=np.float64) for which in (0, 1))
    return ObjectResult(sequence, object_id, tuple(frames), j, f, Scores.of_frames(j, f))


def score_frame(pred: np.ndarray, gt: np.ndarray, objects: Sequence[int]) -> dict[int, tuple[float, float]]:
    """``{object id: (J, F)}`` of one frame: ``[H, W] uint8`` predicted and ground-truth ids (as :func:`evaluate` scores them)."""
    scores = {}
    for object_id in objects:
        pred_mask, gt_mask = (pred == object_id)[None], (gt == object_id)[None]
        scores[object_id] = (float(metrics.jaccard(pred_mask, gt_mask)[0]), float(metrics.boundary_f(pred_mask, gt_mask)[0]))
    return scores


def _stray_ids(pred_ids: np.ndarray, objects: list[int]) -> list[int]:
    """The ids of ``[H, W] uint8`` predictions that are neither the background nor one of ``objects``."""
    present = np.flatnonzero(np.bincount(pred_ids.ravel(), minlength=256))
    return [int(value) for value in present if value != 0 and value not in objects]


def _sequence_warnings(name: str, objects: list[int], stray: list[int]) -> list[str]:
    warnings = []
    if not objects:
        warnings.append(f"Sequence {name}: its first ground-truth frame has no object, so it was not scored.")
    elif objects != list(range(1, objects[-1] + 1)):
        warnings.append(
            f"Sequence {name}: object ids {_listed(objects)} are not 1..{objects[-1]}; only these were scored "
            "(the DAVIS toolkit would also score each missing id as an empty object)."
        )
    if stray:
        warnings.append(
            f"Sequence {name}: the predictions hold id(s) {_listed(stray)}, which are not objects of "
            f"the ground truth (objects: {_listed(objects) or 'none'}); those pixels were ignored."
        )
    return warnings


def _sequence_folders(pred: Path, gt: Path, sequences: Sequence[str] | None) -> list[tuple[str, Path, Path]]:
    """``(name, prediction folder, ground-truth folder)`` for each sequence to score."""
    for role, folder in (("Prediction", pred), ("Ground-truth", gt)):
        if not folder.is_dir():
            raise UsageError(
                f"{role} folder {folder} does not exist. Give a folder of PNG masks or a root of such folders."
            )
    if (gt / "Annotations" / "480p").is_dir():
        gt = gt / "Annotations" / "480p"
    pred_is_sequence, gt_is_sequence = bool(_frame_names(pred)), bool(_frame_names(gt))
    if not pred_is_sequence and not _sequence_names(pred):
        raise UsageError(
            f"Prediction folder {pred} holds no PNG masks, neither directly nor in sequence folders. "
            "Give the folder the tracker wrote its masks to."
        )
    if pred_is_sequence and gt_is_sequence:
        return [(sequences[0] if sequences else gt.name, pred, gt)]
    if pred_is_sequence:
        name = sequences[0] if sequences else pred.name
        return [(name, pred, _sequence_folder(gt, name, "Ground-truth"))]
    if gt_is_sequence:
        return [(gt.name, _sequence_folder(pred, gt.name, "Prediction"), gt)]
    names = list(sequences) if sequences else _sequence_names(pred)
    return [(n, _sequence_folder(pred, n, "Prediction"), _sequence_folder(gt, n, "Ground-truth")) for n in names]


def _sequence_folder(root: Path, name: str, role: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        known = _sequence_names(root)
        raise UsageError(
            f"{role} root {root} has no sequence folder {name!r} (it has: {_listed(known) or 'none'}). "
            "Name the sequences alike on both sides, or pass the sequence's own folders."
        )
    return folder


def _sequence_names(root: Path) -> list[str]:
    return sorted(child.name for child in root.iterdir() if child.is_dir() and _frame_names(child))


def _frame_names(folder: Path) -> list[str]:
    """Stems of the PNG files in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.png") if p.is_file())


def _require_frames(pred_dir: Path, frames: list[str], sequence: str) -> None:
    missing = [name for name in frames if not (pred_dir / f"{name}.png").is_file()]
    if missing:
        raise UsageError(
            f"Sequence {sequence}: {len(missing)} of {len(frames)} frames to score have no prediction in "
            f"{pred_dir} ({_listed([f'{m}.png' for m in missing])}). Predict every frame the ground truth "
            "annotates, named like the ground-truth PNGs."
        )


def _require_same_sizes(
    pred_dir: Path, gt_dir: Path, frames: list[str], pred_ids: np.ndarray, gt_ids: np.ndarray
) -> None:
    if pred_ids.shape != gt_ids.shape:
        raise UsageError(
            f"Prediction {pred_dir / (frames[0] + '.png')} is {_size(pred_ids)} but its ground truth "
            f"{gt_dir / (frames[0] + '.png')} is {_size(gt_ids)}. Write masks at the frames' original size."
        )


def _require_one_size(folder: Path, first: str, first_ids: np.ndarray, name: str, ids: np.ndarray) -> None:
    """Every mask of a sequence has the size of its first one."""
    if ids.shape != first_ids.shape:
        raise UsageError(
            f"Mask {folder / (name + '.png')} is {_size(ids)} but {folder / (first + '.png')} is "
            f"{_size(first_ids)}. All masks of a sequence must have one size."
        )


def read_ids(path: Path, *, ground_truth: bool) -> np.ndarray:
    """Object ids of one mask PNG as they are scored, ``[H, W] uint8``; void (255) becomes background in ground truth.

    Indexed PNGs give their indices; grayscale PNGs holding only 0 and 255
    are DAVIS-2016 binary masks (255 = object 1); other grayscale values are
    ids. Other image modes are read by :func:`dinotrack.masks.read_label_map`.
    """
    try:
        check_mask_pixels(path, image_size(path))
        with Image.open(path) as image:
            check_mask_pixels(path, image.size)
            if image.mode not in ("P", "L"):
                return read_label_map(path)
            ids = np.asarray(image)
            binary = image.mode == "L" and not any(image.histogram()[1:VOID_ID])
    except (OSError, Image.DecompressionBombError) as error:
        raise UsageError(f"Mask {path} is not a readable PNG ({error}). Give indexed or grayscale PNG masks.") from None
    if binary:
        return (ids > 0).view(np.uint8)
    return np.where(ids == VOID_ID, 0, ids).astype(np.uint8, copy=False) if ground_truth else ids


def _plot_figure(report: EvalReport) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DinotrackError(
            'Plotting needs matplotlib, a dependency of dinotrack that is missing here: pip install matplotlib.'
        ) from None
    objects = report.objects
    columns = 1 if len(objects) <= PLOT_ROWS else 2
    rows = -(-len(objects) // columns)
    figure = Figure(figsize=(10 * columns, 1.2 + 2.4 * rows), layout="constrained")
    sequences = list(dict.fromkeys(result.sequence for result in objects))
    named = sequences[0] if len(sequences) == 1 else f"{len(sequences)} sequences"
    figure.suptitle(f"{named}: J&F-Mean {100 * report.scores.jf_mean:.1f}% over {len(objects)} object(s)", fontsize=13)
    for index, result in enumerate(objects, start=1):
        axes = figure.add_subplot(rows, columns, index)
        axes.plot(_frame_axis(result.frames), result.j, label="J (region)")
        axes.plot(_frame_axis(result.frames), result.f, label="F (boundary)")
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("score (0-1)")
        axes.set_title(f"{result.sequence}, object {result.object_id}: J&F {100 * result.scores.jf_mean:.1f}%", fontsize=11)
        axes.set_xlabel("frame")
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
    return figure


def _frame_axis(frames: Sequence[str]) -> list[int]:
    """Frame numbers from names like ``00042``, else positions."""
    return [int(n) for n in frames] if all(n.isdigit() for n in frames) else list(range(len(frames)))


def _csv_text(rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _listed(items: Sequence[object]) -> str:
    """Up to five items, comma-separated, then how many more."""
    shown = ", ".join(str(item) for item in items[:SHOWN_NAMES])
    return shown + (f" and {len(items) - SHOWN_NAMES} more" if len(items) > SHOWN_NAMES else "")


def _size(ids: np.ndarray) -> str:
    return f"{ids.shape[-1]}x{ids.shape[-2]}"
