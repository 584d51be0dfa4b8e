"""Make the synthetic sample clip in sample_videos/: two textured shapes that cross.

Writes shapes.mp4 (H.264, 426x240, 24 fps, 60 frames), shapes_mask.png (the
first frame's label map) and shapes_gt/00000.png ... (the label map of every
frame). Object 1 is a disc with a pinwheel texture, object 2 a checkered
rectangle that passes in front of it; the background is smooth noise that
pans slowly. The label maps come from the shapes' geometry, not from the
lossy video, so they are exact. Everything is drawn from a fixed seed: a
second run writes the same pixels.

Usage: python scripts/make_sample_video.py [--out sample_videos]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dinotrack.masks import write_label_map
from dinotrack.sources import VideoWriter

HEIGHT, WIDTH = 240, 426
FPS = 24.0
FRAMES = 60
PAN = 40
"""Pixels the background slides to the left over the clip."""
SEED = 2025


@dataclass(frozen=True)
class Pose:
    """Where a shape is in one frame: centre (x, y) in pixels, turn in radians."""

    x: float
    y: float
    angle: float


@dataclass(frozen=True)
class Shape:
    """A textured shape; ``texture`` is ``[T, T, 3] uint8`` centred on the shape."""

    object_id: int
    texture: np.ndarray

    def local_coordinates(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """``[H, W] float32`` coordinates of every frame pixel in the shape's own turned frame."""
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        dx, dy = xs - pose.x, ys - pose.y
        cos, sin = math.cos(pose.angle), math.sin(pose.angle)
        return cos * dx + sin * dy, -sin * dx + cos * dy

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def paint(self, rgb: np.ndarray, ids: np.ndarray, pose: Pose) -> None:
        """Draw the shape over ``rgb`` ``[H, W, 3] uint8`` and its id over ``ids`` ``[H, W] uint8``."""
        u, v = self.local_coordinates(pose)
        half = self.texture.shape[0] / 2
        pixels = cv2.remap(self.texture, u + half, v + half, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        inside = self.inside(u, v)
        rgb[inside] = pixels[inside]
        ids[inside] = self.object_id


@dataclass(frozen=True)
class Disc(Shape):
    radius: float = 40.0

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u * u + v * v <= self.radius**2


@dataclass(frozen=True)
class Rectangle(Shape):
    half_width: float = 60.0
    half_height: float = 27.0

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return (np.abs(u) <= self.half_width) & (np.abs(v) <= self.half_height)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """``[height, width] float32`` noise in [0, 1] that varies over about ``cell`` pixels."""
    coarse = rng.random((height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def tint(weights: np.ndarray, dark: tuple[int, int, int], light: tuple[int, int, int]) -> np.ndarray:
    """``[H, W, 3] uint8``: each pixel mixes ``dark`` and ``light`` by its weight in [0, 1]."""
    mix = weights[..., None]
    return ((1 - mix) * np.array(dark) + mix * np.array(light)).clip(0, 255).astype(np.uint8)


def background(rng: np.random.Generator) -> np.ndarray:
    """``[H, W + PAN, 3] uint8`` greenish plasma, wide enough to pan across."""
    height, width = HEIGHT, WIDTH + PAN
    plasma = 0.6 * smooth_noise(rng, height, width, 48) + 0.4 * smooth_noise(rng, height, width, 12)
    return tint(plasma, (40, 70, 50), (150, 180, 140))


def pinwheel_texture(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """``[size, size, 3] uint8`` orange and yellow blades, so a turn is visible."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    blades = 0.5 + 0.5 * np.sin(6 * np.arctan2(ys, xs) + 0.08 * np.hypot(xs, ys))
    return tint(0.8 * blades + 0.2 * smooth_noise(rng, size, size, 8), (170, 40, 20), (250, 210, 60))


def checker_texture(rng: np.random.Generator, size: int = 136, cell: int = 14) -> np.ndarray:
    """``[size, size, 3] uint8`` blue and white checks."""
    ys, xs = np.mgrid[0:size, 0:size]
    checks = ((ys // cell + xs // cell) % 2).astype(np.float32)
    return tint(0.75 * checks + 0.25 * smooth_noise(rng, size, size, 6), (20, 40, 140), (210, 225, 250))


def poses(time: float) -> tuple[Pose, Pose]:
    """The disc's and the rectangle's poses at ``time`` in [0, 1]; they cross near 0.5."""
    disc = Pose(90 + 230 * time, 125 + 35 * math.sin(2 * math.pi * time), 1.5 * math.pi * time)
    rectangle = Pose(340 - 220 * time, 110 + 25 * math.cos(1.6 * math.pi * time), math.radians(20 + 120 * time))
    return disc, rectangle


def render(index: int, scenery: np.ndarray, shapes: tuple[Shape, Shape]) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index``: ``[H, W, 3] uint8`` pixels and ``[H, W] uint8`` ids; later shapes are in front."""
    time = index / (FRAMES - 1)
    offset = round(PAN * time)
    rgb = scenery[:, offset : offset + WIDTH].copy()
    ids = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for shape, pose in zip(shapes, poses(time)):
        shape.paint(rgb, ids, pose)
    return rgb, ids


def make(out: Path) -> list[Path]:
    """Write the clip, the first mask and the ground truth under ``out``; the paths written."""
    rng = np.random.default_rng(SEED)
    scenery = background(rng)
    shapes = (Disc(1, pinwheel_texture(rng)), Rectangle(2, checker_texture(rng)))
    truth = out / "shapes_gt"
    truth.mkdir(parents=True, exist_ok=True)
    for stale in truth.glob("*.png"):
        stale.unlink()
    with VideoWriter(out / "shapes.mp4", FPS, (HEIGHT, WIDTH), codec="h264") as video:
        for index in range(FRAMES):
            rgb, ids = render(index, scenery, shapes)
            video.write(rgb)
            write_label_map(truth / f"{index:05d}.png", ids)
            if index == 0:
                write_label_map(out / "shapes_mask.png", ids)
    return [out / "shapes.mp4", out / "shapes_mask.png", truth]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_videos"), help="folder to write into")
    for path in make(parser.parse_args().out):
        size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
        print(f"wrote {path} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
