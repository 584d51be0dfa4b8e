"""scripts/benchmark.py: its in-process parts run end to end on the tiny backbone (no timing is checked).

The end-to-end and memory parts run ``dinotrack track`` in fresh processes,
several seconds each; they are left to the script's own smoke runs.
"""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402
from bench import stages  # noqa: E402

TINY_RUN = [
    "--only", "stages,keyframes", "--model", "dinotrack.testing:TINY", "--short-sides", "32", "--preset", "paper",
    "--frames", "3", "--samples", "1", "--keyframe-frames", "4,8", "--keyframe-every", "2",
]  # fmt: skip


def test_each_table_states_its_preset(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(stages, "OUTPUT_FRAMES", 2)
    benchmark.main(TINY_RUN)
    printed = capsys.readouterr().out
    titles = [line for line in printed.splitlines() if line.startswith("### ")][1:]  # after the machine's
    assert [title.split(" at S=")[0] for title in titles] == ["### Stages", "### Keyframes every 2 frames"]
    assert all("--preset paper" in title for title in titles)
    assert "dinotrack vs literal: masks" in printed
    assert "| 8 / 4 " in printed  # the keyframes' long-to-short ratio


def test_only_takes_parts_or_single_stages():
    args = benchmark.parse_args(["--only", "propagation,memory"])
    assert args.parts == ["stages", "memory"]
    assert args.stages == {"propagation"}
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--only", "highres"])


def test_frame_size_sets_the_clips_frames(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    assert benchmark.parse_args(["--frame-size", "3840x2160"]).frame_size == (2160, 3840)
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--frame-size", "1920"])
    monkeypatch.setattr(stages, "OUTPUT_FRAMES", 2)
    benchmark.main([*TINY_RUN[:1], "decode,output", *TINY_RUN[2:], "--frame-size", "320x176"])
    printed = capsys.readouterr().out
    assert "320x176. CPU time" in printed and "3 frames of 320x176" in printed and "| 320x176, " in printed


def test_cached_part_compares_the_features_run_with_the_literal_algorithm(capsys: pytest.CaptureFixture[str]):
    benchmark.main(["--only", "cached", "--model", "dinotrack.testing:TINY", "--short-sides", "32"])
    printed = capsys.readouterr().out
    assert "dinotrack track --features (fresh process)" in printed and "literal / dinotrack" in printed
    assert "masks identical" in printed
