"""Soak: track a long looped clip, or a batch of many short videos, and watch memory, file descriptors and threads.

    PYTHONPATH=. python scripts/soak.py                 # 5,000 frames, overlay on, tiny backbone
    PYTHONPATH=. python scripts/soak.py --frames 1000 --every 100
    PYTHONPATH=. python scripts/soak.py --videos 200 --every 20   # a batch on a local Ray instance

The bundled sample clip (``sample_videos/shapes.mp4``, 60 frames) is looped
into one video of ``--frames`` frames, tracked by ``track_video`` in this
process with the tiny random test backbone (``dinotrack.testing.TINY``) at
``--short-side 64``, overlay on. Every ``--every`` frames it samples the
resident set size (VmRSS), open file descriptors and live threads, then
prints a table and the verdict: the last RSS sample within 5% of the
1,000-frame sample, and no growth in descriptors or threads after it.

With ``--videos N`` it writes N short clips (the sample clip's first
``--clip-frames`` frames, each its own file) and a manifest, and runs them
as one ``run_batch`` on a local Ray instance (127.0.0.1, no dashboard,
``--workers`` workers). Every ``--every`` finished videos it samples the
driver (this process) and the workers (their summed RSS, found by their
process title); the verdict compares the last sample with the one at 20%
of the videos.
"""

from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # as the CLI does, before torch loads: idle OpenMP threads sleep

import argparse
import tempfile
import threading
from pathlib import Path

import numpy as np  # noqa: E402

from dinotrack.pipeline import RunOptions, track_video
from dinotrack.sources import VideoWriter, open_source
from dinotrack.testing import TINY, write_meta_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_videos"
BASELINE_FRAME = 1000
RSS_TOLERANCE = 0.05


def looped_video(path: Path, frames: int) -> Path:
    """The sample clip looped to ``frames`` frames, as one H.264 file."""
    clip = open_source(SAMPLE / "shapes.mp4")
    pictures = [frame.rgb for frame in clip]
    with VideoWriter(path, clip.fps, clip.size) as writer:
        for index in range(frames):
            writer.write(pictures[index % len(pictures)])
    return path


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample(frames: int) -> tuple[int, float, int, int]:
    return frames, rss_mib(), len(os.listdir("/proc/self/fd")), threading.active_count()


def worker_rss_mib() -> float:
    """Summed resident set size of the Ray worker processes that run :class:`VideoWorker` actors."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"VideoWorker" in (proc / "cmdline").read_bytes():
                total += next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                              if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            continue
    return total


def soak_batch(videos: int, clip_frames: int, every: int, workers: int) -> None:
    """Track ``videos`` short clips as one batch on a local Ray instance; print driver and worker samples."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from dinotrack.batch import run_batch
    from dinotrack.manifest import read_jobs

    with tempfile.TemporaryDirectory(prefix="dinotrack-soak-") as temporary:
        work = Path(temporary)
        clip = looped_video(work / "clip.mp4", clip_frames)
        rows = ["source,mask,name"]
        for index in range(videos):
            (work / f"v{index:04d}.mp4").write_bytes(clip.read_bytes())
            rows.append(f"v{index:04d}.mp4,{SAMPLE / 'shapes_mask.png'},v{index:04d}")
        (work / "jobs.csv").write_text("\n".join(rows) + "\n")
        options = RunOptions(
            model=TINY, weights=write_meta_checkpoint(work / "tiny.pth"), device="cpu", short_side=64, overlay="plain",
        )
        samples = [(0, *sample(0)[1:], 0.0)]
        finished = 0

        def on_event(kind: str, payload: dict) -> None:
            nonlocal finished
            if kind == "video_finished":
                finished += 1
                if finished % every == 0:
                    samples.append((finished, *sample(finished)[1:], worker_rss_mib()))

        record = run_batch(read_jobs(work / "jobs.csv"), work / "out", options, num_workers=workers, on_event=on_event)
    print(f"{record.status}: {videos} videos of {clip_frames} frames in {record.seconds:.0f} s, {len(record.failed)} failed\n")
    print("| videos | driver RSS MiB | driver fds | driver threads | workers RSS MiB |\n|---|---|---|---|---|")
    for done, rss, fds, threads, workers_rss in samples:
        print(f"| {done} | {rss:.0f} | {fds} | {threads} | {workers_rss:.0f} |")
    base = next(s for s in samples if s[0] >= videos // 5)
    last = samples[-1]
    flat = abs(last[1] / base[1] - 1) <= RSS_TOLERANCE and abs(last[4] / base[4] - 1) <= RSS_TOLERANCE
    flat = flat and last[2] <= base[2] and last[3] <= base[3]
    print(
        f"\nat {last[0]} videos / at {base[0]}: driver RSS {last[1] / base[1]:.3f}, workers RSS {last[4] / base[4]:.3f}; "
        f"fds {base[2]} -> {last[2]}; threads {base[3]} -> {last[3]}: {'flat' if flat else 'GROWING'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--videos", type=int, help="soak a batch of this many short videos instead")
    parser.add_argument("--clip-frames", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.videos:
        soak_batch(args.videos, args.clip_frames, args.every, args.workers)
        return
    with tempfile.TemporaryDirectory(prefix="dinotrack-soak-") as temporary:
        work = Path(temporary)
        video = looped_video(work / "looped.mp4", args.frames)
        options = RunOptions(model=TINY, weights=write_meta_checkpoint(work / "tiny.pth"), device="cpu", short_side=64)
        samples = [sample(0)]

        def on_progress(done: int, total: int | None) -> None:
            if done % args.every == 0:
                samples.append(sample(done))

        report = track_video(video, SAMPLE / "shapes_mask.png", work / "run", options, on_progress=on_progress)
    print(f"{report.status}: {report.frames_done} frames at {report.fps:.1f} frames/s\n")
    print("| frames | RSS MiB | fds | threads |\n|---|---|---|---|")
    for frames, rss, fds, threads in samples:
        print(f"| {frames} | {rss:.0f} | {fds} | {threads} |")
    print(verdict(samples))


def verdict(samples: list[tuple[int, float, int, int]]) -> str:
    base = next((s for s in samples if s[0] >= BASELINE_FRAME), samples[0])
    last = samples[-1]
    rss_ratio = last[1] / base[1]
    slope = np.polyfit([s[0] for s in samples if s[0] >= base[0]], [s[1] for s in samples if s[0] >= base[0]], 1)[0]
    flat = abs(rss_ratio - 1) <= RSS_TOLERANCE and last[2] <= base[2] and last[3] <= base[3]
    return (
        f"\nRSS at {last[0]} frames / at {base[0]}: {rss_ratio:.3f} (slope {1000 * slope:.2f} MiB per 1000 frames); "
        f"fds {base[2]} -> {last[2]}; threads {base[3]} -> {last[3]}: {'flat' if flat else 'GROWING'}"
    )


if __name__ == "__main__":
    main()
