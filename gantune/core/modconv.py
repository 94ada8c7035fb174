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

On both, an upsampling layer's transposed convolution + blur runs either as ATen's transposed convolution and a
depthwise blur, or (CUDA, half precision or TF32, batch ≥ 4/8: ``resample.UPSAMPLE_IMPL``) as one ordinary
convolution with the blur folded into four phase kernels, interleaved by ``pixel_shuffle``.

A third path, :func:`modulated_conv2d_folded`, serves inference on CPU (no autograd): it folds the whole modulation
(styles or matrix, offsets, demodulation, gains) into one weight per image and runs one ordinary oneDNN convolution per
image, writing into the output in place and fusing the bias, the noise and the activation into the convolution's
output pass. It is the grouped path's arithmetic, image by image, so a batch costs exactly its images. Its wide
3×3 layers (128+ channels on 16–128 px maps) run as Winograd convolutions (:mod:`.winograd`), with and without
autograd alike; so does the rank-1 path for a frozen weight on CPU (the projectors).

Modulation factors and demodulation coefficients are computed in float32; the convolution runs in the dtype of x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import winograd
from .resample import blur_after_transposed_conv, phase_weight, upconv_phases, use_phases

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
) -> torch.Tensor:
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    delta, gain = _check_inputs(x, weight, styles, modulation, delta, up, kernel, gain)

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
        if up == 2 and use_phases(x, in_ch, kh, kernel, per_image_weight=False):
            y = upconv_phases(xs, phase_weight(w32, kernel).to(x.dtype))
        elif up == 2:
            y = F.conv_transpose2d(xs, wc.transpose(0, 1), stride=2)
            y = blur_after_transposed_conv(y, kernel)
        elif not _needs_grad(weight) and (m := winograd.tile_size(xs, in_ch, kh, per_call_weight=True)):
            y = winograd.conv3x3(xs, winograd.transform_weight(wc, m))  # the projectors' frozen generator
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
    xg = x.reshape(1, batch * in_ch, height, width)
    b = None if bias is None else bias.to(x.dtype)
    wb = _grouped_weight(w32, m, delta, demodulate, out_scale, x.dtype)
    loop = per_image_loop(x, wb)
    if up == 2 and use_phases(x, in_ch, kh, kernel, per_image_weight=True):
        # the phase kernels are linear in θ̂ (sums of ≤ 9 taps times the blur's weights), folded in x's dtype
        if loop:
            y = conv_per_image(x, phase_weight(wb, kernel), None if b is None else b.repeat_interleave(4), 1)
            return F.pixel_shuffle(y, 2)
        w4 = phase_weight(wb, kernel).reshape(batch * out_ch * 4, in_ch, kh, kw)
        y = upconv_phases(xg, w4, None if b is None else b.repeat(batch), groups=batch)
        return y.reshape(batch, out_ch, y.shape[2], y.shape[3])
    if up == 2:
        # conv_transpose2d weight layout: (groups·in, out, k, k); not flipped (as both official codes)
        wt = wb.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
        y = F.conv_transpose2d(xg, wt, stride=2, groups=batch)
        y = blur_after_transposed_conv(y, kernel)  # bias after the blur: the blur's zero padding would dim it
        y = y.reshape(batch, out_ch, y.shape[2], y.shape[3])
        if b is None:
            return y
        return y.add_(b[None, :, None, None]) if not _needs_grad(y) else y + b[None, :, None, None]
    if loop:
        return conv_per_image(x, wb, b, kh // 2)
    y = F.conv2d(xg, wb.reshape(batch * out_ch, in_ch, kh, kw), None if b is None else b.repeat(batch),
                 padding=kh // 2, groups=batch)
    return y.reshape(batch, out_ch, y.shape[2], y.shape[3])


# How per-image weights (HyperStyle offsets, adapted layers, the overparameterized latent) convolve without autograd,
# per device type: "grouped" is one grouped convolution over the batch (groups = B); "loop" one batch-1 convolution
# per image on channels-last maps (:func:`conv_per_image`); "auto" loops on maps of
# PER_IMAGE_LOOP_MIN_HW pixels or more; "compiled" is "auto" under torch.compile and "grouped" in eager mode.
# Measured on an H200, bf16, batch 32, one 3×3 layer, ms grouped NCHW / grouped NHWC / loop NHWC (shared weight, the
# floor): 512 ch 32² 1.09/0.95/0.97 (0.27), 64² 1.88/2.23/1.02 (0.88), 256 ch 128² 1.50/2.61/1.03 (0.88), 128 ch
# 256² 1.98/4.55/1.53 (0.90), 64 ch 512² 3.24/9.45/1.53 (1.30), 32 ch 1024² 7.57/36.6/3.26 (2.89). In eager
# inversions the loop's layout copies ate that (HyperStyle 5 iterations, ms/img, grouped / loop: batch 32 20.3 /
# 19.9, batch 8 25.9 / 28.4); compiled on channels-last maps, where cuDNN's grouped kernels are the slow ones above,
# a render with offsets took 3.8 ms/img grouped and 1.8 with the loop (batch 32; README "On a GPU").
PER_IMAGE_CONV: dict[str, str] = {"cuda": "compiled"}
PER_IMAGE_LOOP_MIN_HW = 32 * 32


def per_image_loop(x: torch.Tensor, wb: torch.Tensor) -> bool:
    mode = PER_IMAGE_CONV.get(x.device.type, "grouped")
    if mode == "compiled":
        mode = "auto" if torch.compiler.is_compiling() else "grouped"
    if mode == "grouped" or x.shape[0] == 1 or _needs_grad(x, wb):
        return False
    return mode == "loop" or x.shape[2] * x.shape[3] >= PER_IMAGE_LOOP_MIN_HW


def conv_per_image(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """x (B, in, H, W) convolved with image b's own weight w[b] (B, out, in, k, k), stride 1, one convolution per
    image on channels-last maps, concatenated: (B, out, H', W'), channels-last."""
    batch, out_ch = w.shape[:2]
    x = x.contiguous(memory_format=torch.channels_last)
    wl = w.reshape(batch * out_ch, *w.shape[2:]).contiguous(memory_format=torch.channels_last)  # one layout pass
    return torch.cat([F.conv2d(x[i:i + 1], wl[i * out_ch:(i + 1) * out_ch], bias, padding=padding)
                      for i in range(batch)])


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
    if dtype == torch.float32 or _needs_grad(th, coef):
        wb = (th * coef).to(dtype)
    else:  # the product in float32, written straight in the compute dtype (one pass, no float32 copy)
        wb = torch.mul(th, coef, out=torch.empty(batch, out_ch, in_ch, *th.shape[-2:], dtype=dtype, device=th.device))
    return wb


def _mkldnn_pointwise_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")


_FOLDED_OK = None
_NATIVE_BF16 = None
# ATen runs a single-image 3x3 convolution of at most this many input elements with its native kernel, not oneDNN
_NATIVE_CONV_MAX_NUMEL = 20480


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        try:
            _NATIVE_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _NATIVE_BF16 = False
    return _NATIVE_BF16


def folded_path_applies(x: torch.Tensor) -> bool:
    """Whether :func:`modulated_conv2d_folded` serves this call: float32 on CPU with oneDNN, and bfloat16 where the
    CPU has it in hardware (an AMX Xeon, 1024 px render with offsets: 466 ms against 721 ms by the rank-1 path, and
    closer to float32: max 0.13 against 0.28)."""
    global _FOLDED_OK
    if _FOLDED_OK is None:
        _FOLDED_OK = _mkldnn_pointwise_available()
    if not _FOLDED_OK or x.device.type != "cpu":
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and native_bf16_cpu())


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _final_coef(sq: torch.Tensor | None, coef: torch.Tensor, demodulate: bool, out_scale: float) -> torch.Tensor:
    """The factor (out | 1, in) that multiplies θ: coef with the demodulation (from Σ_{i,k} (θ c)² = Σ_i c² Σ_k θ²,
    as the rank-1 path) and the output scale."""
    if demodulate:
        d = torch.rsqrt((coef.square() * sq).sum(dim=1, keepdim=True) + DEMOD_EPS)  # (out, 1)
        return coef * (d * out_scale if out_scale != 1.0 else d)
    return coef * out_scale if out_scale != 1.0 else coef


def _folded_weight(
    theta: torch.Tensor,  # θ (out, in, k, k) float32, already ⊙ (1 + Δ) for per-tap offsets
    sq: torch.Tensor | None,  # Σ_k θ² (out, in), for the demodulation
    coef: torch.Tensor,  # (1 | out, in): gain · modulation · (1 + Δ) of this image
    demodulate: bool,
    out_scale: float,
    transpose: bool,  # return the transposed-convolution layout (in, out, k, k)
    fmt: torch.memory_format,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One image's final weight θ · coef · demod, written in one pass in the layout the convolution reads. The
    demodulation uses Σ_{i,k} (θ c)² = Σ_i c² Σ_k θ² (as the rank-1 path). The same operations with and without
    gradients (out= only when nothing is differentiated), so both give the same bits."""
    c4 = _final_coef(sq, coef, demodulate, out_scale)[:, :, None, None]
    if transpose:
        theta, c4 = theta.transpose(0, 1), c4.transpose(0, 1)
    if torch.is_grad_enabled() and (theta.requires_grad or c4.requires_grad):
        return (theta * c4).to(dtype).contiguous(memory_format=fmt)
    out = torch.empty(theta.shape, dtype=dtype, device=theta.device, memory_format=fmt)
    return torch.mul(theta, c4, out=out)


def _conv_into(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias, padding: int, groups: int = 1) -> None:
    """out += conv2d(x, w) + bias, in the convolution's own output pass (oneDNN sum post-op)."""
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out, x, w, bias, [padding, padding], [1, 1], [1, 1], groups, "add", 1.0, None, [], None
    )


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for NHWC activations, else contiguous (NCHW, and maps whose layout is ambiguous)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def transposed_conv_phases(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.conv_transpose2d(x, w.transpose(0, 1), stride=2)`` for a 3×3 weight ``w`` (out, in, 3, 3), computed as four
    ordinary convolutions, one per output phase: even rows/columns take the taps 2 and 0 of the flipped kernel
    (a 2-tap convolution padded by 1), odd ones tap 1 (1 tap). The same multiply-adds as the transposed
    convolution, which oneDNN runs at about half its ordinary-convolution rate on the large, narrow maps of a 1024 px
    generator (measured: 1.2–1.5× faster in all, interleaving included)."""
    batch, _, height, width = x.shape
    fmt = _layout_of(x)
    y = torch.empty((batch, w.shape[0], 2 * height + 1, 2 * width + 1), dtype=x.dtype, device=x.device,
                    memory_format=fmt)
    wf = w.flip(2, 3)
    for a in (0, 1):
        for c in (0, 1):
            k = wf[:, :, a::2, c::2].contiguous(memory_format=fmt)
            y[:, :, a::2, c::2] = F.conv2d(x, k, padding=(1 - a, 1 - c))
    return y


def _upconv(xb: torch.Tensor, image_weight, b: int) -> torch.Tensor:
    """The folded path's stride-2 transposed convolution of image ``b`` (the same calls with and without autograd,
    so both give the same bits): per phase on large maps, ATen's transposed convolution on small ones."""
    if xb.numel() > _NATIVE_CONV_MAX_NUMEL:
        return transposed_conv_phases(xb, image_weight(b, False))
    return F.conv_transpose2d(xb, image_weight(b, True), stride=2)


def modulated_conv2d_folded(
    x: torch.Tensor,  # (B, in, H, W) float32 activations on CPU
    weight: torch.Tensor,  # (out, in, k, k) stored equalized-lr weight
    styles: torch.Tensor | None = None,  # (B, in) rank-1 modulation
    *,
    modulation: torch.Tensor | None = None,  # (B, out, in) full per-sample modulation
    delta: torch.Tensor | None = None,  # (B or 1, out, in[, k, k]) multiplicative offsets
    demodulate: bool = True,
    up: int = 1,
    kernel: torch.Tensor | None = None,  # FIR kernel (sum 1) for the blur that follows upsampling
    gain: float | None = None,
    out_scale: float = 1.0,
    bias: torch.Tensor | None = None,  # (out,)
    noise: torch.Tensor | None = None,  # (1 or B, 1, H_out, W_out), already scaled: added after the bias
    leaky_relu: bool = False,  # leaky ReLU(0.2) after the noise, in place
    add_to: torch.Tensor | None = None,  # (B, out, H_out, W_out) float32: the result is added into it and returned
) -> torch.Tensor:
    """:func:`modulated_conv2d` (+ noise, + activation, + skip sum) for inference on CPU, one oneDNN convolution per
    image with a weight that holds the whole modulation. Same arguments and result as the other paths."""
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    delta, gain = _check_inputs(x, weight, styles, modulation, delta, up, kernel, gain)
    h_out, w_out = height * up, width * up
    theta = weight.float()
    coef_all = (modulation.float() if modulation is not None else styles.float()[:, None, :]) * gain
    per_tap = delta is not None and delta.ndim == 5
    sq = theta.square().sum(dim=(2, 3)) if demodulate and not per_tap else None

    def image_factors(b: int):
        """Image b's (θ or θ ⊙ (1 + Δ) per tap, Σ_k of its squares, per-(out, in) factor before demodulation)."""
        th, sq_b, c = theta, sq, coef_all[b]
        if delta is not None:
            d_b = delta[b if delta.shape[0] > 1 else 0].float()
            if per_tap:
                th = torch.addcmul(theta, theta, d_b)  # θ ⊙ (1 + Δ) in one pass
                sq_b = th.square().sum(dim=(2, 3)) if demodulate else None
            else:
                c = c * (1.0 + d_b)
        return th, sq_b, c

    def image_weight(b: int, transpose: bool) -> torch.Tensor:
        th, sq_b, c = image_factors(b)
        return _folded_weight(th, sq_b, c, demodulate, out_scale, transpose, fmt, x.dtype)

    transformed: dict[int, torch.Tensor] = {}  # θ's transform per tile size, shared by the batch's images

    def image_winograd(b: int, m: int) -> torch.Tensor:
        """Image b's weight in Winograd's transformed space (α², out, in): θ (or θ ⊙ (1 + Δ) for per-tap offsets)
        transformed, times the image's factor per (out, in). θ is transformed once per call and batch (~5 ms for
        512², against ~100 ms gained at 64²; a copy kept between calls would add 52 MB to a 1024 px generator's
        memory); per-tap offsets make each image's weight its own."""
        th, sq_b, c = image_factors(b)
        if per_tap:
            u = winograd.transform_weight(th, m)
        elif (u := transformed.get(m)) is None:
            u = transformed[m] = winograd.transform_weight(th, m)
        return winograd.scale_weight(u, _final_coef(sq_b, c, demodulate, out_scale))

    def winograd_tile(xb: torch.Tensor) -> int:
        """F(m×m) tile for image xb's same-resolution k×k convolution, or 0 for oneDNN's direct one."""
        if kh == 1 or up == 2 or xb.numel() <= _NATIVE_CONV_MAX_NUMEL:
            return 0
        return winograd.tile_size(xb, in_ch, kh, per_call_weight=True)

    b32 = None if bias is None else bias.to(x.dtype).contiguous()  # the convolution's own dtype
    fmt = _layout_of(x)
    blur = None
    if up == 2:
        kk = (kernel * 4).to(x.dtype)  # symmetric binomial: flipping is a no-op, kept for generality
        blur = torch.flip(kk, (0, 1))[None, None].expand(out_ch, 1, kk.shape[0], kk.shape[1])
        blur = blur.contiguous(memory_format=fmt)
    if _needs_grad(x, weight, styles, modulation, delta, bias, noise, add_to):
        # the same arithmetic with differentiable operations (F.conv2d with the bias, then the sums)
        ys = []
        for b in range(batch):
            xb = x[b : b + 1]
            if up == 2:
                y = _upconv(xb, image_weight, b)
                y = F.conv2d(y, blur, b32, padding=1, groups=out_ch)
            elif m := winograd_tile(xb):
                y = winograd.conv3x3(xb, image_winograd(b, m), b32)  # as inference: the same bits
            else:
                y = F.conv2d(xb, image_weight(b, False), b32, padding=kh // 2)
            ys.append(y)
        y = ys[0] if batch == 1 else torch.cat(ys)
        if add_to is not None:
            y = (add_to + noise if noise is not None else add_to) + y
        elif noise is not None:
            y = noise + y
        return F.leaky_relu(y, 0.2) if leaky_relu else y
    if add_to is not None:
        _assert_shape(add_to, (batch, out_ch, h_out, w_out), "add_to")
        out = add_to
        if noise is not None:
            out.add_(noise)
    else:
        out = torch.empty((batch, out_ch, h_out, w_out), dtype=x.dtype, device=x.device, memory_format=fmt)
        if noise is not None:
            out.copy_(noise.expand_as(out))
        else:
            out.zero_()
    for b in range(batch):
        xb, ob = x[b : b + 1], out[b : b + 1]
        # oneDNN's own ops where F.conv2d / F.conv_transpose2d would pick oneDNN too (the autograd branch above
        # uses those), so that a render gives the same bits with and without gradients
        big = xb.numel() > _NATIVE_CONV_MAX_NUMEL
        if up == 2:
            y = _upconv(xb, image_weight, b)  # (1, out, 2H+1, 2W+1); the blur's padding 1 brings it to 2H
            _conv_into(ob, y, blur, b32, 1, groups=out_ch)
        elif m := winograd_tile(xb):
            winograd.conv3x3_into(ob, xb, image_winograd(b, m), b32)
        elif big and kh > 1:
            _conv_into(ob, xb, image_weight(b, False), b32, kh // 2)
        else:
            ob.add_(F.conv2d(xb, image_weight(b, False), b32, padding=kh // 2))
    if leaky_relu:
        F.leaky_relu(out, 0.2, inplace=True)
    return out
