"""Batch manifests and DAVIS-layout roots: the jobs they give, and one clear paragraph for every mistake."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import SAMPLE
from dinotrack.manifest import VideoJob, read_jobs
from dinotrack.structs import UsageError

VIDEO, MASK, GT = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png", SAMPLE / "shapes_gt"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A manifest folder holding two clips (symlinks to the sample), their masks and ground truth."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").symlink_to(VIDEO)
        (tmp_path / f"{name}_mask.png").symlink_to(MASK)
    (tmp_path / "gt").symlink_to(GT, target_is_directory=True)
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def jsonl(folder: Path, *rows: dict, name: str = "jobs.jsonl") -> Path:
    return write(folder, name, "".join(json.dumps(row) + "\n" for row in rows))


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(UsageError) as caught:
        read_jobs(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_csv_paths_are_relative_to_the_manifest_and_names_default_to_the_stem(folder: Path):
    manifest = write(folder, "jobs.csv", "source,mask,gt,name\na.mp4,a_mask.png,gt,\nb.mp4,b_mask.png,,clip-b\n")
    assert read_jobs(manifest) == [
        VideoJob("a", folder / "a.mp4", folder / "a_mask.png", folder / "gt"),
        VideoJob("clip-b", folder / "b.mp4", folder / "b_mask.png", None),
    ]


def test_jsonl_gives_the_same_jobs_and_sequences_select_in_order(folder: Path, tmp_path: Path):
    manifest = jsonl(folder, {"source": "a.mp4", "mask": "a_mask.png", "gt": "gt"},
                     {"source": str(folder / "b.mp4"), "mask": "b_mask.png", "gt": None})
    jobs = read_jobs(manifest)
    assert [job.name for job in jobs] == ["a", "b"] and jobs[0].gt == folder / "gt" and jobs[1].gt is None
    assert [job.name for job in read_jobs(manifest, sequences=["b", "a"])] == ["b", "a"]
    message = error_of(manifest, sequences=["c"])
    assert "'c'" in message and "Known names: a, b" in message


@pytest.mark.parametrize(
    ("file", "text", "words"),
    [
        ("jobs.csv", "source,gt\na.mp4,gt\n", ["line 1", "'mask'", "missing from the header"]),
        ("jobs.csv", "source,mask,note\na.mp4,a_mask.png,x\n", ["line 1", "'note'", "not a manifest field"]),
        ("jobs.csv", "source,mask\na.mp4,\n", ["line 2", "'mask'", "missing or empty"]),
        ("jobs.csv", "source,mask\na.mp4,a_mask.png,extra\n", ["line 2", "3 values", "2 columns"]),
        ("jobs.csv", "source,mask\nmissing.mp4,a_mask.png\n", ["line 2", "'source'", "does not exist"]),
        ("jobs.csv", "source,mask\na.mp4,nope.png\n", ["line 2", "'mask'", "does not exist"]),
        ("jobs.csv", "source,mask,gt\na.mp4,a_mask.png,a_mask.png\n", ["line 2", "'gt'", "is not a folder"]),
        ("jobs.csv", "source,mask\na.mp4,a_mask.png\nb.mp4,b_mask.png\na.mp4,b_mask.png\n", ["line 4", "same name", "line 2"]),
        ("jobs.csv", "", ["is empty", "header"]),
        ("jobs.csv", "source,mask\n\n", ["lists no video"]),
        ("jobs.jsonl", "\n\n", ["lists no video"]),
        ("jobs.jsonl", '{"source": "a.mp4"}\n', ["line 1", "'mask'", "missing or empty"]),
        ("jobs.jsonl", '{"source": "a.mp4", "mask": "a_mask.png"}\n{"source": "b.mp4",\n', ["line 2", "not valid JSON"]),
        ("jobs.jsonl", '["a.mp4", "a_mask.png"]\n', ["line 1", "not a JSON object"]),
        ("jobs.jsonl", '{"source": "a.mp4", "mask": 3}\n', ["line 1", "'mask'", "must be a string"]),
        ("jobs.jsonl", '{"source": "a.mp4", "mask": "a_mask.png", "gt": "a_mask.png"}\n', ["line 1", "'gt'", "is not a folder"]),
        ("jobs.txt", "source,mask\na.mp4,a_mask.png\n", ["neither a CSV", "JSON Lines"]),
        ("jobs.json", '[{"source": "a.mp4", "mask": "a_mask.png"}]', ["neither a CSV", "JSON Lines"]),
    ],
)
def test_every_manifest_mistake_names_the_line_and_the_field(folder: Path, file: str, text: str, words: list[str]):
    message = error_of(write(folder, file, text))
    for word in words:
        assert word in message, (word, message)


def test_a_manifest_that_does_not_exist_or_is_not_utf8(folder: Path):
    assert "does not exist" in error_of(folder / "absent.csv")
    (folder / "latin1.csv").write_bytes("source,mask\ncaf\xe9.mp4,a_mask.png\n".encode("latin-1"))
    assert "not UTF-8" in error_of(folder / "latin1.csv")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../escape", "path separator"),
        ("/etc/passwd", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("nul\u0000byte", "NUL byte"),
        ("..", "starts with a dot"),
        (".", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("line\nbreak", "control character"),
        ("batch.json", "file the batch writes"),
        ("Metrics.JSON", "file the batch writes"),
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_names_that_would_leave_their_folder_are_refused_with_the_line(folder: Path, name: str, words: str):
    manifest = jsonl(folder, {"source": "a.mp4", "mask": "a_mask.png"}, {"source": "b.mp4", "mask": "b_mask.png", "name": name})
    message = error_of(manifest)
    assert "line 2" in message and "'name'" in message and words in message, message


def test_names_that_collide_after_case_folding_are_refused(folder: Path):
    manifest = jsonl(folder, {"source": "a.mp4", "mask": "a_mask.png", "name": "Straße"},
                     {"source": "b.mp4", "mask": "b_mask.png", "name": "STRASSE"})
    message = error_of(manifest)
    assert "line 2" in message and "line 1" in message and "differs only in case" in message


def test_fifos_and_link_loops_are_refused_without_being_opened(folder: Path):
    os.mkfifo(folder / "jobs.csv")
    assert "FIFO" in error_of(folder / "jobs.csv")
    os.mkfifo(folder / "pipe.mp4")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    assert "FIFO" in error_of(jsonl(folder, {"source": "pipe.mp4", "mask": "a_mask.png"}))
    message = error_of(jsonl(folder, {"source": "a.mp4", "mask": "loop.png"}))
    assert "line 1" in message and "'mask'" in message and "link loop" in message


def test_a_nul_byte_in_a_path_is_refused(folder: Path):
    message = error_of(jsonl(folder, {"source": "a.mp4\u0000", "mask": "a_mask.png"}))
    assert "line 1" in message and "'source'" in message and "NUL" in message


def test_a_davis_root_gives_every_sequence_from_its_first_annotation(tmp_path: Path):
    root = tmp_path / "DAVIS"
    for sequence in ("dog", "cat"):
        (root / "JPEGImages" / "480p" / sequence).mkdir(parents=True)
        annotations = root / "Annotations" / "480p" / sequence
        annotations.mkdir(parents=True)
        for frame in ("00001", "00000"):
            (annotations / f"{frame}.png").write_bytes(b"")
    jobs = read_jobs(root)
    assert [job.name for job in jobs] == ["cat", "dog"]
    assert jobs[1] == VideoJob(
        "dog", root / "JPEGImages" / "480p" / "dog", root / "Annotations" / "480p" / "dog" / "00000.png",
        root / "Annotations" / "480p" / "dog",
    )
    assert [job.name for job in read_jobs(root, sequences=["dog"])] == ["dog"]
    message = error_of(root, sequences=["dog", "bird"])
    assert "'bird'" in message and "Known names: cat, dog" in message
    (root / "JPEGImages" / "480p" / "fish").mkdir()
    assert "'fish'" in error_of(root) and "no PNG annotation" in error_of(root)
    assert [job.name for job in read_jobs(root, sequences=["cat"])] == ["cat"]
    assert "not a DAVIS-layout dataset" in error_of(tmp_path)
