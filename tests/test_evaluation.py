"""evaluate(): parity with the DAVIS toolkit's figures, layouts, objects, errors and writers."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinotrack.evaluation import FIGURES, EvalReport, _plot_figure, evaluate, report_rows, write_csv, write_json, write_plot
from dinotrack.masks import write_label_map
from dinotrack.structs import DinotrackError, UsageError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = (24, 32)  # H, W: tolerance 1 px


def two_objects(frame: int, *, shift: int = 0) -> np.ndarray:
    """Object 1 a fixed square, object 2 a square moving right with the frame."""
    ids = np.zeros(SIZE, dtype=np.uint8)
    ids[2:10, 2:10] = 1
    ids[12:20, 10 + frame + shift : 18 + frame + shift] = 2
    return ids


def write_sequence(folder: Path, masks: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, ids in enumerate(masks):
        write_label_map(folder / f"{index:05d}.png", ids)
    return folder


def write_grayscale(folder: Path, masks: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, mask in enumerate(masks):
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(folder / f"{index:05d}.png")
    return folder


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A DAVIS-style root with one 5-frame, two-object sequence; object 2 predicted 2 px too far right."""
    gt = write_sequence(tmp_path / "DAVIS" / "Annotations" / "480p" / "cars", [two_objects(t) for t in range(5)])
    pred = write_sequence(tmp_path / "results" / "cars", [two_objects(t, shift=2) for t in range(5)])
    return pred.parent, gt.parents[2]


def test_matches_the_toolkit_on_real_davis_sequences() -> None:
    reference_file = DATA / "reference_metrics.json"
    if not reference_file.is_file():
        pytest.skip(f"{reference_file} is absent (it lives beside the project, not in it)")
    reference = json.loads(reference_file.read_text())
    report = evaluate(DATA / "osvos17", DATA / "DAVIS", binarize_predictions=True).to_dict()
    assert sorted(report["sequences"]) == sorted(reference)
    for name, expected in reference.items():
        summary = report["sequences"][name]
        (result,) = [o for o in report["objects"] if o["sequence"] == name]
        assert summary["frames"] == expected["frames_evaluated"]
        for figure in FIGURES:
            assert summary[figure] == pytest.approx(expected[figure], abs=1e-6), (name, figure)
        assert result["J"] == pytest.approx(expected["J_per_frame"], abs=1e-6)
        assert result["F"] == pytest.approx(expected["F_per_frame"], abs=1e-6)


def test_each_object_is_scored_on_the_inner_frames(dataset: tuple[Path, Path]) -> None:
    report = evaluate(*dataset)
    first, second = report.objects
    assert (first.object_id, second.object_id) == (1, 2)
    assert first.frames == ("00001", "00002", "00003")
    assert first.j.tolist() == [1.0, 1.0, 1.0]
    assert second.j.tolist() == [6 / 10] * 3  # 8x8 squares, 2 columns apart
    # Boundaries: 32-pixel rings 2 columns apart; 8 + 8 along the shared rows and 2 at their ends match.
    assert second.f.tolist() == [18 / 32] * 3
    assert report.scores.j_mean == pytest.approx((1 + 0.6) / 2)
    assert report.scores.jf_mean == pytest.approx((report.scores.j_mean + report.scores.f_mean) / 2)
    assert report.warnings == []


def test_all_frames_keeps_first_and_last(dataset: tuple[Path, Path]) -> None:
    assert len(evaluate(*dataset, all_frames=True).objects[0].frames) == 5


SEQUENCE_GT = "DAVIS/Annotations/480p/cars"


@pytest.mark.parametrize("pred_part, gt_part", [("cars", SEQUENCE_GT), ("cars", "DAVIS"), ("", SEQUENCE_GT)])
def test_sequence_folders_and_roots_pair_up(dataset: tuple[Path, Path], pred_part: str, gt_part: str) -> None:
    pred_root, davis = dataset
    report = evaluate(pred_root / pred_part, davis.parent / gt_part)
    assert [s.name for s in report.sequences] == ["cars"]
    assert report.scores == evaluate(*dataset).scores


def test_prediction_folder_named_otherwise_takes_the_given_sequence(dataset: tuple[Path, Path]) -> None:
    pred_root, davis = dataset
    masks = pred_root.parent / "run" / "masks"
    pred_root.rename(masks.parent)
    (masks.parent / "cars").rename(masks)
    with pytest.raises(UsageError, match="no sequence folder 'masks'"):
        evaluate(masks, davis)
    assert [s.name for s in evaluate(masks, davis, sequences=["cars"]).sequences] == ["cars"]


def test_void_counts_as_background_like_the_toolkit(tmp_path: Path) -> None:
    gt_ids, pred_ids = np.zeros(SIZE, np.uint8), np.zeros(SIZE, np.uint8)
    gt_ids[4:12, 4:12], gt_ids[4:12, 12:16] = 1, 255  # 64 object pixels, 32 void beside them
    pred_ids[4:12, 4:16] = 1
    gt = write_sequence(tmp_path / "gt" / "s", [gt_ids] * 3)
    pred = write_sequence(tmp_path / "pred" / "s", [pred_ids] * 3)
    (result,) = evaluate(pred, gt).objects
    assert (result.object_id, result.j.tolist()) == (1, [64 / 96])


def test_grayscale_ground_truth_is_one_object(tmp_path: Path) -> None:
    masks = [two_objects(t) > 0 for t in range(4)]
    gt = write_grayscale(tmp_path / "gt" / "s", masks)
    pred = write_sequence(tmp_path / "pred" / "s", [m.astype(np.uint8) for m in masks])
    report = evaluate(pred, gt)
    assert [o.object_id for o in report.objects] == [1]
    assert report.scores.j_mean == 1.0


def test_extra_prediction_ids_are_ignored_with_a_warning(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    masks = [two_objects(t) for t in range(5)]
    for ids in masks:
        ids[21:23, 0:4] = 7
    pred = write_sequence(tmp_path / "extra" / "cars", masks)
    report = evaluate(pred, dataset[1])
    assert report.scores.j_mean == 1.0
    assert len(report.warnings) == 1 and "id(s) 7" in report.warnings[0]


def test_binarized_predictions_score_against_single_object_truth(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    gt = write_grayscale(tmp_path / "gt16" / "cars", [two_objects(t) > 0 for t in range(5)])
    report = evaluate(dataset[0] / "cars", gt, binarize_predictions=True)
    assert report.warnings == []
    assert report.objects[0].j.tolist() == [(64 + 48) / (64 + 80)] * 3


def test_missing_prediction_frames_are_named(dataset: tuple[Path, Path]) -> None:
    pred_root, gt = dataset
    (pred_root / "cars" / "00002.png").unlink()
    with pytest.raises(UsageError, match=r"1 of 3 frames .*00002\.png"):
        evaluate(pred_root, gt)


def test_size_mismatch_names_frame_and_sizes(dataset: tuple[Path, Path]) -> None:
    pred_root, gt = dataset
    for index in range(5):
        write_label_map(pred_root / "cars" / f"{index:05d}.png", np.zeros((24, 30), np.uint8))
    with pytest.raises(UsageError, match=r"00001\.png is 30x24 .* is 32x24"):
        evaluate(pred_root, gt)


def test_a_mask_of_another_size_inside_a_sequence_is_named(dataset: tuple[Path, Path]) -> None:
    pred_root, gt = dataset
    write_label_map(pred_root / "cars" / "00003.png", np.zeros((24, 30), np.uint8))
    with pytest.raises(UsageError, match=r"00003\.png is 30x24 but .*00001\.png is 32x24\. All masks of a sequence"):
        evaluate(pred_root, gt)


def test_scoring_holds_a_few_frames_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long 4K sequence would not fit in memory as a stack: frames are read, scored and dropped one by one."""
    import weakref

    from dinotrack import evaluation

    masks = [two_objects(t % 10) for t in range(30)]
    gt = write_sequence(tmp_path / "gt" / "cars", masks)
    pred = write_sequence(tmp_path / "pred" / "cars", masks)
    alive, most = set(), [0]
    read = evaluation.read_ids

    def counted(path: Path, *, ground_truth: bool) -> np.ndarray:
        ids = read(path, ground_truth=ground_truth)
        alive.add(id(ids))
        weakref.finalize(ids, alive.discard, id(ids))
        most[0] = max(most[0], len(alive))
        return ids

    monkeypatch.setattr(evaluation, "read_ids", counted)
    report = evaluate(pred.parent, gt.parent)
    assert report.objects[0].j.tolist() == [1.0] * 28
    assert most[0] <= 6  # the first frame's pair (its sizes), the pair being scored, the one before it


def test_empty_prediction_folder_is_refused(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no PNG masks"):
        evaluate(tmp_path / "empty", dataset[1])


def test_missing_folder_is_refused(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        evaluate(tmp_path / "nowhere", dataset[1])


def test_unknown_sequence_is_refused(dataset: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError, match="no sequence folder 'boats'"):
        evaluate(*dataset, sequences=["boats"])


def test_json_and_csv_are_written_and_parse(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    report = evaluate(*dataset)
    write_json(report, tmp_path / "out" / "scores.json")
    loaded = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert {*FIGURES, "sequences", "objects", "warnings"} <= loaded.keys()
    assert loaded["J-Mean"] == report.scores.j_mean
    assert loaded["objects"][1]["object"] == 2 and len(loaded["objects"][1]["J"]) == 3
    global_csv, per_object_csv = write_csv(report, tmp_path / "out" / "scores.csv")
    assert per_object_csv.name == "scores_per-sequence.csv"
    (row,) = csv.DictReader(global_csv.open())
    assert float(row["J&F-Mean"]) == report.scores.jf_mean
    names = [r["Sequence"] for r in csv.DictReader(per_object_csv.open())]
    assert names == ["cars_1", "cars_2"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["scores.csv", "scores.json", "scores_per-sequence.csv"]  # no temporary files left


def test_rows_list_the_worst_object_first(dataset: tuple[Path, Path]) -> None:
    rows = report_rows(evaluate(*dataset))
    assert [r["object"] for r in rows] == [2, 1]
    assert rows[0]["J&F-Mean"] < rows[1]["J&F-Mean"]


def test_plot_is_a_legible_png(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    report = evaluate(*dataset)
    write_plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(tmp_path / "plot.png") as image:
        assert image.width >= 800
    figure = _plot_figure(report)
    assert len(figure.axes) == 2  # one panel per object
    assert figure.get_suptitle().startswith(f"cars: J&F-Mean {100 * report.scores.jf_mean:.1f}%")
    assert all(axes.get_ylabel() and axes.get_title().startswith("cars, object") for axes in figure.axes)


def test_plot_without_matplotlib_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(DinotrackError, match=r"pip install matplotlib"):
        write_plot(EvalReport(objects=[]), tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()
