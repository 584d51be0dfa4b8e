"""Make the README's pictures: overlay frames, metrics.png and a screenshot of the report page.

Real DINOv3 weights cannot be downloaded where dinotrack is built, so videos
are tracked from noisy oracle features (see scripts/oracle_eval.py): the
pictures show what dinotrack writes, not how good a backbone is.

The sample clip is tracked at S=240, the DAVIS sequences at S=480, with
noise 1 (``--noise``).

- ``docs/overlay.png``: a frame of the plain overlay of the sample clip;
- ``docs/evaluated.png``: the frame of the evaluated overlay of DAVIS
  bmx-trees (the sample clip where ../shared/data is absent) that shows
  most of both missed and wrongly claimed pixels;
- ``docs/metrics.png``: the sample clip's metrics.png;
- ``docs/report.png``: the top of the report page of the DAVIS sequences
  (or the sample clip), screenshot in headless Chromium (skipped without it).

    python scripts/make_readme_figures.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracle_eval import DAVIS, Setting, write_oracle_cache  # noqa: E402

from dinotrack.evaluation import read_ids  # noqa: E402
from dinotrack.masks import read_label_map  # noqa: E402
from dinotrack.pipeline import RunOptions, RunReport, track_video  # noqa: E402
from dinotrack.render import error_masks  # noqa: E402
from dinotrack.report import write_report  # noqa: E402
from dinotrack.testing.browser import headless_chromium, missing_browser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_videos"
SAMPLE_SHORT_SIDE = 240
DAVIS_SHORT_SIDE = 480


def track_oracle(
    frames: Path, mask: Path, gt: Path, run: Path, work: Path, *, short_side: int, noise: float, overlay: str
) -> RunReport:
    """Track from oracle features of ``gt`` with ``noise``; with ground truth, so scored and reported."""
    cache = write_oracle_cache(work / f"cache-{run.name}", gt, Setting(short_side, noise, drift=0.0, keyframe_every=0), dim=64, seed=0)
    options = RunOptions(short_side=short_side, overlay=overlay, device="cpu")
    return track_video(frames, mask, run, options, features=cache, gt=gt)


def video_frame(video: Path, index: int, target: Path) -> None:
    """Save frame ``index`` of ``video`` as a PNG."""
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = capture.read()
    capture.release()
    if not ok:
        raise SystemExit(f"{video} has no frame {index}.")
    cv2.imwrite(str(target), bgr)


def telling_frame(run: Path, gt: Path) -> int:
    """The frame index that shows both kinds of error best: the largest ``min(missed pixels, wrong pixels)``."""
    masks = sorted((run / "masks").glob("*.png"))

    def both(mask: Path) -> int:
        missed, wrong = error_masks(read_label_map(mask), read_ids(gt / mask.name, ground_truth=True))
        return min(int(missed.sum()), int(wrong.sum()))

    return max(range(len(masks)), key=lambda index: both(masks[index]))


def screenshot(page: Path, target: Path, size: tuple[int, int]) -> None:
    driver = headless_chromium(*size)
    try:
        driver.get(page.as_uri())
        driver.save_screenshot(str(target))
    finally:
        driver.quit()


def videos() -> list[tuple[str, Path, Path, int]]:
    """``(name, frames, ground truth, short side)`` of the report's runs: the DAVIS sequences, or the sample
    clip without them."""
    annotations = DAVIS / "Annotations" / "480p"
    if not (DAVIS / "JPEGImages" / "480p").is_dir():
        return [("shapes", SAMPLE / "shapes.mp4", SAMPLE / "shapes_gt", SAMPLE_SHORT_SIDE)]
    names = sorted(path.name for path in annotations.iterdir() if path.is_dir())
    return [(name, DAVIS / "JPEGImages" / "480p" / name, annotations / name, DAVIS_SHORT_SIDE) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs", help="folder for the PNGs")
    parser.add_argument("--frame", type=int, default=20, help="which frame of the sample clip's plain overlay to show")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm added to the oracle features")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dinotrack-figures-") as temporary:
        work = Path(temporary)
        sample = track_oracle(SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png", SAMPLE / "shapes_gt",
                              work / "plain" / "shapes", work, short_side=SAMPLE_SHORT_SIDE, noise=args.noise,
                              overlay="plain")
        video_frame(sample.output / "overlay.mp4", args.frame, args.output / "overlay.png")
        shutil.copyfile(sample.output / "metrics.png", args.output / "metrics.png")
        runs = work / "runs"
        truth = {}
        for name, frames, gt, short_side in videos():
            track_oracle(frames, gt / "00000.png", gt, runs / name, work, short_side=short_side, noise=args.noise,
                         overlay="evaluated")
            truth[name] = gt
        shown = "bmx-trees" if "bmx-trees" in truth else "shapes"
        frame = telling_frame(runs / shown, truth[shown])
        video_frame(runs / shown / "overlay.mp4", frame, args.output / "evaluated.png")
        page = write_report(runs)
        reason = missing_browser()
        if reason:
            print(f"Skipped docs/report.png: {reason}")
        else:
            screenshot(page, args.output / "report.png", (1200, 1500))
    print(f"Wrote the figures to {args.output} (J&F-Mean of the sample clip {sample.metrics.scores.jf_mean:.3f} "
          "on noisy oracle features)")


if __name__ == "__main__":
    main()
