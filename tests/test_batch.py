"""The batch runner: Ray workers on a two-node cluster, faults, stop and rerun, and the in-process fallback.

Ray stays on the loopback: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before
any Ray process starts, no dashboard runs, and every test shuts down the
cluster it started (never `ray stop`, which would end every Ray process on
the machine).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray starts: Ray then binds 127.0.0.1

from conftest import ROOT, SAMPLE  # noqa: E402
from dinotrack.batch import _cpu_layout, _gpus_per_worker, run_batch, write_dataset_scores  # noqa: E402
from dinotrack.manifest import VideoJob, read_jobs  # noqa: E402
from dinotrack.masks import read_label_map  # noqa: E402
from dinotrack.pipeline import RunOptions, track_video  # noqa: E402
from dinotrack.records import RunRecord  # noqa: E402
from dinotrack.structs import UsageError  # noqa: E402
from dinotrack.testing import TINY  # noqa: E402

VIDEO, MASK = SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png"
SMALL_STORE = 80 * 2**20  # bytes of object store per node: the batch passes only small records


# --- inputs and references -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def options(tiny_weights: Path) -> RunOptions:
    """The tiny backbone by value, so that Ray workers need no registration."""
    return RunOptions(model=TINY, weights=tiny_weights, device="cpu", short_side=64, overlay="none")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VideoJob]:
    """The sample video (60 frames) and two frame folders of its first 12 and 8 frames, all from its mask."""
    folder = tmp_path_factory.mktemp("clips")
    jobs = {"shapes": VideoJob("shapes", VIDEO, MASK)}
    for name, frames in (("twelve", 12), ("eight", 8)):
        write_frames(folder / name, frames)
        jobs[name] = VideoJob(name, folder / name, MASK)
    return jobs


def write_frames(folder: Path, count: int) -> None:
    folder.mkdir()
    capture = cv2.VideoCapture(str(VIDEO))
    for index in range(count):
        ok, bgr = capture.read()
        assert ok
        cv2.imwrite(str(folder / f"{index:05d}.png"), bgr)
    capture.release()


@pytest.fixture(scope="module")
def reference(options: RunOptions, tmp_path_factory: pytest.TempPathFactory) -> Callable[[VideoJob], dict]:
    """``reference(job)``: the masks of a plain sequential ``track_video`` of the job (computed once)."""
    folder, cache = tmp_path_factory.mktemp("sequential"), {}

    def masks(job: VideoJob) -> dict[str, np.ndarray]:
        key = (job.source, job.mask)
        if key not in cache:
            output = folder / f"run{len(cache)}"
            track_video(job.source, job.mask, output, options)
            cache[key] = masks_of(output)
        return cache[key]

    return masks


def masks_of(run: Path) -> dict[str, np.ndarray]:
    return {file.stem: read_label_map(file) for file in sorted((run / "masks").glob("*.png"))}


def assert_same_masks(output: Path, jobs: list[VideoJob], reference: Callable[[VideoJob], dict]) -> None:
    for job in jobs:
        expected, got = reference(job), masks_of(output / job.name)
        assert got.keys() == expected.keys(), job.name
        for stem in expected:
            assert np.array_equal(got[stem], expected[stem]), (job.name, stem)


def batch_json(output: Path) -> dict:
    return json.loads((output / "batch.json").read_text())


class Events:
    """Collects ``on_event`` calls; ``then(kind, test, action)`` runs ``action(payload)`` once when ``test(payload)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []
        self.triggers: list[list] = []

    def __call__(self, kind: str, payload: dict) -> None:
        self.seen.append((kind, payload))
        for trigger in self.triggers:
            if not trigger[3] and trigger[0] == kind and trigger[1](payload):
                trigger[3] = True
                trigger[2](payload)

    def then(self, kind: str, test: Callable[[dict], bool], action: Callable[[dict], object]) -> None:
        self.triggers.append([kind, test, action, False])

    def of(self, kind: str) -> list[dict]:
        return [payload for seen, payload in self.seen if seen == kind]


# --- Ray ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A two-node Ray cluster on 127.0.0.1 (one CPU each); yields its address."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    environment = pytest.MonkeyPatch()  # the nodes' workers import this checkout's dinotrack
    environment.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    started = None
    try:
        started = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": SMALL_STORE},
        )
        started.add_node(num_cpus=1, object_store_memory=SMALL_STORE)
        started.wait_for_nodes()
        yield started.address
    finally:
        if started is not None:
            started.shutdown()
        environment.undo()


def test_two_nodes_track_a_manifest_with_the_masks_of_sequential_runs(cluster, options, clips, reference, davis, tmp_path):
    data = tmp_path / "data"
    lines = ["source,mask,gt", f"{VIDEO},{MASK},"]
    for sequence in ("blackswan", "dog"):
        frames, annotations = data / "frames" / sequence, data / "gt" / sequence
        for source, target, suffix in ((davis / "JPEGImages" / "480p", frames, "jpg"), (davis / "Annotations" / "480p", annotations, "png")):
            target.mkdir(parents=True)
            for index in range(8):
                shutil.copy(source / sequence / f"{index:05d}.{suffix}", target)
        lines.append(f"frames/{sequence},gt/{sequence}/00000.png,gt/{sequence}")
    (data / "jobs.csv").write_text("\n".join(lines) + "\n")
    jobs = read_jobs(data / "jobs.csv")

    record = run_batch(jobs, tmp_path / "out", options, address=cluster)

    written = batch_json(tmp_path / "out")
    assert written == record.as_dict()
    assert written["status"] == "complete" and written["engine"] == "ray" and written["address"] == cluster
    assert written["workers"] == 2 and written["model_loads"] == 2
    assert len({video["node"] for video in written["videos"]}) == 2, "both nodes track videos"
    assert [video["name"] for video in written["videos"]] == ["shapes", "blackswan", "dog"]
    for video in written["videos"]:
        assert video["status"] == "complete" and video["frames_done"] == video["frames_total"]
        assert ("J&F-Mean" in video) == (video["name"] != "shapes")
    assert_same_masks(tmp_path / "out", jobs, reference)


def test_videos_that_fail_by_their_own_fault_are_recorded_and_the_others_complete(cluster, options, clips, reference, tmp_path):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    Image.fromarray(np.ones((100, 100), np.uint8)).save(tmp_path / "square.png")
    jobs = [clips["eight"], VideoJob("corrupt", tmp_path / "corrupt.mp4", MASK),
            VideoJob("square-mask", VIDEO, tmp_path / "square.png"), clips["twelve"]]

    record = run_batch(jobs, tmp_path / "out", options, address=cluster)

    assert record.status == "failed" and record.failed == ["corrupt", "square-mask"]
    videos = {video["name"]: video for video in batch_json(tmp_path / "out")["videos"]}
    assert "Cannot decode" in videos["corrupt"]["error"] and "corrupt.mp4" in videos["corrupt"]["error"]
    assert "a different shape" in videos["square-mask"]["error"]
    assert not (tmp_path / "out" / "corrupt").exists() and not (tmp_path / "out" / "square-mask").exists()
    assert videos["eight"]["status"] == videos["twelve"]["status"] == "complete"
    assert_same_masks(tmp_path / "out", [clips["eight"], clips["twelve"]], reference)
    page = (tmp_path / "out" / "report.html").read_text()  # the failed videos too, with their errors
    assert ">corrupt<" in page and "Cannot decode" in page and "a different shape" in page


def test_a_killed_worker_is_replaced_and_its_video_resumed_from_disk(cluster, options, clips, reference, tmp_path):
    events, victim = Events(), {}
    events.then("video_started", lambda started: started["name"] == "shapes", victim.update)
    events.then("progress", lambda progress: progress["running"].get("shapes", 0) >= 10,
                lambda _: os.kill(victim["pid"], signal.SIGKILL))
    jobs = [clips["shapes"], clips["eight"]]

    record = run_batch(jobs, tmp_path / "out", options, address=cluster, on_event=events, num_workers=1)

    assert [lost["name"] for lost in events.of("worker_lost")] == ["shapes"]
    assert record.status == "complete" and record.model_loads == 2, "the dead worker was replaced"
    resumed = [started for started in events.of("video_started") if started["name"] == "shapes"][1]
    assert resumed["resume"] and resumed["pid"] != victim["pid"]
    run = json.loads((tmp_path / "out" / "shapes" / "run.json").read_text())
    assert run["status"] == "complete" and run["resumed_at"] >= 10, "resumed from the masks on disk"
    assert not list((tmp_path / "out").rglob("*.part"))
    assert_same_masks(tmp_path / "out", jobs, reference)


def test_a_stopped_batch_resumes_with_the_same_masks_and_a_third_run_tracks_nothing(cluster, options, clips, reference, tmp_path):
    jobs = list(clips.values())
    stop, events = threading.Event(), Events()
    events.then("progress", lambda progress: progress["frames_done"] >= 10, lambda _: stop.set())

    first = run_batch(jobs, tmp_path / "out", options, address=cluster, on_event=events, stop=stop)

    assert first.status == "interrupted" == batch_json(tmp_path / "out")["status"]
    statuses = {video["name"]: video["status"] for video in first.videos}
    assert statuses["shapes"] == "interrupted" and "pending" in statuses.values()
    run = json.loads((tmp_path / "out" / "shapes" / "run.json").read_text())
    assert run["status"] == "interrupted" and 0 < run["frames_done"] < 60

    second = run_batch(jobs, tmp_path / "out", options, address=cluster)
    assert second.status == "complete"
    assert all(not video.get("skipped") for video in second.videos if statuses[video["name"]] != "complete")
    assert_same_masks(tmp_path / "out", jobs, reference)

    events = Events()
    third = run_batch(jobs, tmp_path / "out", options, address=cluster, on_event=events)
    assert third.status == "complete" and third.model_loads == 0 and third.workers == 0
    assert all(video["skipped"] for video in third.videos) and not events.of("video_started")
    assert events.of("started")[0]["queued"] == 0


def test_an_unreachable_address_is_a_clear_error_within_seconds(options, clips, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(UsageError, match="Cannot reach a Ray cluster at --address 127.0.0.1:"):
        run_batch([clips["eight"]], tmp_path / "out", options, address=f"127.0.0.1:{port}")
    with socket.create_server(("127.0.0.1", 0)) as listening:  # answers TCP, but says nothing
        with pytest.raises(UsageError, match="not like a Ray head"):
            run_batch([clips["eight"]], tmp_path / "out", options, address=f"127.0.0.1:{listening.getsockname()[1]}")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_a_model_that_cannot_load_stops_the_batch_before_any_output(cluster, options, clips, tmp_path):
    missing = options.replace(weights=tmp_path / "missing.pth")
    with pytest.raises(UsageError, match="missing.pth"):
        run_batch([clips["eight"], clips["twelve"]], tmp_path / "out", missing, address=cluster)
    assert not (tmp_path / "out").exists()


# --- without Ray ----------------------------------------------------------------------------------------------------


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)


def test_without_ray_the_videos_run_in_this_process_with_the_same_masks(no_ray, options, clips, reference, tmp_path, caplog):
    jobs = [clips["eight"], clips["twelve"]]
    events = Events()
    with caplog.at_level(logging.INFO, logger="dinotrack"):
        record = run_batch(jobs, tmp_path / "out", options, on_event=events)
    assert 'pip install "dinotrack[ray]"' in caplog.text
    assert record.status == "complete" and record.engine == "local" and record.workers == 1 and record.model_loads == 1
    assert [started["name"] for started in events.of("video_started")] == ["twelve", "eight"], "longest first"
    assert {video["node"] for video in record.videos} == {"local"}
    assert events.of("progress")[-1]["frames_done"] == 20 and events.of("progress")[-1]["videos_done"] == 2
    assert_same_masks(tmp_path / "out", jobs, reference)
    assert (tmp_path / "out" / "report.html").is_file()


def test_a_stop_between_two_videos_ends_the_batch_interrupted(no_ray, options, clips, tmp_path):
    stop, events = threading.Event(), Events()
    events.then("video_finished", lambda video: True, lambda _: stop.set())

    record = run_batch([clips["eight"], clips["twelve"]], tmp_path / "out", options, on_event=events, stop=stop)

    assert record.status == "interrupted"
    assert {video["name"]: video["status"] for video in record.videos} == {"twelve": "complete", "eight": "pending"}


def test_dataset_scores_leave_out_the_frames_whose_masks_were_given(no_ray, options, tmp_path):
    keyframes = tmp_path / "keyframes"
    keyframes.mkdir()
    for stem in ("00000", "00030"):
        shutil.copy(SAMPLE / "shapes_gt" / f"{stem}.png", keyframes / f"{stem}.png")
    job = VideoJob("shapes", VIDEO, keyframes, gt=SAMPLE / "shapes_gt")
    run_batch([job], tmp_path / "out", options)

    report = write_dataset_scores([job], tmp_path / "out", options)

    scored = {frame for result in report.objects for frame in result.frames}
    assert "00030" not in scored and "00029" in scored and "00031" in scored


def test_without_ray_a_model_that_cannot_load_stops_the_batch_before_any_output(no_ray, options, clips, tmp_path):
    with pytest.raises(UsageError, match="missing.pth"):
        run_batch([clips["eight"]], tmp_path / "out", options.replace(weights=tmp_path / "missing.pth"))
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_another_videos_run_is_refused_unless_overwrite(no_ray, options, clips, tmp_path):
    run_batch([VideoJob("clip", clips["eight"].source, MASK)], tmp_path / "out", options)
    with pytest.raises(UsageError, match=r"other inputs or settings: clip \(source: .*eight -> .*twelve\).*--overwrite"):
        run_batch([VideoJob("clip", clips["twelve"].source, MASK)], tmp_path / "out", options)
    assert len(list((tmp_path / "out" / "clip" / "masks").glob("*.png"))) == 8
    record = run_batch([VideoJob("clip", clips["twelve"].source, MASK)], tmp_path / "out", options, overwrite=True)
    assert record.status == "complete" and len(list((tmp_path / "out" / "clip" / "masks").glob("*.png"))) == 12


def test_a_complete_run_with_other_settings_is_refused_unless_overwrite(no_ray, options, clips, tmp_path):
    run_batch([clips["eight"]], tmp_path / "out", options)
    with pytest.raises(UsageError, match=r"--topk: 5 -> 3"):
        run_batch([clips["eight"]], tmp_path / "out", options.replace(topk=3))
    record = run_batch([clips["eight"]], tmp_path / "out", options.replace(topk=3), overwrite=True)
    assert record.status == "complete" and not record.videos[0].get("skipped")
    assert RunRecord.read(tmp_path / "out" / clips["eight"].name).settings["topk"] == 3


def test_without_ray_an_address_or_several_workers_ask_for_the_ray_extra(no_ray, options, clips, tmp_path):
    for kwargs in ({"address": "auto"}, {"num_workers": 2}):
        with pytest.raises(UsageError, match=r'pip install "dinotrack\[ray\]"'):
            run_batch([clips["eight"]], tmp_path / "out", options, **kwargs)
    assert not (tmp_path / "out").exists()


def test_cpu_workers_take_two_threads_where_a_node_has_two_cpus():
    assert _cpu_layout([{"CPU": 2.0}]) == (2, 1)
    assert _cpu_layout([{"CPU": 16.0}, {"CPU": 3.0, "GPU": 1.0}]) == (2, 9)
    assert _cpu_layout([{"CPU": 1.0}, {"CPU": 1.0}]) == (1, 2)
    assert _cpu_layout([{"GPU": 1.0}]) == (1, 1)


def test_gpus_per_worker_is_checked_and_defaults_to_one_gpu_each():
    assert _gpus_per_worker(None, "auto", 4.0) == 1.0 and _gpus_per_worker(None, "auto", 0.0) == 0.0
    assert _gpus_per_worker(0.5, "cuda", 1.0) == 0.5 and _gpus_per_worker(None, "cpu", 8.0) == 0.0
    for requested, device, gpus, words in ((0.5, "auto", 0.0, "has none"), (1.0, "cpu", 2.0, "--device is cpu"),
                                           (1.5, "cuda", 2.0, "whole number"), (-1.0, "cuda", 2.0, "whole number")):
        with pytest.raises(UsageError, match=words):
            _gpus_per_worker(requested, device, gpus)


def test_importing_the_batch_module_does_not_import_ray():
    code = "import sys, dinotrack.batch; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
