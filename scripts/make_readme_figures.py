"""Make the README's pictures: a frame of overlay.mp4 and a metrics.png, from the sample clip.

Real DINOv3 weights cannot be downloaded where dinotrack is built, so the
clip is tracked from noisy oracle features (see scripts/oracle_eval.py):
the pictures show what dinotrack writes, not how good a backbone is.

    python scripts/make_readme_figures.py            # writes docs/overlay.png and docs/metrics.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracle_eval import Setting, write_oracle_cache  # noqa: E402

from dinotrack.pipeline import track_video  # noqa: E402
from dinotrack.structs import PRESETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_videos"


def overlay_frame(video: Path, index: int, target: Path) -> None:
    """Save frame ``index`` of ``video`` as a PNG."""
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = capture.read()
    capture.release()
    if not ok:
        raise SystemExit(f"{video} has no frame {index}.")
    cv2.imwrite(str(target), bgr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs", help="folder for overlay.png and metrics.png")
    parser.add_argument("--frame", type=int, default=20, help="which overlay frame to show")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm added to the oracle features")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dinotrack-figures-") as work:
        work = Path(work)
        cache = write_oracle_cache(work / "cache", SAMPLE / "shapes_gt", Setting(240, args.noise, 0), dim=64, seed=0)
        run = work / "run"
        report = track_video(
            SAMPLE / "shapes.mp4", SAMPLE / "shapes_mask.png", run,
            config=PRESETS["default"].replace(short_side=240), features=cache, gt=SAMPLE / "shapes_gt",
        )
        overlay_frame(run / "overlay.mp4", args.frame, args.output / "overlay.png")
        shutil.copyfile(run / "metrics.png", args.output / "metrics.png")
    print(f"Wrote {args.output / 'overlay.png'} and {args.output / 'metrics.png'} "
          f"(J&F-Mean {report.metrics.scores.jf_mean:.3f} on noisy oracle features)")


if __name__ == "__main__":
    main()
