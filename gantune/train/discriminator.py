"""StyleGAN2 residual discriminator with minibatch standard deviation and equalized learning rate.

Channels follow the generator's config (``cfg.channels(res)``), so one config describes both networks. The
resampling is the core's FIR code (binomial [1, 3, 3, 1]); the dense layers are the core's ``FullyConnected``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import GeneratorConfig
from ..core.layers import FullyConnected, activate
from ..core.resample import make_kernel, upfirdn2d

SQRT2 = math.sqrt(2.0)


class EqualConv2d(nn.Module):
    """Equalized-lr conv: stores N(0,1) weights, multiplies by 1/sqrt(fan_in) at run time; optional FIR blur and
    stride-2 downsampling (blur first, then the strided conv, as in StyleGAN2)."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
        kernel: int,  # square kernel size (1 or 3)
        *,
        down: bool = False,  # halve the resolution (blur + stride 2)
        bias: bool = True,  # learned bias (the residual skip has none)
        activation: bool = True,  # leaky ReLU(0.2) * sqrt(2)
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel, self.down, self.activation = in_ch, out_ch, kernel, down, activation
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.register_buffer("fir", make_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down:
            # blur padded so that the stride-2 conv (no padding) lands on H/2: total pad = 4 - 2 + (k - 1)
            p = 2 + self.kernel - 1
            x = upfirdn2d(x, self.fir, pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        return activate(x, self.activation)

    def extra_repr(self) -> str:
        return f"{self.in_ch}->{self.out_ch}, k={self.kernel}, down={self.down}, act={self.activation}"


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs (the second downsamples) plus a 1x1 downsampling skip; output (main + skip) / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, res: int) -> None:
        super().__init__()
        self.res = res
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, down=True, bias=False, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int, channels: int = 1) -> torch.Tensor:
    """Append the feature std over groups of ``group`` CONSECUTIVE samples (so a data-parallel rank that holds a
    contiguous slice of the global batch sees the same groups as a single process), averaged over each of
    ``channels`` channel groups and the pixels; one map per channel group."""
    n, c, h, w = x.shape
    g = min(group, n)
    if n % g:
        raise ValueError(f"minibatch-stddev group {g} must divide the batch {n}")
    y = x.float().reshape(n // g, g, channels, c // channels, h, w)  # [groups, g, F, c/F, H, W]
    y = (y - y.mean(1, keepdim=True)).square().mean(1)  # variance within each group
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [groups, F]
    y = y[:, None, :, None, None].expand(-1, g, -1, h, w).reshape(n, channels, h, w)
    return torch.cat([x, y.to(x.dtype)], 1)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: fromRGB at full resolution, blocks down to 4x4, then minibatch stddev,
    a 3x3 conv, and two dense layers to one logit per image."""

    def __init__(
        self,
        cfg: GeneratorConfig,  # the generator's config (resolution, channels, image channels)
        *,
        mbstd_group: int = 4,  # samples per minibatch-stddev group (consecutive samples)
        mbstd_channels: int = 1,  # channel groups of the stddev feature
    ) -> None:
        super().__init__()
        self.resolution, self.mbstd_group, self.mbstd_channels = cfg.resolution, mbstd_group, mbstd_channels
        res_list = list(reversed(cfg.block_resolutions))  # e.g. [64, 32, 16, 8, 4]
        self.from_rgb = EqualConv2d(cfg.img_channels, cfg.channels(cfg.resolution), 1)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.channels(r), cfg.channels(r // 2), r) for r in res_list[:-1]
        )
        c4 = cfg.channels(4)
        self.conv = EqualConv2d(c4 + mbstd_channels, c4, 3)
        self.fc = FullyConnected(c4 * 16, c4, activation=True)
        self.out = FullyConnected(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B, C, res, res) -> logits (B, 1)."""
        if img.shape[-1] != self.resolution or img.shape[-2] != self.resolution:
            raise ValueError(f"discriminator expects {self.resolution}x{self.resolution} images, got {tuple(img.shape)}")
        x = self.from_rgb(img)
        for b in self.blocks:
            x = b(x)
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))
