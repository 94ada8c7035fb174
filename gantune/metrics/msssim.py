"""MS-SSIM (Wang, Simoncelli & Bovik 2003), differentiable, on [-1, 1] images.

Standard settings: an 11×11 Gaussian window with σ 1.5, K1 0.01, K2 0.03, dynamic range L = 2 (images in [-1, 1]),
five scales with the published weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2×2 average pooling between scales.
Contrast-structure terms are taken at every scale, luminance only at the coarsest, as in the paper.

Small images (the tiny and demo generators are 32–64 px) cannot hold five scales of an 11-pixel window: the number of
scales is reduced to what fits (coarsest side ≥ window) and the remaining weights renormalised to sum to 1; below
11 px the window shrinks to the image side. :func:`ms_ssim_scales` says what is used.
Contrast-structure values are clamped at 1e-6 before the power (the usual "relu" variant), so the product is real.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5


def _gauss(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ms_ssim_scales(side: int, window: int = WINDOW) -> tuple[int, int]:
    """(scales, window) used for images of this (smallest) side."""
    win = min(window, side)
    scales = 1
    while scales < len(MS_WEIGHTS) and side // 2**scales >= win:
        scales += 1
    return scales, win


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _ssim_terms(x, y, g, c1, c2):
    mx, my = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mx * mx
    syy = _filter(y * y, g) - my * my
    sxy = _filter(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return lum.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """(B, C, H, W) x2 in [-1, 1] -> (B,) MS-SSIM in [0, 1] (1 = identical)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"MS-SSIM needs two (B, C, H, W) batches of one shape; got {tuple(x.shape)}, {tuple(y.shape)}")
    x, y = x.float(), y.float()
    scales, win = ms_ssim_scales(min(x.shape[-2:]))
    g = _gauss(win, SIGMA, x.device, x.dtype)
    weights = torch.tensor(MS_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = torch.ones(x.shape[0], device=x.device)
    for i in range(scales):
        lum, cs = _ssim_terms(x, y, g, c1, c2)
        term = lum * cs if i == scales - 1 else cs
        out = out * term.clamp_min(1e-6) ** weights[i]  # (clamped: the power has no finite gradient at 0)
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out
