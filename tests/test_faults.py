"""The machine fails under a run: the disk fills up, the folder turns read-only or vanishes.

Each fault is made real on a small tmpfs (mounting needs root; the tests skip
with the reason otherwise) and triggered after the tenth mask is written.
The run must end with one paragraph and exit 1, keep every written mask
whole, leave no temporary file, and ``--resume`` must then complete with the
masks of an uninterrupted run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE
from dinotrack.cli import app
from dinotrack.masks import read_label_map
from dinotrack.records import RunRecord
from dinotrack.sinks import PngMasks

VIDEO, MASK = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png"
FAULT_AFTER = 10


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own (unmounted afterwards)."""
    point = tmp_path / "disk"
    point.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point))
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here ({error}); mounting needs root")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


class Result:
    """The CLI's exit status and its output with line wrapping undone."""

    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = " ".join(output.split())


def track(output: Path, weights: Path, *extra: str) -> Result:
    args = ["track", str(VIDEO), "--mask", str(MASK), "--output", str(output), "--model", "tiny",
            "--weights", str(weights), "--device", "cpu", "--short-side", "64", *extra]
    result = CliRunner().invoke(app, args)
    return Result(result.exit_code, result.output)


def fault_after(monkeypatch: pytest.MonkeyPatch, frames: int, fault: Callable[[], None]) -> None:
    """Make ``fault`` happen once, right after the ``frames``-th mask file is written."""
    original = PngMasks.write
    written = []

    def write(self: PngMasks, frame, ids) -> None:
        original(self, frame, ids)
        written.append(frame.index)
        if len(written) == frames:
            fault()

    monkeypatch.setattr(PngMasks, "write", write)


def assert_whole_masks(output: Path) -> int:
    masks = sorted((output / "masks").glob("*.png"))
    for file in masks:
        assert read_label_map(file).shape == (240, 426)
    assert not [p for p in output.rglob("*") if p.name.endswith(".part") or ".part." in p.name]
    return len(masks)


@pytest.fixture(scope="module")
def uninterrupted(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    output = tmp_path_factory.mktemp("full") / "run"
    assert track(output, tiny_weights, "--no-overlay").exit_code == 0
    return {f.stem: read_label_map(f) for f in sorted((output / "masks").glob("*.png"))}


def assert_resumes(output: Path, weights: Path, expected: dict[str, np.ndarray]) -> None:
    result = track(output, weights, "--resume")
    assert result.exit_code == 0, result.output
    assert RunRecord.read(output).status == "complete"
    for stem, mask in expected.items():
        assert np.array_equal(read_label_map(output / "masks" / f"{stem}.png"), mask), stem


def test_disk_full_then_freed_and_resumed(small_disk, tiny_weights, uninterrupted, monkeypatch):
    output = small_disk / "run"
    filler = small_disk / "filler"

    def fill() -> None:
        with open(filler, "wb") as stream:
            try:
                while True:
                    stream.write(b"\0" * (1 << 16))
                    stream.flush()
            except OSError:
                pass

    fault_after(monkeypatch, FAULT_AFTER, fill)
    result = track(output, tiny_weights)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "No space left on device" in result.output and "--resume" in result.output
    assert assert_whole_masks(output) >= FAULT_AFTER
    monkeypatch.undo()
    filler.unlink()
    assert_resumes(output, tiny_weights, uninterrupted)
    assert not (output / "state.pt").exists()


def test_folder_turns_read_only(small_disk, tiny_weights, uninterrupted, monkeypatch):
    output = small_disk / "run"
    fault_after(monkeypatch, FAULT_AFTER, lambda: _mount("-o", "remount,ro", str(small_disk)))
    result = track(output, tiny_weights, "--no-overlay")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Read-only file system" in result.output
    assert "could not be updated either" in result.output  # run.json too is on the read-only disk
    assert assert_whole_masks(output) >= FAULT_AFTER
    monkeypatch.undo()
    _mount("-o", "remount,rw", str(small_disk))
    assert_resumes(output, tiny_weights, uninterrupted)


def test_output_folder_deleted_mid_run(tmp_path, tiny_weights, monkeypatch):
    output = tmp_path / "run"
    fault_after(monkeypatch, FAULT_AFTER, lambda: shutil.rmtree(output))
    result = track(output, tiny_weights, "--no-overlay")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No such file or directory" in result.output and "--resume" in result.output
    assert not output.exists() or not list(output.rglob("*.png"))


def test_links_in_the_output_are_never_written_through(tmp_path: Path, tiny_weights: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    output = tmp_path / "run"
    output.mkdir()
    (output / "masks").symlink_to(elsewhere)
    result = track(output, tiny_weights, "--no-overlay", "--overwrite")
    assert result.exit_code == 2 and "symbolic links" in result.output and "masks" in result.output
    assert list(elsewhere.iterdir()) == []


def test_a_planted_temporary_link_is_replaced_not_followed(tmp_path: Path):
    from dinotrack.files import atomic_write_text, partial_path

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    target = tmp_path / "run.json"
    partial_path(target).symlink_to(victim)
    atomic_write_text(target, "{}")
    assert victim.read_text() == "keep" and target.read_text() == "{}" and not target.is_symlink()
