"""Faster forms of the generator's 2x upsamplings (the same sums as :mod:`gantune.core.resample`, in another order).

* The skip branch's binomial upsampling as two 1-D passes, each writing both output phases
  (:func:`upsample2x_binomial`; CPU: oneDNN's depthwise convolution of a 3-channel 1024² image took 45 ms, about 6 %
  of a 1024 px render on an AMX Xeon).
* An upsampling layer's transposed 3×3 convolution + 4×4 blur as one ordinary convolution with the blur folded into
  four phase kernels, interleaved by ``pixel_shuffle`` (:func:`phase_weight`, :func:`upconv_phases`): 4× the
  transposed convolution's multiply-adds, no depthwise pass (CUDA's depthwise kernel was 26 % of a batch-32
  HyperStyle inversion on an H200). Where it pays is :func:`use_phases` (docs/gpu.md has the measurements).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..core.resample import make_kernel
from .settings import Settings

_BINOMIAL = make_kernel()  # outer([1, 3, 3, 1]) / 64


def is_binomial(kernel: torch.Tensor) -> bool:
    """Whether ``kernel`` is StyleGAN2's 4x4 binomial filter (outer([1, 3, 3, 1]) / 64)."""
    return kernel.shape == (4, 4) and torch.equal(kernel, _BINOMIAL.to(kernel))


def _up_pair(mid: torch.Tensor, before: torch.Tensor, after: torch.Tensor, dim: int) -> torch.Tensor:
    """(mid + before / 4, mid + after / 4) interleaved along ``dim`` (2 or 3): written in place, or stacked under
    autograd (the same bits: the quarter is exact)."""
    if torch.is_grad_enabled() and (mid.requires_grad or before.requires_grad):
        out = torch.stack([torch.add(mid, before, alpha=0.25), torch.add(mid, after, alpha=0.25)], dim=dim + 1)
    else:
        shape = list(mid.shape)
        shape.insert(dim + 1, 2)
        out = torch.empty(shape, dtype=mid.dtype, device=mid.device)
        torch.add(mid, before, alpha=0.25, out=out.select(dim + 1, 0))
        torch.add(mid, after, alpha=0.25, out=out.select(dim + 1, 1))
    return out.flatten(dim, dim + 1)


def _up_rows(x: torch.Tensor) -> torch.Tensor:
    """Along dim 2, the 2x upsampling by [1, 3, 3, 1] / 4 with zero borders: out[2m] = (x[m-1] + 3 x[m]) / 4,
    out[2m+1] = (3 x[m] + x[m+1]) / 4."""
    h = x.shape[2]
    xp = F.pad(x, (0, 0, 1, 1))
    return _up_pair(xp[:, :, 1 : h + 1] * 0.75, xp[:, :, 0:h], xp[:, :, 2 : h + 2], 2)


def _up_cols(x: torch.Tensor) -> torch.Tensor:
    """:func:`_up_rows` along dim 3."""
    w = x.shape[3]
    xp = F.pad(x, (1, 1))
    return _up_pair(xp[:, :, :, 1 : w + 1] * 0.75, xp[:, :, :, 0:w], xp[:, :, :, 2 : w + 2], 3)


def upsample2x_binomial(x: torch.Tensor) -> torch.Tensor:
    """``upfirdn2d(x, outer([1,3,3,1])/64 * 4, up=2, pad=(2, 1))`` as two 1-D passes (columns, then rows), each
    writing both output phases: the same sums, in another order (float32 results within a few ulp)."""
    return _up_rows(_up_cols(x.contiguous()))


def use_phases(x: torch.Tensor, in_ch: int, k: int, kernel: torch.Tensor | None, per_image_weight: bool,
               settings: Settings) -> bool:
    """Whether the upsampling layer on x runs by phases: ``settings.upsample`` "phases", or "auto": at batch ≥
    phases_min_batch_half in bf16/fp16, ≥ phases_min_batch_tf32 in float32 with cuDNN's TF32 on (strict float32 was
    slower with phases). Per-image weights use phases only where the map is large against the weight (H·W ≥ 9·in;
    below that the 4× weight costs more than the blur saves)."""
    impl = settings.upsample
    if impl == "transposed" or k != 3 or kernel is None or tuple(kernel.shape) != (4, 4):
        return False
    if impl == "auto":
        if x.dtype in (torch.bfloat16, torch.float16):
            min_batch = settings.phases_min_batch_half
        elif x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
            min_batch = settings.phases_min_batch_tf32
        else:
            return False
        if x.shape[0] < min_batch:
            return False
    return not per_image_weight or x.shape[2] * x.shape[3] >= 9 * in_ch


_PHASE_INDEX: dict = {}


def _phase_table(kernel: torch.Tensor) -> torch.Tensor:
    """(9, 36): row (u1, u2) of a 3×3 transposed-conv tap, column (p, q, e, g) of the phase-(p, q) 3×3 kernel tap
    (e, g) it feeds after the blur. Output pixel (2j+p, 2l+q) of transposed conv + blur is
    Σ_{e,g} x[j+e-1, l+g-1] · K_pq[e, g], where K_pq[e, g] = Σ_{u1,u2} w[u1, u2] · f[u1-p+2e-1, u2-q+2g-1],
    f is the blur's correlation weight (flipped kernel·4) and taps outside 0..3 are zero. Gathered on the kernel's
    device (no host sync)."""
    dev = kernel.device
    if dev not in _PHASE_INDEX:
        idx = torch.zeros(3, 3, 2, 2, 3, 3, dtype=torch.long)
        mask = torch.zeros(3, 3, 2, 2, 3, 3)
        for u1, u2, p, q, e, g in itertools.product(range(3), range(3), range(2), range(2), range(3), range(3)):
            a1, a2 = u1 - p + 2 * e - 1, u2 - q + 2 * g - 1
            if 0 <= a1 < 4 and 0 <= a2 < 4:
                idx[u1, u2, p, q, e, g], mask[u1, u2, p, q, e, g] = a1 * 4 + a2, 1.0
        _PHASE_INDEX[dev] = (idx.reshape(9, 36).to(dev), mask.reshape(9, 36).to(dev))
    idx, mask = _PHASE_INDEX[dev]
    f = torch.flip(kernel.detach().float() * 4, (0, 1)).reshape(16)
    return f[idx] * mask


def phase_weight(w: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Conv weight(s) w (…, out, in, 3, 3) of a transposed conv (conv2d layout: w[o, i] is the tap map from input i
    to output o) -> (…, 4·out, in, 3, 3): the four phase kernels after the blur, output channel o·4 + 2p + q, in the
    dtype of w (for the binomial blur the table holds exact binary fractions)."""
    *lead, out_ch, in_ch, _, _ = w.shape
    t = _phase_table(kernel).to(device=w.device, dtype=w.dtype)
    k = (w.reshape(-1, 9) @ t).reshape(*lead, out_ch, in_ch, 2, 2, 3, 3)
    nl = len(lead)
    perm = (*range(nl), nl, nl + 2, nl + 3, nl + 1, nl + 4, nl + 5)  # (…, out, p, q, in, 3, 3)
    return k.permute(perm).reshape(*lead, out_ch * 4, in_ch, 3, 3)


def upconv_phases(x: torch.Tensor, weight4: torch.Tensor, bias: torch.Tensor | None = None, groups: int = 1):
    """Upsampling conv + blur from :func:`phase_weight` weights: x (N, groups·in, H, W) -> (N, groups·out, 2H, 2W)
    (grouped: image b's outputs are channels b·out … b·out+out-1), the bias added inside the convolution."""
    b4 = None if bias is None else bias.repeat_interleave(4)
    y = F.conv2d(x, weight4, b4, padding=1, groups=groups)
    return F.pixel_shuffle(y, 2)
