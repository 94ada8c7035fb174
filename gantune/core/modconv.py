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
* the grouped ("fused") path materialises θ̂ per sample and runs one grouped convolution with groups = B.

Modulation factors and demodulation coefficients are computed in float32; the convolution runs in the dtype of x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .resample import blur_after_transposed_conv

DEMOD_EPS = 1e-8


def _assert_shape(t: torch.Tensor, shape: tuple, name: str) -> None:
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name}: expected shape {tuple('*' if s is None else s for s in shape)}, got {tuple(t.shape)}")


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
) -> torch.Tensor:
    batch, in_ch, height, width = x.shape
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

    rank1_possible = modulation is None and (delta is None or delta.shape[0] == 1)
    if fused is False and not rank1_possible:
        raise ValueError("the rank-1 path needs styles and a delta shared by the batch")
    # (measured on CPU: the rank-1 path is faster than folding the modulation into the weight even at batch 1)
    use_grouped = (not rank1_possible) if fused is None else fused

    w32 = weight.float() * gain  # (out, in, k, k)
    if not use_grouped:
        if delta is not None:
            d0 = delta[0].float()
            w32 = w32 * (1.0 + (d0 if d0.ndim == 4 else d0[:, :, None, None]))
        s = styles.float()  # (B, in)
        xs = x * s.to(x.dtype)[:, :, None, None]
        wc = w32.to(x.dtype)
        if up == 2:
            y = F.conv_transpose2d(xs, wc.transpose(0, 1), stride=2)
            y = blur_after_transposed_conv(y, kernel)
        else:
            y = F.conv2d(xs, wc, padding=kh // 2)
        if demodulate:
            # Σ_{i,k} (θ[o,i,k]·s[b,i])² = Σ_i s[b,i]² · Σ_k θ[o,i,k]²
            scale = torch.rsqrt(s.square() @ w32.square().sum(dim=(2, 3)).t() + DEMOD_EPS) * out_scale  # (B, out)
        else:
            scale = torch.full((batch, out_ch), float(out_scale), device=y.device)
        scale = scale.to(y.dtype)[:, :, None, None]
        if bias is None:
            return y * scale
        return torch.addcmul(bias.to(y.dtype)[None, :, None, None], y, scale)  # one pass: y·scale + bias

    m = modulation.float() if modulation is not None else styles.float()[:, None, :]  # (B, 1|out, in)
    if delta is not None and delta.ndim == 3:
        m = m * (1.0 + delta.float())
    wb = w32[None] * m[..., None, None]  # (B, out, in, k, k)
    if delta is not None and delta.ndim == 5:
        wb = wb * (1.0 + delta.float())
    if wb.shape[1] != out_ch:
        wb = wb.expand(batch, out_ch, in_ch, kh, kw)
    if demodulate:
        wb = wb * torch.rsqrt(wb.square().sum(dim=(2, 3, 4), keepdim=True) + DEMOD_EPS)
    if out_scale != 1.0:
        wb = wb * out_scale
    wb = wb.to(x.dtype)
    xg = x.reshape(1, batch * in_ch, height, width)
    if up == 2:
        # conv_transpose2d weight layout: (groups·in, out, k, k); not flipped (as both official codes)
        wt = wb.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
        y = F.conv_transpose2d(xg, wt, stride=2, groups=batch)
        y = blur_after_transposed_conv(y, kernel)  # bias after the blur: the blur's zero padding would dim it
        y = y.reshape(batch, out_ch, y.shape[2], y.shape[3])
        return y if bias is None else y + bias.to(y.dtype)[None, :, None, None]
    b = None if bias is None else bias.to(x.dtype).repeat(batch)
    y = F.conv2d(xg, wb.reshape(batch * out_ch, in_ch, kh, kw), b, padding=kh // 2, groups=batch)
    return y.reshape(batch, out_ch, y.shape[2], y.shape[3])
