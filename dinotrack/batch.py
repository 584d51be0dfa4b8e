"""Many videos in one call: workers that build the backbone once track video after video from a queue.

Frames of one video stay in order (each is propagated from the earlier
ones), so the parallelism is across videos. The engine is Ray when it is
installed: each worker is a Ray actor, placed on any node of the cluster, and
the driver (this process) hands out the longest videos first to whichever
worker is free. Without Ray, the same worker class runs in this process, one
video after another.

Each video's results go to ``output/<name>/``, exactly as :func:`track_video`
writes them; ``output/batch.json`` records the batch and ``output/report.html``
shows it (see :mod:`dinotrack.report`). Running the same batch
again skips complete videos and resumes the others. A video that fails by its
own fault is recorded as failed while the others go on; a worker that dies is
replaced and its video resumed from the masks on disk; a set ``stop`` event
stops every worker after its frame in hand.

Ray is imported only when a batch runs. Presentation (progress bars, tables)
is the caller's: :func:`run_batch` reports through ``on_event(kind, payload)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import torch

from dinotrack.backbones import Backbone
from dinotrack.evaluation import EvalReport, evaluate, write_csv, write_json, write_plot
from dinotrack.files import atomic_write_json
from dinotrack.manifest import BATCH_RECORD, VideoJob
from dinotrack.pipeline import RunOptions, RunReport, load_backbone, planned_changes, track_video
from dinotrack.records import RunRecord
from dinotrack.report import write_report
from dinotrack.sources import IMAGE_SUFFIXES, open_source
from dinotrack.structs import DinotrackError, UsageError

log = logging.getLogger("dinotrack")

RAY_INSTALL = 'pip install "dinotrack[ray]"'
CPU_THREADS_PER_WORKER = 2
"""torch threads of a CPU worker (fewer on nodes with fewer CPUs), so by default one worker per two cores.

Measured on a 2-core machine (ViT-S/16, S=240, four 16-frame DAVIS clips):
one worker on two threads tracked 1.33 and 1.56 frames/s, two workers on one
thread each 1.21 and 1.16; one worker also starts sooner and holds one copy
of the model, not two."""
POLL_S = 0.5
"""How often the driver asks the workers for progress while it waits."""
MAX_ATTEMPTS = 3
"""A video whose worker dies this many times is recorded as failed."""
PROBE_TIMEOUT_S = 5.0

Event = Callable[[str, dict], None]
"""``on_event(kind, payload)``; kinds: started, worker_ready, video_started, progress, video_finished, worker_lost, finished."""


class VideoWorker:
    """Tracks videos one after another with one backbone, built by :meth:`start`.

    As a Ray actor it runs threaded (``max_concurrency`` 3), so that
    :meth:`poll` and :meth:`stop` answer while :meth:`run` works.
    ``threads`` sets torch's CPU threads in the worker.
    """

    def __init__(self, options: RunOptions, *, threads: int | None = None):
        self.options = options
        self.threads = threads
        self.backbone: Backbone | None = None
        self.model_loads = 0
        self.node = "local"
        self._frames = 0
        self._stop = threading.Event()

    def start(self, node: str | None = None) -> dict:
        """Build the backbone; returns ``{"pid", "node", "model_loads"}``."""
        self._use_threads()
        self.node = node or _ray_node()
        self.backbone = load_backbone(self.options)
        self.model_loads += 1
        return {"pid": os.getpid(), "node": self.node, "model_loads": self.model_loads}

    def run(self, job: VideoJob, output: str, resume: bool) -> dict:
        """Track ``job`` into ``output/<name>``; returns its ``batch.json`` entry (a failure is an entry, not an error).

        Without ``resume``, whatever an unrecorded run left there is replaced
        (a folder without a readable ``run.json`` holds nothing to resume).
        """
        assert self.backbone is not None, "VideoWorker.start() builds the backbone before run()"
        self._use_threads()
        self._frames = 0
        started = time.perf_counter()
        try:
            report = track_video(
                job.source, job.mask, Path(output) / job.name, self.options, gt=job.gt, backbone=self.backbone,
                overwrite=not resume, resume=resume, on_progress=self._progress, stop=self._stop,
            )
        except DinotrackError as error:
            return self._failed(str(error), started)
        except Exception as error:  # a bug or an exhausted device: fail this video, keep the batch going
            log.exception("Unexpected error while tracking %s", job.name)
            return self._failed(
                f"Unexpected {type(error).__name__}: {error}. Track this video alone with `dinotrack track --debug` "
                "to see the traceback, and please report it.",
                started,
            )
        return _entry(report, self.node)

    def poll(self) -> int:
        """Frames done of the video in hand (all of them, resumed ones included)."""
        return self._frames

    def stop(self) -> None:
        """Make :meth:`run` end after the frame in hand, with status ``interrupted``."""
        self._stop.set()

    def _use_threads(self) -> None:
        """torch's CPU threads, set on the calling thread (a threaded actor may run each call on another one)."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def _progress(self, done: int, total: int | None) -> None:
        self._frames = done

    def _failed(self, message: str, started: float) -> dict:
        seconds = time.perf_counter() - started
        return {"status": "failed", "error": message, "frames_done": self._frames, "seconds": round(seconds, 3), "node": self.node}


def _entry(report: RunReport, node: str) -> dict:
    """A finished run's ``batch.json`` entry (without name and source, which the driver holds)."""
    entry = {
        "status": report.status,
        "frames_done": report.frames_done,
        "frames_total": report.frames_total,
        "seconds": round(report.seconds.get("total", 0.0), 3),
        "fps": round(report.fps, 3),
        "node": node,
    }
    if report.metrics is not None:
        entry["J&F-Mean"] = float(report.metrics.scores.as_dict()["J&F-Mean"])
    return entry


def _ray_node() -> str:
    """``IP/node-id`` of the Ray node this process runs on."""
    import ray

    return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:12]}"


# --- engines ---------------------------------------------------------------------------------------------------------


class WorkerLost(Exception):
    """The worker running a video died (killed, out of memory, node lost)."""


class Engine(Protocol):
    """Where workers live. Tickets are the engine's pending calls (futures or Ray object refs)."""

    name: str
    address: str | None

    def default_workers(self) -> int: ...
    def start(self) -> tuple[Any, Hashable]: ...
    def run(self, worker: Any, job: VideoJob, output: Path, resume: bool) -> Hashable: ...
    def wait(self, tickets: list[Hashable], timeout: float) -> list[Hashable]: ...
    def result(self, ticket: Hashable) -> dict: ...
    def poll(self, workers: list[Any]) -> dict[Any, int]: ...
    def stop(self, worker: Any) -> None: ...
    def discard(self, worker: Any) -> None: ...
    def close(self) -> None: ...


class LocalEngine:
    """One :class:`VideoWorker` in this process, on a thread, so the driver can poll it and stop it."""

    name = "local"
    address = None

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinotrack-batch")

    def default_workers(self) -> int:
        return 1

    def start(self) -> tuple[VideoWorker, Future]:
        worker = VideoWorker(self.options)
        return worker, self._thread.submit(worker.start, "local")

    def run(self, worker: VideoWorker, job: VideoJob, output: Path, resume: bool) -> Future:
        return self._thread.submit(worker.run, job, str(output), resume)

    def wait(self, tickets: list[Future], timeout: float) -> list[Future]:
        return list(wait(tickets, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def result(self, ticket: Future) -> dict:
        return ticket.result()

    def poll(self, workers: list[VideoWorker]) -> dict[VideoWorker, int]:
        return {worker: worker.poll() for worker in workers}

    def stop(self, worker: VideoWorker) -> None:
        worker.stop()

    def discard(self, worker: VideoWorker) -> None:
        worker.stop()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


class RayEngine:
    """Workers as Ray actors on a local instance (started here) or on the cluster at ``address``."""

    name = "ray"

    def __init__(
        self,
        ray: Any,
        options: RunOptions,
        *,
        address: str | None,
        gpus_per_worker: float | None,
    ) -> None:
        self.ray = ray
        self.options = options
        self._workers: list[Any] = []
        self._owns_connection = _connect(ray, address)
        self.address = ray.get_runtime_context().gcs_address
        self._resources = ray.cluster_resources()
        self.threads, self._cpu_workers = _cpu_layout([node["Resources"] for node in ray.nodes() if node["Alive"]])
        try:
            self.gpus_per_worker = _gpus_per_worker(gpus_per_worker, options.device, self._resources.get("GPU", 0.0))
        except UsageError:
            self.close()
            raise
        self._actor = ray.remote(VideoWorker)

    def default_workers(self) -> int:
        if self.gpus_per_worker:
            return max(1, math.floor(self._resources.get("GPU", 0.0) / self.gpus_per_worker))
        return self._cpu_workers

    def start(self) -> tuple[Any, Hashable]:
        if self.gpus_per_worker:
            placement, threads = {"num_cpus": 1, "num_gpus": self.gpus_per_worker}, None
        else:
            placement, threads = {"num_cpus": self.threads}, self.threads
        worker = self._actor.options(max_concurrency=3, **placement).remote(self.options, threads=threads)
        self._workers.append(worker)
        return worker, worker.start.remote()

    def run(self, worker: Any, job: VideoJob, output: Path, resume: bool) -> Hashable:
        return worker.run.remote(job, str(output.absolute()), resume)

    def wait(self, tickets: list[Hashable], timeout: float) -> list[Hashable]:
        ready, rest = self.ray.wait(tickets, num_returns=1, timeout=timeout)
        if ready and rest:
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return ready

    def result(self, ticket: Hashable) -> dict:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ticket)
        except exceptions.RayActorError as error:
            raise WorkerLost(_first_line(error)) from None
        except exceptions.RayTaskError as error:
            if isinstance(error.cause, DinotrackError):
                raise error.cause from None
            raise

    def poll(self, workers: list[Any]) -> dict[Any, int]:
        if not workers:
            return {}
        refs = {worker.poll.remote(): worker for worker in workers}
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S / 2)
        polled = {}
        for ref in ready:
            try:
                polled[refs[ref]] = self.ray.get(ref)
            except self.ray.exceptions.RayError:
                pass  # a dead worker: its run's ticket reports it
        return polled

    def stop(self, worker: Any) -> None:
        worker.stop.remote()

    def discard(self, worker: Any) -> None:
        self.ray.kill(worker, no_restart=True)
        self._workers.remove(worker)

    def close(self) -> None:
        for worker in self._workers:
            self.ray.kill(worker, no_restart=True)
        self._workers.clear()
        if self._owns_connection:
            self.ray.shutdown()


def _cpu_layout(nodes: list[dict[str, float]]) -> tuple[int, int]:
    """Threads per CPU worker and how many such workers the nodes (their Ray resources) hold.

    A worker must fit on one node: where no node has CPU_THREADS_PER_WORKER
    CPUs, workers get as many as the largest node has.
    """
    cpus = [int(resources.get("CPU", 0)) for resources in nodes]
    threads = max(1, min(CPU_THREADS_PER_WORKER, max(cpus, default=1)))
    return threads, max(1, sum(count // threads for count in cpus))


def _connect(ray: Any, address: str | None) -> bool:
    """Start a local Ray instance, or join the cluster at ``address``; False when Ray was already initialised here."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:  # "local": a new instance even when `ray start` or RAY_ADDRESS names another one
        ray.init(address="local", **quiet)
        return True
    _probe(address)
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as error:
        raise UsageError(
            f"--address {address}: {_first_line(error)} Start a cluster with `ray start --head`, or leave --address "
            "out to run on this machine."
        ) from None
    return True


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04" + bytes(5)  # + an empty SETTINGS frame
_SETTINGS = 4


def _probe(address: str) -> None:
    """Check within seconds that ``address`` answers like a Ray head (a gRPC server); Ray itself retries for minutes."""
    target = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
    if target == "auto":
        return  # Ray looks for a running local instance itself, and says at once when there is none
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        connection = socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S)
    except ValueError:
        raise UsageError(f"--address {address!r} is not HOST:PORT, 'auto' or ray://HOST:PORT.") from None
    except OSError as error:
        raise UsageError(
            f"Cannot reach a Ray cluster at --address {address} ({error.strerror or error}). Start one with "
            "`ray start --head` on the head machine and give the address it prints (`ray status` shows it), "
            "or leave --address out to run on this machine."
        ) from None
    with connection:
        try:
            connection.sendall(_HTTP2_PREFACE)
            answer = connection.recv(9)
        except OSError:  # silent or closed at once
            answer = b""
    if len(answer) < 4 or answer[3] != _SETTINGS:
        raise UsageError(
            f"--address {address} answers, but not like a Ray head node (its GCS port, 6379 by default; the "
            "dashboard's port 8265 is not it). Give the address that `ray start --head` printed."
        )


def _gpus_per_worker(requested: float | None, device: str, gpus: float) -> float:
    """GPUs per worker: the request, checked; by default one whole GPU when the cluster has any and the device allows."""
    if requested is None:
        return 1.0 if gpus and device != "cpu" else 0.0
    if requested < 0 or (requested > 1 and requested != int(requested)):
        raise UsageError(
            f"--gpus-per-worker must be 0, a fraction of one GPU (0.5 packs two workers on a GPU) or a whole "
            f"number (got {requested})."
        )
    if requested and (device == "cpu" or not gpus):
        raise UsageError(
            f"--gpus-per-worker {requested} asks for GPUs, but "
            + ("--device is cpu." if device == "cpu" else "the Ray cluster has none.")
            + " Leave it out to run the workers on CPUs."
        )
    return float(requested)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# --- the batch -------------------------------------------------------------------------------------------------------


@dataclass
class BatchRecord:
    """What a batch did; written to ``output/batch.json`` as it goes and at the end."""

    status: str
    engine: str
    address: str | None
    workers: int
    model_loads: int = 0
    seconds: float = 0.0
    videos: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Names of the videos that failed."""
        return [video["name"] for video in self.videos if video["status"] == "failed"]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Task:
    """A video to track: ``fresh`` replaces whatever its folder holds, else an earlier run is resumed."""

    job: VideoJob
    frames: int
    fresh: bool = True
    attempts: int = 0


def run_batch(
    jobs: list[VideoJob],
    output: str | os.PathLike,
    options: RunOptions = RunOptions(),
    *,
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: float | None = None,
    overwrite: bool = False,
    on_event: Event | None = None,
    stop: threading.Event | None = None,
) -> BatchRecord:
    """Track every job into ``output/<name>/`` and record the batch in ``output/batch.json``.

    ``address``: join the Ray cluster there (``"auto"`` or ``HOST:PORT``);
    without it, a local Ray instance sized to this machine and listening on
    127.0.0.1 only, or, without Ray, this process. When this process is
    already connected to Ray (``ray.init`` was called), that connection is
    used and left open. ``num_workers``: by default one per GPU
    (``gpus_per_worker`` each, default 1 when the cluster has GPUs; 0.5 packs
    two on a GPU), else one per :data:`CPU_THREADS_PER_WORKER` CPU cores.
    ``on_event(kind, payload)``: progress for a user interface. ``stop``: when
    set, every worker stops after its frame in hand, and the batch ends
    ``interrupted``. A video already complete in ``output`` with the same
    inputs and settings is reused, an unfinished one resumes; a run made with
    other inputs or settings is a :class:`UsageError` naming the differences,
    before any work, unless ``overwrite`` (then it is tracked again).
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is an existing file. Give a folder path (it will be created).")
    if num_workers is not None and num_workers < 1:
        raise UsageError(f"--num-workers must be at least 1 (got {num_workers}).")
    started = time.perf_counter()
    driver = _Driver(jobs, output, options, overwrite, on_event or _ignore, stop or threading.Event())
    engine = None
    if driver.queue:
        engine = _engine(options, address=address, num_workers=num_workers, gpus_per_worker=gpus_per_worker)
    try:
        record = driver.run(engine, num_workers)
    finally:
        if engine is not None:
            engine.close()
    record.seconds = round(time.perf_counter() - started, 3)
    _write_record(output, record)
    if record.videos:
        write_report(output)
    driver.emit("finished", record.as_dict())
    return record


def _ignore(kind: str, payload: dict) -> None:
    """The default ``on_event``."""


def _engine(
    options: RunOptions,
    *,
    address: str | None,
    num_workers: int | None,
    gpus_per_worker: float | None,
) -> Engine:
    """Ray when it is installed (imported here, never before), else this process."""
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local instance listens on 127.0.0.1 only
    try:
        import ray
    except ImportError:
        ray = None
    if ray is not None:
        return RayEngine(ray, options, address=address, gpus_per_worker=gpus_per_worker)
    if address is not None:
        raise UsageError(f"--address {address} needs Ray, which is not installed here. Install it with: {RAY_INSTALL}")
    if (num_workers or 1) > 1 or gpus_per_worker:
        raise UsageError(f"--num-workers and --gpus-per-worker need Ray, which is not installed here. Install it with: {RAY_INSTALL}")
    log.info("Ray is not installed: tracking the videos one after another in this process. For parallel workers: %s", RAY_INSTALL)
    return LocalEngine(options)


class _Driver:
    """Hands the queued videos, longest first, to free workers; replaces dead workers; records everything."""

    def __init__(
        self, jobs: list[VideoJob], output: Path, options: RunOptions, overwrite: bool, on_event: Event,
        stop: threading.Event,
    ):
        self.output, self.emit, self.stop = output, on_event, stop
        self.videos = {job.name: _pending_entry(job) for job in jobs}
        tasks, stale = [], []
        for job in jobs:
            run = _read_run(output / job.name)
            changes = planned_changes(run, job.source, job.mask, options) if run is not None else []
            if changes and not overwrite:
                stale.append(f"{job.name} ({'; '.join(changes)})")
            elif run is not None and run.status == "complete" and not changes and _has_exports(output / job.name, options):
                self.videos[job.name].update(_reused_entry(run, output / job.name))
            else:
                tasks.append(_Task(job, _estimate_frames(job.source), fresh=bool(changes) or run is None))
                self.videos[job.name]["frames_total"] = tasks[-1].frames or None
        if stale:
            raise UsageError(
                f"--output {output} holds runs made with other inputs or settings: {', '.join(stale)}. "
                "Pass --overwrite to track them again with these settings, or choose another --output."
            )
        self.queue = deque(sorted(tasks, key=lambda task: -task.frames))
        self.idle: list[Any] = []
        self.starting: dict[Hashable, Any] = {}
        self.busy: dict[Hashable, tuple[Any, _Task]] = {}
        self.workers: dict[Any, dict] = {}
        self.stopping = False
        self.last_progress: dict = {}

    def run(self, engine: Engine | None, workers: int | None) -> BatchRecord:
        """Run every queued video on ``engine`` (``None`` when none is queued); returns the batch's record."""
        self.engine = engine
        self.record = BatchRecord("running", engine.name if engine else "local", engine.address if engine else None, 0)
        if engine is not None:
            self.record.workers = min(workers or engine.default_workers(), len(self.queue))
        self.emit("started", {
            "engine": self.record.engine, "address": self.record.address, "workers": self.record.workers,
            "videos": len(self.videos), "queued": len(self.queue), **self._frames(),
        })
        for _ in range(self.record.workers):
            self._start_worker()
        while (self.queue and not self.stopping) or self.busy:
            self._check_stop()
            self._dispatch()
            tickets = [*self.busy, *self.starting]
            if not tickets and self.stopping:  # stopped between two videos: nothing is in hand
                break
            if not tickets:
                raise DinotrackError("No worker could start, so no video was tracked. See the warnings above.")
            for ticket in self.engine.wait(tickets, POLL_S):
                self._worker_ready(ticket) if ticket in self.starting else self._video_done(ticket)
            self._report_progress()
        self.record.videos = list(self.videos.values())
        self.record.status = _batch_status(self.record.videos)
        return self.record

    def _start_worker(self) -> None:
        worker, ticket = self.engine.start()
        self.starting[ticket] = worker

    def _worker_ready(self, ticket: Hashable) -> None:
        worker = self.starting.pop(ticket)
        try:
            info = self.engine.result(ticket)
        except WorkerLost as lost:
            log.warning("A worker died while it loaded the model (%s).", lost)
            return
        self.record.model_loads += info["model_loads"]
        self.workers[worker] = info
        self.idle.append(worker)
        self.emit("worker_ready", info)

    def _dispatch(self) -> None:
        while self.idle and self.queue and not self.stopping:
            if not self.output.is_dir():
                self.output.mkdir(parents=True)
            worker, task = self.idle.pop(), self.queue.popleft()
            resume = not task.fresh
            self.busy[self.engine.run(worker, task.job, self.output, resume)] = (worker, task)
            self.videos[task.job.name]["status"] = "running"
            self._write()
            where = {key: self.workers[worker][key] for key in ("pid", "node")}
            self.emit("video_started", {"name": task.job.name, "resume": resume, "attempt": task.attempts + 1, **where})

    def _video_done(self, ticket: Hashable) -> None:
        worker, task = self.busy.pop(ticket)
        name = task.job.name
        try:
            entry = self.engine.result(ticket)
        except WorkerLost as lost:
            entry = self._worker_lost(worker, task, str(lost))
            if entry is None:
                return
        else:
            self.idle.append(worker)
        self.videos[name].update(entry)
        self._write()
        self.emit("video_finished", dict(self.videos[name]))

    def _worker_lost(self, worker: Any, task: _Task, error: str) -> dict | None:
        """Replace a dead worker; requeue its video first in line, or give up on it after MAX_ATTEMPTS."""
        self.engine.discard(worker)
        task.attempts += 1
        self.emit("worker_lost", {"name": task.job.name, "error": error, "attempt": task.attempts})
        log.warning("The worker tracking %s died (%s); %s", task.job.name, error,
                    "giving up on this video." if task.attempts >= MAX_ATTEMPTS else "resuming it on another worker.")
        self.workers.pop(worker, None)
        frames_on_disk = self.last_progress.get("running", {}).get(task.job.name, 0)
        self.videos[task.job.name]["frames_done"] = max(self.videos[task.job.name]["frames_done"], frames_on_disk)
        given_up = task.attempts >= MAX_ATTEMPTS
        if not given_up:
            task.fresh = False  # what the dead worker wrote is resumed, not replaced
            self.queue.appendleft(task)
            self.videos[task.job.name]["status"] = "pending"
        if not self.stopping and len(self.queue) > len(self.idle) + len(self.starting):
            self._start_worker()
        if not given_up:
            return None
        return {"status": "failed", "error": (
            f"The worker tracking this video died {task.attempts} times (last: {error}). The machine may be out of "
            "memory; run the batch again to resume it, with fewer workers or a smaller --short-side."
        )}

    def _check_stop(self) -> None:
        if self.stop.is_set() and not self.stopping:
            self.stopping = True
            for worker, _ in self.busy.values():
                self.engine.stop(worker)
            for worker in self.starting.values():
                self.engine.discard(worker)
            self.starting.clear()

    def _report_progress(self) -> None:
        running = {}
        polled = self.engine.poll([worker for worker, _ in self.busy.values()])
        for worker, task in self.busy.values():
            running[task.job.name] = polled.get(worker, self.last_progress.get("running", {}).get(task.job.name, 0))
        progress = {**self._frames(running), "running": running, **self._counts()}
        if progress != self.last_progress:
            self.emit("progress", progress)
            self.last_progress = progress

    def _frames(self, running: dict[str, int] | None = None) -> dict[str, int]:
        """Frames done (finished videos and ``running`` ones) and the estimated total, over all videos."""
        running = running or {}
        done = sum(max(running.get(name, 0), video["frames_done"]) for name, video in self.videos.items())
        total = sum(max(video["frames_total"] or 0, running.get(name, 0)) for name, video in self.videos.items())
        return {"frames_done": done, "frames_total": total}

    def _counts(self) -> dict[str, int]:
        statuses = [video["status"] for video in self.videos.values()]
        return {"videos_done": statuses.count("complete"), "videos_failed": statuses.count("failed")}

    def _write(self) -> None:
        self.record.videos = list(self.videos.values())
        _write_record(self.output, self.record)


def _pending_entry(job: VideoJob) -> dict:
    return {
        "name": job.name, "source": str(job.source), "status": "pending", "frames_done": 0,
        "frames_total": None, "seconds": 0.0, "fps": 0.0, "node": None,
    }


def _read_run(run_dir: Path) -> RunRecord | None:
    """The record in ``run_dir/run.json``; ``None`` when there is no readable one."""
    try:
        return RunRecord.read(run_dir)
    except UsageError:
        return None


def _has_exports(run_dir: Path, options: RunOptions) -> bool:
    """Whether a complete run holds the exports asked for (if not, resuming it writes them from its masks)."""
    return all((run_dir / name).is_file() for name in options.export_files)


def _reused_entry(run: RunRecord, run_dir: Path) -> dict:
    """The entry of a video whose complete run is reused, not run again."""
    entry = {
        "status": "complete", "skipped": True, "frames_done": run.frames_done, "frames_total": run.frames_total,
        "seconds": run.seconds.get("total", 0.0), "fps": run.fps,
    }
    try:
        entry["J&F-Mean"] = json.loads((run_dir / "metrics.json").read_text())["J&F-Mean"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # tracked without ground truth
    return entry


def _estimate_frames(source: Path) -> int:
    """The frame count, cheaply: image files in a folder, or the count in a video's header (0 if unknown)."""
    if source.is_dir():
        return sum(1 for entry in os.scandir(source) if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES)
    capture = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG)
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0
    finally:
        capture.release()
    return int(count) if 0 < count < 10**9 else 0


def _batch_status(videos: list[dict]) -> str:
    statuses = {video["status"] for video in videos}
    if statuses & {"interrupted", "pending", "running"}:
        return "interrupted"
    return "failed" if "failed" in statuses else "complete"


def _write_record(output: Path, record: BatchRecord) -> None:
    """``output/batch.json``, replaced whole (written under a temporary name, then renamed)."""
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output / BATCH_RECORD, record.as_dict())


DATASET_FILES = {"global": "global_results.csv", "per_sequence": "per-sequence_results.csv",
                 "json": "metrics.json", "plot": "metrics.png"}
"""The aggregated scores a batch with ground truth writes beside its runs, as ``dinotrack benchmark`` always has."""


def _keyframe_names(job: VideoJob, run: RunRecord) -> set[str]:
    """The names of the frames whose masks ``run`` was given: left out of the scores, as DAVIS leaves out the first."""
    frames = open_source(job.source)
    return {frames.stem(index) for index in run.keyframes}


def write_dataset_scores(jobs: list[VideoJob], output: str | os.PathLike, options: RunOptions) -> EvalReport | None:
    """Score every complete video that has ground truth and write the dataset's tables to ``output``.

    Every object of every sequence weighs the same (the DAVIS convention).
    ``metrics.json`` also records the preset, settings, model and weights,
    so the figures say what made them. Returns ``None`` when no video has
    ground truth (or none is complete).
    """
    output = Path(output)
    report = EvalReport(objects=[])
    for job in jobs:
        run = _read_run(output / job.name)
        if job.gt is None or run is None or run.status != "complete":
            continue
        scored = evaluate(output / job.name / "masks", job.gt, sequences=[job.name], exclude=_keyframe_names(job, run))
        report.objects += scored.objects
        report.warnings += scored.warnings
    if not report.objects:
        return None
    about = {"preset": options.preset, "settings": options.config.as_dict(), "model": str(options.model),
             "weights": str(options.weights) if options.weights else "hub"}
    write_csv(report, output / DATASET_FILES["global"], per_sequence=output / DATASET_FILES["per_sequence"])
    write_json(report, output / DATASET_FILES["json"], about=about)
    try:
        write_plot(report, output / DATASET_FILES["plot"])
    except DinotrackError as error:
        log.warning("%s", error)
    return report
