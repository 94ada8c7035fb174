"""FIR resampling in pure PyTorch (no compiled ops).

The StyleGAN2 filter is the separable binomial [1, 3, 3, 1]. Both official codes normalise its outer product to
sum 1 and multiply it by up**2 when it follows an upsampling, so that the zero-insertion does not darken the image.
``upfirdn2d`` follows rosinality's definition: insert up-1 zeros, pad (negative pads crop), convolve each channel
with the flipped kernel (a true convolution), keep every down-th sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def make_kernel(taps=BLUR_TAPS, *, dtype=torch.float32) -> torch.Tensor:
    """2-D FIR kernel normalised to sum 1 (for the binomial taps: outer([1,3,3,1]) / 64)."""
    k = torch.tensor(taps, dtype=dtype)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample by zero insertion, pad, FIR filter, downsample. x: (N, C, H, W); kernel: (kh, kw).

    ``pad`` is (pad0, pad1), applied on both axes. Output side: (H*up + pad0 + pad1 - kh) // down + 1.
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if up > 1:
        # (N, C, H, 1, W, 1) -> pad the singleton axes with up-1 zeros after each sample -> (N, C, H*up, W*up)
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    conv_pad = 0
    if p0 == p1 and p0 > 0:  # the convolution's own zero padding: no padded copy of the map
        conv_pad = p0
    else:
        x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
        if p0 < 0 or p1 < 0:
            x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    weight = weight[None, None].expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, padding=conv_pad, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling of an image/skip branch (rosinality ``Upsample``: kernel*4, pad (2, 1))."""
    return upfirdn2d(x, kernel * 4, up=2, pad=(2, 1))


def blur_after_transposed_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur that follows the stride-2 transposed 3x3 conv: (2H+1) -> 2H (rosinality ``Blur``, pad (1, 1), kernel*4)."""
    return upfirdn2d(x, kernel * 4, pad=(1, 1))
