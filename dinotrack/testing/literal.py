"""A short, literal implementation of ALGORITHM.md §3-5, kept as the reference.

Full [h*w, N_ctx*h*w] similarity matrix, then the neighbourhood mask, then the
joint top-k, exactly as the published notebook does it. Slow and memory hungry
on purpose: dinotrack's propagation must give the same masks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def neighbourhood_mask(h: int, w: int, radius: float, shape: str) -> torch.Tensor:
    """[h*w, h*w] bool: True where key patch j is within reach of query patch i."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten().double(), xs.flatten().double()
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    return torch.maximum(dy.abs(), dx.abs()) <= radius


def propagate_literal(first_feats, first_probs, frames_feats, *, context=7, radius=12.0,
                      topk=5, temperature=0.2, shape="circle"):
    """Yield [M, h, w] probabilities for each frame of ``frames_feats`` ([h, w, D] each)."""
    h, w, _ = first_feats.shape
    allowed = neighbourhood_mask(h, w, radius, shape)
    queue_feats, queue_probs = [], []
    for feats in frames_feats:
        ctx_feats = torch.stack([first_feats, *queue_feats]).reshape(-1, h * w, feats.shape[-1])
        ctx_probs = torch.stack([first_probs, *queue_probs]).flatten(2)  # [n, M, hw]
        n = ctx_feats.shape[0]
        sim = feats.reshape(h * w, -1) @ ctx_feats.reshape(n * h * w, -1).T  # [hw, n*hw]
        sim = sim.masked_fill(~allowed.repeat(1, n), float("-inf"))
        kth = sim.topk(topk, dim=1).values[:, -1:]
        sim = sim.masked_fill(sim < kth, float("-inf"))
        weights = torch.softmax(sim / temperature, dim=1)
        probs = weights @ ctx_probs.permute(0, 2, 1).reshape(n * h * w, -1)  # [hw, M]
        probs = probs / probs.sum(1, keepdim=True)
        probs = probs.T.reshape(-1, h, w)
        queue_feats.append(feats)
        queue_probs.append(probs)
        if len(queue_feats) > context:
            queue_feats.pop(0)
            queue_probs.pop(0)
        yield probs


def probs_to_ids(probs: torch.Tensor, labels: list[int], size: tuple[int, int]) -> np.ndarray:
    """§5 as published: bilinear upsample, per-channel min-max, argmax, ids. [H, W] uint8."""
    up = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    lo = up.flatten(1).min(1).values.view(-1, 1, 1)
    hi = up.flatten(1).max(1).values.view(-1, 1, 1)
    up = (up - lo) / (hi - lo).clamp_min(1e-12)
    return np.asarray(labels, dtype=np.uint8)[up.argmax(0).numpy()]
