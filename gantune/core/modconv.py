"""The one modulated convolution shared by every method.

Every method in gantune changes a conv weight θ (out × in × k × k) by a per-sample matrix M (out × in), repeated over
k × k, before demodulation (see ARCHITECTURE.md):

    plain StyleGAN2         M[b, o, i] = s[b, i]                       styles (B, in): rank 1
    HyperStyle / adapt      M[b, o, i] = s[b, i] · (1 + Δ[b, o, i])    styles + delta (B or 1, out, in)
                            (HyperStyle's shared heads predict a full kernel Δ (B, out, in, k, k): also accepted)
    overparameterized       M[b, o, i] = A(W[b, o])[i]                 modulation (B, out, in)

    θ̂[b] = gain · θ ⊙ M[b],  then (if demodulate) θ̂[b, o] /= sqrt(Σ_{i,kh,kw} θ̂[b, o]² + eps)

Two code paths compute the same thing:
* the rank-1 path scales the activations by s, runs one ordinary convolution with the weight shared by the batch,
  and scales the output channels by the demodulation coefficients (used when M is rank 1 per sample: styles with
  no delta or one delta shared by the whole batch);
* the grouped ("fused") path materialises θ̂ per sample and convolves each image with its own weight.

The convolutions themselves are the :class:`gantune.core.ops.Ops` object's (the reference by default; faster forms
from :mod:`gantune.accel`). Modulation factors and demodulation coefficients are computed in float32; the
convolution runs in the dtype of x.
"""

from __future__ import annotations

import math

import torch

from .ops import REFERENCE_OPS, Ops

DEMOD_EPS = 1e-8


def _assert_shape(t: torch.Tensor, shape: tuple, name: str) -> None:
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name}: expected shape {tuple('*' if s is None else s for s in shape)}, got {tuple(t.shape)}")


def _check_inputs(x, weight, styles, modulation, delta, up, kernel, gain):
    """Validates the arguments shared by both entry points; returns (delta with a batch axis, gain)."""
    batch, in_ch = x.shape[:2]
    out_ch, w_in, kh, kw = weight.shape
    if w_in != in_ch:
        raise ValueError(f"weight expects {w_in} input channels, activations have {in_ch}")
    if (styles is None) == (modulation is None):
        raise ValueError("give exactly one of styles (B, in) or modulation (B, out, in)")
    if styles is not None:
        _assert_shape(styles, (batch, in_ch), "styles")
    if modulation is not None:
        _assert_shape(modulation, (batch, out_ch, in_ch), "modulation")
    if delta is not None:
        if delta.ndim in (2, 4):  # one offset set for the whole batch
            delta = delta[None]
        if delta.ndim == 5:  # per-tap offsets (HyperStyle's shared heads predict full kernels)
            _assert_shape(delta, (None, out_ch, in_ch, kh, kw), "delta")
        else:
            _assert_shape(delta, (None, out_ch, in_ch), "delta")
        if delta.shape[0] not in (1, batch):
            raise ValueError(f"delta batch {delta.shape[0]} must be 1 or {batch}")
    if up not in (1, 2):
        raise ValueError("up must be 1 or 2")
    if up == 2 and (kernel is None or kh != 3):
        raise ValueError("upsampling needs a 3x3 weight and the FIR kernel")
    if gain is None:
        gain = 1.0 / math.sqrt(in_ch * kh * kw)
    return delta, gain


def modulated_conv2d(
    x: torch.Tensor,  # (B, in, H, W) activations
    weight: torch.Tensor,  # (out, in, k, k) stored equalized-lr weight
    styles: torch.Tensor | None = None,  # (B, in) rank-1 modulation
    *,
    modulation: torch.Tensor | None = None,  # (B, out, in) full per-sample modulation (overparameterized latent)
    delta: torch.Tensor | None = None,  # (B or 1, out, in[, k, k]) multiplicative offsets: θ ⊙ (1 + Δ)
    demodulate: bool = True,  # divide each output filter by its norm (False for toRGB)
    up: int = 1,  # 1, or 2 for the transposed-conv upsampling layer
    kernel: torch.Tensor | None = None,  # FIR kernel (sum 1) for the blur that follows upsampling
    gain: float | None = None,  # equalized-lr gain; default 1/sqrt(in·k·k)
    fused: bool | None = None,  # None: pick the rank-1 path when possible; True: always grouped; False: insist on rank-1
    out_scale: float = 1.0,  # multiplies the result (folded into the weight; the layer's activation gain)
    bias: torch.Tensor | None = None,  # (out,) added to the result (inside the convolution where possible)
    ops: Ops = REFERENCE_OPS,  # the convolutions (gantune.accel gives faster forms of the same arithmetic)
) -> torch.Tensor:
    batch = x.shape[0]
    out_ch, _, kh, _ = weight.shape
    delta, gain = _check_inputs(x, weight, styles, modulation, delta, up, kernel, gain)

    rank1_possible = modulation is None and (delta is None or delta.shape[0] == 1)
    if fused is False and not rank1_possible:
        raise ValueError("the rank-1 path needs styles and a delta shared by the batch")
    # (measured on CPU: the rank-1 path is faster than folding the modulation into the weight even at batch 1)
    use_grouped = (not rank1_possible) if fused is None else fused
    w32 = weight.float() * gain  # (out, in, k, k)
    b = None if bias is None else bias.to(x.dtype)
    if use_grouped:
        m = modulation.float() if modulation is not None else styles.float()[:, None, :]  # (B, 1|out, in)
        wb = _grouped_weight(w32, m, delta, demodulate, out_scale, x.dtype)  # θ̂ (B, out, in, k, k)
        if up == 2:
            return ops.upconv_per_image(x, wb, kernel, b)
        return ops.conv_per_image(x, wb, b, kh // 2)

    if delta is not None:
        d0 = delta[0].float()
        w32 = w32 * (1.0 + (d0 if d0.ndim == 4 else d0[:, :, None, None]))
    s = styles.float()  # (B, in)
    xs = x * s.to(x.dtype)[:, :, None, None]
    if up == 2:
        y = ops.upconv_shared(xs, w32, kernel)
    else:
        y = ops.conv_shared(xs, w32.to(x.dtype), kh // 2, frozen=not needs_grad(weight))
    if demodulate:
        # Σ_{i,k} (θ[o,i,k]·s[b,i])² = Σ_i s[b,i]² · Σ_k θ[o,i,k]²
        scale = torch.rsqrt(s.square() @ w32.square().sum(dim=(2, 3)).t() + DEMOD_EPS) * out_scale  # (B, out)
    else:
        scale = torch.full((batch, out_ch), float(out_scale), device=y.device)
    scale = scale.to(y.dtype)[:, :, None, None]
    if b is None:
        return y * scale
    return torch.addcmul(b[None, :, None, None], y, scale)  # one pass: y·scale + bias


def _grouped_weight(w32, m, delta, demodulate: bool, out_scale: float, dtype: torch.dtype) -> torch.Tensor:
    """θ̂ (B, out, in, k, k) in ``dtype`` from the gained float32 weight w32 (out, in, k, k) and the modulation m
    (B, 1|out, in), with offsets and demodulation. The demodulation coefficients come from Σ_i m² · Σ_k θ² (no
    float32 copy of θ̂ for per-channel offsets), and θ̂ is written once, in ``dtype``."""
    if delta is not None and delta.ndim == 3:
        m = m * (1.0 + delta.float())
    if delta is not None and delta.ndim == 5:
        th = torch.addcmul(w32, w32, delta.float())  # θ ⊙ (1 + Δ) per tap, (B, out, in, k, k)
        sq = th.square().sum(dim=(3, 4))  # (B, out, in)
    else:
        th, sq = w32, w32.square().sum(dim=(2, 3))  # (out, in, k, k), (out, in)
    if demodulate:
        d = torch.rsqrt((m.square() * sq).sum(dim=-1) + DEMOD_EPS)  # (B, out)
        m = m * (d * out_scale)[:, :, None]
    elif out_scale != 1.0:
        m = m * out_scale
    batch, out_ch, in_ch = m.shape[0], th.shape[-4], th.shape[-3]
    coef = m[..., None, None]
    if dtype == torch.float32 or needs_grad(th, coef):
        wb = (th * coef).to(dtype)
    else:  # the product in float32, written straight in the compute dtype (one pass, no float32 copy)
        wb = torch.mul(th, coef, out=torch.empty(batch, out_ch, in_ch, *th.shape[-2:], dtype=dtype, device=th.device))
    return wb


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether this pass records gradients through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
