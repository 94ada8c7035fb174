"""FIR resampling in pure PyTorch (no compiled ops).

The StyleGAN2 filter is the separable binomial [1, 3, 3, 1]. Both official codes normalise its outer product to
sum 1 and multiply it by up**2 when it follows an upsampling, so that the zero-insertion does not darken the image.
``upfirdn2d`` follows rosinality's definition: insert up-1 zeros, pad (negative pads crop), convolve each channel
with the flipped kernel (a true convolution), keep every down-th sample.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
_BINOMIAL = torch.outer(torch.tensor(BLUR_TAPS), torch.tensor(BLUR_TAPS)) / 64


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
    """2x FIR upsampling of an image/skip branch (rosinality ``Upsample``: kernel*4, pad (2, 1)). On CPU, for the
    binomial kernel, computed separably by output phase (:func:`upsample2x_binomial`): oneDNN's depthwise
    convolution of a 3-channel 1024² image took 45 ms, about 6 % of a 1024 px render on an AMX Xeon."""
    if x.device.type == "cpu" and kernel.shape == (4, 4) and torch.equal(kernel, _BINOMIAL.to(kernel)):
        return upsample2x_binomial(x)
    return upfirdn2d(x, kernel * 4, up=2, pad=(2, 1))


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


def blur_after_transposed_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur that follows the stride-2 transposed 3x3 conv: (2H+1) -> 2H (rosinality ``Blur``, pad (1, 1), kernel*4)."""
    return upfirdn2d(x, kernel * 4, pad=(1, 1))


# How an upsampling layer's stride-2 transposed 3×3 convolution + 4×4 blur runs, per device type:
#   "transposed": ATen's transposed convolution, then the blur as a depthwise convolution (the reference arithmetic);
#   "phases":     the blur folded into the weight — the four output phases' 3×3 kernels as one ordinary convolution
#                 with 4·out channels, interleaved by pixel_shuffle (4× the transposed convolution's multiply-adds,
#                 no depthwise pass: CUDA's depthwise kernel was 26 % of a batch-32 HyperStyle inversion on an H200);
#   "auto":       phases at batch ≥ 4 in bf16/fp16, or ≥ 8 in float32 with cuDNN's TF32 on (PyTorch's default),
#                 else transposed (PHASES_MIN_BATCH). Measured on an H200, 1024 px, ms/img phases / transposed
#                 (README "On a GPU"): bf16 generator b1 12.9/12.6, b2 7.5/7.8, b4 4.7/5.7, b8 3.4/4.2, b32
#                 2.7/3.6; HyperStyle b8 26.6/32.9, b32 20.5/26.3; float32 + TF32 generator b1 13.6/12.3, b8 4.2/5.1,
#                 b32 3.5/4.3. Strict float32 (TF32 off) was slower with phases (b1 97 against 16, 68 GB peak).
# Per-image weights use phases only where the map is large against the weight (H·W ≥ 9·in; below that the 4×
# weight costs more than the blur saves). Tests set "cpu" to "phases" to check both give the same images.
UPSAMPLE_IMPL: dict[str, str] = {"cuda": "auto"}
PHASES_MIN_BATCH = {"half": 4, "tf32": 8}


def use_phases(x: torch.Tensor, in_ch: int, k: int, kernel: torch.Tensor | None, per_image_weight: bool) -> bool:
    impl = UPSAMPLE_IMPL.get(x.device.type, "transposed")
    if impl == "transposed" or k != 3 or kernel is None or tuple(kernel.shape) != (4, 4):
        return False
    if impl == "auto":
        if x.dtype in (torch.bfloat16, torch.float16):
            min_batch = PHASES_MIN_BATCH["half"]
        elif x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
            min_batch = PHASES_MIN_BATCH["tf32"]
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
