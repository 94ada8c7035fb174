"""Scores per image and their summaries: L2 (mean squared error on [-1, 1] images, :mod:`gantune.metrics.l2`),
LPIPS (:mod:`gantune.evaluation.lpips`), MS-SSIM (:mod:`gantune.metrics.msssim`) and the identity distance, on
reconstructions clamped to [-1, 1] as a saved image would be; then mean ± std over images (sample std, n − 1)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..io.images import tensor_to_pil
from ..metrics.identity import identity_distance
from ..metrics.l2 import l2_distance
from ..metrics.msssim import ms_ssim

# the per-image metrics of a reconstruction row, and which way each is better
METRICS = ("l2", "lpips", "ms_ssim", "identity")
LOWER_IS_BETTER = {"l2": True, "lpips": True, "ms_ssim": False, "identity": True}


@torch.no_grad()
def image_metrics(recon: torch.Tensor, target: torch.Tensor, lpips: Callable | None,
                  identity: bool = True) -> dict[str, list[float]]:
    """Per-image L2, LPIPS, MS-SSIM and identity distance (dlib face-recognition ResNet, see
    :mod:`gantune.metrics.identity`) of (B, 3, H, W) reconstructions against targets, both in [-1, 1].
    Reconstructions are clamped to [-1, 1] first. ``lpips=None`` leaves LPIPS out."""
    if recon.shape != target.shape:
        raise ValueError(f"reconstructions {tuple(recon.shape)} and targets {tuple(target.shape)} differ in shape")
    r, t = recon.detach().float().cpu().clamp(-1, 1), target.detach().float().cpu()
    out = {"l2": l2_distance(r, t).tolist(), "ms_ssim": ms_ssim(r, t).tolist()}
    if lpips is not None:
        out["lpips"] = [float(v) for v in lpips(r, t)]
    if identity:
        out["identity"] = [identity_distance(tensor_to_pil(a), tensor_to_pil(b)) for a, b in zip(r, t)]
    return out


def summarize(values: Sequence[float]) -> dict:
    """{"mean", "std" (sample, n − 1; 0 for one value), "n"}."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    mean = math.fsum(v) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def aggregate(per_image: dict[str, Sequence[float]]) -> dict[str, dict]:
    """{metric: per-image values} -> {metric: summarize(values)}."""
    return {k: summarize(v) for k, v in per_image.items()}
