"""Per-image mean squared error on [-1, 1] images."""

from __future__ import annotations

import torch


def l2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x2 -> (B,) mean of squared differences (the "L2" that HyperStyle and PTI report)."""
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return (x.float() - y.float()).square().flatten(1).mean(1)


class L2Distance(torch.nn.Module):
    """:func:`l2_distance` as a distance module (the ``--loss l2`` choice: no ImageNet network needed)."""

    metric_name = "l2"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return l2_distance(x, y)
