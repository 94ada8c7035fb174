"""The folded path: a modulated layer for inference on CPU, one oneDNN convolution per image.

It folds the whole modulation (styles or matrix, offsets, demodulation, gains) into one weight per image and runs one
ordinary oneDNN convolution per image, writing into the output in place and fusing the bias, the noise, the
activation and the skip sum into the convolution's output pass. It is the grouped path's arithmetic
(:func:`gantune.core.modconv.modulated_conv2d`), image by image, so a batch costs exactly its images. Its wide 3×3
layers run as Winograd convolutions (:mod:`.winograd`) where the settings allow, with and without autograd alike
(the same bits both ways).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.modconv import DEMOD_EPS, _assert_shape, _check_inputs, needs_grad
from . import winograd
from .settings import Settings

# ATen runs a single-image 3x3 convolution of at most this many input elements with its native kernel, not oneDNN:
# the folded path follows it so that passes with and without autograd give the same bits
NATIVE_CONV_MAX_NUMEL = 20480


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
    # the float32 product in the convolution's layout, then rounded: writing bf16 through the transposing layout
    # took 2.5x the time of a float32 write (AMX Xeon, 512² weight: 1.67 against 0.67 ms, + 0.4 ms to round)
    out = torch.empty(theta.shape, dtype=torch.float32, device=theta.device, memory_format=fmt)
    torch.mul(theta, c4, out=out)
    return out if dtype == torch.float32 else out.to(dtype)


def _tap_square_sum(theta: torch.Tensor) -> torch.Tensor:
    """Σ_k θ[o, i, k]² (out, in) as a matrix-vector product over the taps (ATen's sum over an inner dimension of 9
    took 1.6x the time at 512²)."""
    taps = theta.shape[2] * theta.shape[3]
    return torch.mv(theta.square().reshape(-1, taps), theta.new_ones(taps)).view(theta.shape[:2])


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


class _ImageWeights:
    """One call's per-image weights: θ with image b's offsets, modulation, demodulation and gains folded in, in the
    layout the convolution reads (direct) or in Winograd's transformed space."""

    def __init__(self, x, weight, styles, modulation, delta, gain, demodulate: bool, out_scale: float,
                 kept: dict | None = None) -> None:
        self.theta = weight.float()
        self.coef_all = (modulation.float() if modulation is not None else styles.float()[:, None, :]) * gain
        self.delta, self.demodulate, self.out_scale = delta, demodulate, out_scale
        self.per_tap = delta is not None and delta.ndim == 5
        # θ's values that do not depend on the image (its tap sums of squares, its Winograd transform per tile
        # size): shared by the batch's images, and by the passes of a batch rendered in several (``kept``)
        self.kept = {} if kept is None else kept
        self.key = (id(weight), weight.data_ptr(), weight._version)
        self.sq = None
        if demodulate and not self.per_tap:
            self.sq = self._weight_only("sq", lambda: _tap_square_sum(self.theta))
        self.fmt, self.dtype = _layout_of(x), x.dtype

    def _weight_only(self, what, compute):
        key = (*self.key, what)
        if (value := self.kept.get(key)) is None:
            value = self.kept[key] = compute()
        return value

    def factors(self, b: int):
        """Image b's (θ or θ ⊙ (1 + Δ) per tap, Σ_k of its squares, per-(out, in) factor before demodulation)."""
        th, sq_b, c = self.theta, self.sq, self.coef_all[b]
        delta = self.delta
        if delta is not None:
            d_b = delta[b if delta.shape[0] > 1 else 0].float()
            if self.per_tap:
                th = torch.addcmul(self.theta, self.theta, d_b)  # θ ⊙ (1 + Δ) in one pass
                sq_b = _tap_square_sum(th) if self.demodulate else None
            else:
                c = c * (1.0 + d_b)
        return th, sq_b, c

    def direct(self, b: int, transpose: bool) -> torch.Tensor:
        th, sq_b, c = self.factors(b)
        return _folded_weight(th, sq_b, c, self.demodulate, self.out_scale, transpose, self.fmt, self.dtype)

    def winograd(self, b: int, m: int) -> torch.Tensor:
        """Image b's weight in Winograd's transformed space (α², out, in): θ (or θ ⊙ (1 + Δ) for per-tap offsets)
        transformed, times the image's factor per (out, in). θ is transformed once per call and batch, kept across
        the passes of a batch rendered in several (~5 ms for 512², against ~100 ms gained at 64²; a copy kept between
        batches would add 52 MB to a 1024 px generator's memory); per-tap offsets make each image's weight its own."""
        th, sq_b, c = self.factors(b)
        if self.per_tap:
            u = winograd.transform_weight(th, m)
        else:
            u = self._weight_only(("winograd", m), lambda: winograd.transform_weight(th, m))
        return winograd.scale_weight(u, _final_coef(sq_b, c, self.demodulate, self.out_scale))

    def upconv(self, xb: torch.Tensor, b: int, settings: Settings, grad: str | None = None) -> torch.Tensor:
        """Image b's stride-2 transposed convolution (the same calls with and without autograd where the forms
        agree, so both give the same bits), in the form :func:`upconv_form` picks."""
        if upconv_form(xb, settings, grad) == "phases":
            return transposed_conv_phases(xb, self.direct(b, False))
        return F.conv_transpose2d(xb, self.direct(b, True), stride=2)


def upconv_form(xb: torch.Tensor, settings: Settings, grad: str | None = None) -> str:
    """How an upsampling layer's transposed convolution of image xb runs: as this machine measured for its dtype,
    channels and side (``settings.upconv_forms``; with gradients, ``grad`` "w", ``settings.upconv_grad_forms``), else
    by the rule: "phases" on maps above the native kernel's size (measured on an AVX2 EPYC: 1.2-1.5x faster than
    oneDNN's transposed convolution), "transposed" below (ATen's native kernel)."""
    dtype = str(xb.dtype).removeprefix("torch.")
    for dt, in_ch, side, form in settings.upconv_grad_forms if grad else settings.upconv_forms:
        if dt == dtype and in_ch == xb.shape[1] and side == xb.shape[2] == xb.shape[3]:
            return form
    return "phases" if xb.numel() > NATIVE_CONV_MAX_NUMEL else "transposed"


def _blur_weight(kernel: torch.Tensor, out_ch: int, x: torch.Tensor) -> torch.Tensor:
    """The 4x4 blur after the transposed convolution as a depthwise weight in x's dtype and layout."""
    kk = (kernel * 4).to(x.dtype)  # symmetric binomial: flipping is a no-op, kept for generality
    blur = torch.flip(kk, (0, 1))[None, None].expand(out_ch, 1, kk.shape[0], kk.shape[1])
    return blur.contiguous(memory_format=_layout_of(x))


def modulated_conv2d_folded(
    x: torch.Tensor,  # (B, in, H, W) float32 (or hardware bf16) activations on CPU
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
    leaky_relu: bool = False,  # leaky ReLU(0.2) after the noise (in place in float32)
    add_to: torch.Tensor | None = None,  # (B, out, H_out, W_out) float32: the result is added into it and returned
    settings: Settings,  # which 3x3 convolutions run as Winograd, which form the upsampling convolution takes
    kept: dict | None = None,  # weight-only values kept across the passes of one batch (AcceleratedOps)
) -> torch.Tensor:
    """:func:`gantune.core.modconv.modulated_conv2d` (+ noise, + activation, + skip sum) for inference on CPU, one
    oneDNN convolution per image with a weight that holds the whole modulation. Same arguments and result."""
    delta, gain = _check_inputs(x, weight, styles, modulation, delta, up, kernel, gain)
    weights = _ImageWeights(x, weight, styles, modulation, delta, gain, demodulate, out_scale, kept)
    kh, in_ch = weight.shape[2], x.shape[1]
    grad = winograd.grad_mode(x, weight, styles, modulation, delta)

    def winograd_tile(xb: torch.Tensor) -> int:
        """F(m×m) tile for image xb's same-resolution k×k convolution, or 0 for oneDNN's direct one."""
        if kh == 1 or up == 2 or xb.numel() <= NATIVE_CONV_MAX_NUMEL:
            return 0
        return winograd.tile_size(xb, in_ch, kh, settings, per_call_weight=True, grad=grad)

    b32 = None if bias is None else bias.to(x.dtype).contiguous()  # the convolution's own dtype
    blur = _blur_weight(kernel, weight.shape[0], x) if up == 2 else None
    if needs_grad(x, weight, styles, modulation, delta, bias, noise, add_to):
        y = _convolve_differentiable(x, weights, blur, b32, winograd_tile, kh, up, settings, grad)
        if add_to is not None:
            y = (add_to + noise if noise is not None else add_to) + y
        elif noise is not None:
            y = noise + y
        return F.leaky_relu(y, 0.2) if leaky_relu else y
    out = _output_map(x, weight.shape[0], up, noise, add_to)
    for b in range(x.shape[0]):
        xb, ob = x[b : b + 1], out[b : b + 1]
        # oneDNN's own ops where F.conv2d / F.conv_transpose2d would pick oneDNN too (the differentiable branch
        # uses those), so that a render gives the same bits with and without gradients
        if up == 2:
            y = weights.upconv(xb, b, settings)  # (1, out, 2H+1, 2W+1); the blur's padding 1 brings it to 2H
            _conv_into(ob, y, blur, b32, 1, groups=blur.shape[0])
        elif m := winograd_tile(xb):
            winograd.conv3x3_into(ob, xb, weights.winograd(b, m), b32)
        elif xb.numel() > NATIVE_CONV_MAX_NUMEL and kh > 1:
            _conv_into(ob, xb, weights.direct(b, False), b32, kh // 2)
        else:
            ob.add_(_conv(xb, weights.direct(b, False), b32, kh))
    if leaky_relu:
        return _leaky_relu(out)
    return out


def _leaky_relu(y: torch.Tensor) -> torch.Tensor:
    """leaky ReLU(0.2) of a map the caller owns: in place in float32, into a new map in bf16 (a 1024 px bf16 render
    on an AMX Xeon, interleaved: 234-246 ms with the new map, 262-277 ms in place)."""
    if y.dtype == torch.bfloat16:
        return F.leaky_relu(y, 0.2)
    return F.leaky_relu(y, 0.2, inplace=True)


def _convolve_differentiable(x, weights: _ImageWeights, blur, b32, winograd_tile, kh: int, up: int,
                             settings: Settings, grad: str | None) -> torch.Tensor:
    """The folded convolutions with differentiable operations (F.conv2d with the bias), image by image."""
    ys = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        if up == 2:
            y = weights.upconv(xb, b, settings, grad)
            y = _bias_gradient_apart(F.conv2d(y, blur, _detached(b32), padding=1, groups=blur.shape[0]), b32)
        elif m := winograd_tile(xb):
            y = winograd.conv3x3(xb, weights.winograd(b, m), b32)  # as inference: the same bits
        else:
            y = _conv(xb, weights.direct(b, False), b32, kh)
        ys.append(y)
    return ys[0] if len(ys) == 1 else torch.cat(ys)


def _conv(xb: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, kh: int) -> torch.Tensor:
    """One image's stride-1 k×k convolution with padding k // 2 and the bias. A 1×1 one (toRGB) on an NCHW float32
    map is one matrix product: oneDNN's 1×1 convolution to 3 channels took 4x its time there (AMX Xeon, 32 channels
    at 1024²: 24.5 against 6.0 ms; forward and backward 85 against 18 ms). Channels-last maps keep the convolution
    (as fast, and the same bits as the product)."""
    if kh != 1 or not xb.is_contiguous() or xb.dtype != torch.float32 or xb.shape[0] != 1:
        return F.conv2d(xb, w, bias, padding=kh // 2)
    _, in_ch, height, width = xb.shape
    out_ch = w.shape[0]
    flat = xb.reshape(in_ch, height * width)
    y = w.reshape(out_ch, in_ch) @ flat if bias is None else torch.addmm(bias[:, None], w.reshape(out_ch, in_ch), flat)
    return y.view(1, out_ch, height, width)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _bias_gradient_apart(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y, made with ``bias.detach()`` inside the blur's depthwise convolution, plus (bias - bias.detach()): the same
    values (an exact zero added), with the bias's gradient summed over the map instead of by the depthwise
    convolution's backward, whose bias gradient is slow on CPU (AMX Xeon, forward and backward with the bias
    differentiated, 32 channels at 1025²: 330 ms against 88 ms without it; 64 at 513²: 143 against 41 ms). The
    inference pass keeps the bias in the convolution, so both give the same bits."""
    if bias is None or not (torch.is_grad_enabled() and bias.requires_grad):
        return y
    return y + (bias - bias.detach())[None, :, None, None]


def _output_map(x: torch.Tensor, out_ch: int, up: int, noise, add_to) -> torch.Tensor:
    """The map the convolutions add into: ``add_to`` (+ noise), or a new one holding the noise (or zeros)."""
    batch, h_out, w_out = x.shape[0], x.shape[2] * up, x.shape[3] * up
    if add_to is not None:
        _assert_shape(add_to, (batch, out_ch, h_out, w_out), "add_to")
        return add_to.add_(noise) if noise is not None else add_to
    out = torch.empty((batch, out_ch, h_out, w_out), dtype=x.dtype, device=x.device, memory_format=_layout_of(x))
    return out.copy_(noise.expand_as(out)) if noise is not None else out.zero_()
