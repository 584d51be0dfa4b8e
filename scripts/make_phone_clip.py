"""Make a phone-like 4K clip from a DAVIS sequence, to try dinotrack as a phone user would.

A phone held upright records portrait video as landscape pixels plus a
display rotation in the file. This script turns a DAVIS sequence (854x480)
a quarter turn to portrait, upscales it bicubically to 2160x3840 (portrait,
4K), and writes it the way a phone does: 3840x2160 H.264 pixels at 30 fps
with a 90-degree display matrix (PyAV 18 or later). Beside it: the first
frame's mask and every frame's ground truth as the viewer sees them
(portrait, 2160x3840, nearest upscaling).

    python scripts/make_phone_clip.py --sequence dog --frames 30 --out runs/phone-clip
    dinotrack track runs/phone-clip/phone.mp4 --mask runs/phone-clip/mask.png \\
        --gt runs/phone-clip/gt --output runs/phone

It reads ``../shared/data/DAVIS``; the clip stays out of the repository.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np

from dinotrack.masks import read_label_map, write_label_map

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "DAVIS"
PORTRAIT = (3840, 2160)
"""Height, width as the viewer sees the clip."""


def upright(rgb_or_ids: np.ndarray, interpolation: int) -> np.ndarray:
    """A landscape DAVIS picture turned a quarter clockwise and upscaled to :data:`PORTRAIT`."""
    turned = np.ascontiguousarray(np.rot90(rgb_or_ids, k=-1))
    return cv2.resize(turned, PORTRAIT[::-1], interpolation=interpolation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", default="dog")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/phone-clip"))
    args = parser.parse_args()
    images = sorted((DAVIS / "JPEGImages" / "480p" / args.sequence).glob("*.jpg"))[: args.frames]
    if not images:
        raise SystemExit(f"no frames of {args.sequence} under {DAVIS}")
    (args.out / "gt").mkdir(parents=True, exist_ok=True)
    with av.open(str(args.out / "phone.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = PORTRAIT[0], PORTRAIT[1], "yuv420p"
        stream.set_display_rotation(90)  # shown turned a quarter counter-clockwise: upright
        for image in images:
            rgb = upright(cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB), cv2.INTER_CUBIC)
            stored = np.ascontiguousarray(np.rot90(rgb, k=-1))  # the sensor's landscape pixels
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
            ids = upright(read_label_map(DAVIS / "Annotations" / "480p" / args.sequence / f"{image.stem}.png"), cv2.INTER_NEAREST)
            write_label_map(args.out / "gt" / f"{image.stem}.png", ids)
            if image == images[0]:
                write_label_map(args.out / "mask.png", ids)
        container.mux(stream.encode())
    print(f"{args.out / 'phone.mp4'}: {len(images)} frames, stored 3840x2160 with a 90-degree display rotation")


if __name__ == "__main__":
    main()
