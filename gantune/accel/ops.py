"""The generator's operations in their faster forms, chosen per call from a :class:`Settings` object."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..core.modconv import needs_grad
from ..core.ops import Ops
from . import winograd
from .folded import modulated_conv2d_folded
from .settings import Settings, settings_for
from .upsample import is_binomial, phase_weight, upconv_phases, upsample2x_binomial, use_phases


def per_image_loop(x: torch.Tensor, wb: torch.Tensor, settings: Settings) -> bool:
    """Whether per-image weights wb convolve x one image at a time (``settings.per_image_conv``)."""
    mode = settings.per_image_conv
    if mode == "compiled":
        mode = "auto" if torch.compiler.is_compiling() else "grouped"
    if mode == "grouped" or x.shape[0] == 1 or needs_grad(x, wb):
        return False
    return mode == "loop" or x.shape[2] * x.shape[3] >= settings.per_image_loop_min_hw


def conv_per_image(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """x (B, in, H, W) convolved with image b's own weight w[b] (B, out, in, k, k), stride 1, one convolution per
    image on channels-last maps, concatenated: (B, out, H', W'), channels-last."""
    batch, out_ch = w.shape[:2]
    x = x.contiguous(memory_format=torch.channels_last)
    wl = w.reshape(batch * out_ch, *w.shape[2:]).contiguous(memory_format=torch.channels_last)  # one layout pass
    return torch.cat([F.conv2d(x[i:i + 1], wl[i * out_ch:(i + 1) * out_ch], bias, padding=padding)
                      for i in range(batch)])


def add_noise_foreach_(y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """y += n in place for n (1, 1, H, W): n expanded over the channels once and added to each image's contiguous
    (C, H, W) block ((H, W, C) for channels-last maps) by one vectorised multi-tensor launch. On CUDA a broadcast
    add runs ATen's unvectorised kernel, five times the time of a plain pass over the map (18 % of a batch-32
    HyperStyle inversion on an H200). Under ``torch.compile`` a plain add, which the compiler fuses."""
    if y.shape[0] == 1 or n.shape[0] != 1 or torch.compiler.is_compiling():
        return y.add_(n)
    if y.is_contiguous():
        full = n[0].expand(y.shape[1], -1, -1).contiguous()
        torch._foreach_add_(list(y.unbind(0)), [full] * y.shape[0])
    elif y.is_contiguous(memory_format=torch.channels_last):
        full = n[0, 0][:, :, None].expand(-1, -1, y.shape[1]).contiguous()  # (H, W, C)
        torch._foreach_add_([b.permute(1, 2, 0) for b in y.unbind(0)], [full] * y.shape[0])
    else:
        y.add_(n)
    return y


class AcceleratedOps(Ops):
    """:class:`gantune.core.ops.Ops` with the accelerated forms ``settings`` allows; ``settings=None`` takes
    :func:`settings_for` each call's device and dtype (the measured choice)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.kept: dict | None = None  # within batch_in_passes: what the folded path computes from weights alone

    def settings_of(self, x: torch.Tensor) -> Settings:
        return self.settings or settings_for(x.device.type, x.dtype)

    def layer(self, layer, x, mod, **kw):
        return folded_layer(layer, x, mod, self.settings_of(x), kept=self.kept, **kw)

    @contextlib.contextmanager
    def batch_in_passes(self):
        """Keeps the folded path's weight-only values (θ's Winograd transforms, its tap sums of squares) across the
        passes of one batch, then drops them: one image a pass would otherwise recompute them per image (a 256 px
        render, batch 4: 291-296 against 269-272 ms an image in one pass)."""
        outer = self.kept is None
        if outer:
            self.kept = {}
        try:
            yield
        finally:
            if outer:
                self.kept = None

    def conv_shared(self, x, w, padding, *, frozen):
        if frozen and (m := winograd.tile_size(x, x.shape[1], w.shape[-1], self.settings_of(x),
                                               per_call_weight=True, grad=winograd.grad_mode(x, w))):
            return winograd.conv3x3(x, winograd.transform_weight(w, m))  # the projectors' frozen generator
        return super().conv_shared(x, w, padding, frozen=frozen)

    def upconv_shared(self, x, w32, kernel):
        if use_phases(x, x.shape[1], w32.shape[-1], kernel, False, self.settings_of(x)):
            return upconv_phases(x, phase_weight(w32, kernel).to(x.dtype))
        return super().upconv_shared(x, w32, kernel)

    def conv_per_image(self, x, wb, bias, padding):
        if per_image_loop(x, wb, self.settings_of(x)):
            return conv_per_image(x, wb, bias, padding)
        return super().conv_per_image(x, wb, bias, padding)

    def upconv_per_image(self, x, wb, kernel, bias):
        settings = self.settings_of(x)
        if not use_phases(x, x.shape[1], wb.shape[-1], kernel, True, settings):
            return super().upconv_per_image(x, wb, kernel, bias)
        # the phase kernels are linear in θ̂ (sums of ≤ 9 taps times the blur's weights), folded in x's dtype
        batch, in_ch, out_ch = x.shape[0], x.shape[1], wb.shape[1]
        if per_image_loop(x, wb, settings):
            y = conv_per_image(x, phase_weight(wb, kernel), None if bias is None else bias.repeat_interleave(4), 1)
            return F.pixel_shuffle(y, 2)
        w4 = phase_weight(wb, kernel).reshape(batch * out_ch * 4, in_ch, 3, 3)
        xg = x.reshape(1, batch * in_ch, x.shape[2], x.shape[3])
        y = upconv_phases(xg, w4, None if bias is None else bias.repeat(batch), groups=batch)
        return y.reshape(batch, out_ch, y.shape[2], y.shape[3])

    def add_noise_(self, y, n):
        if self.settings_of(y).noise_foreach:
            return add_noise_foreach_(y, n)
        return y.add_(n)

    def upsample2x(self, img, kernel):
        if self.settings_of(img).separable_upsample and is_binomial(kernel):
            return upsample2x_binomial(img)
        return super().upsample2x(img, kernel)

    def images_per_pass(self, x):
        return self.settings_of(x).images_per_pass

    def channels_last(self, device, grad=None):
        settings = self.settings or settings_for(device.type)
        if grad is not None:  # as measured on this machine for the mode (else NCHW)
            return grad in settings.grad_channels_last
        return settings.layout == "channels_last" or (settings.layout == "compiled" and torch.compiler.is_compiling())


def _folding_pays(layer, x, mod: dict, delta) -> bool:
    """False for a frozen layer differentiated through its styles alone (the W / W+ projectors: the rank-1 form needs
    no weight gradient, the folded one a full one, measured 2x slower a step at 1024 px), and for a batch under
    autograd (training: one batched convolution beat one per image 2x in a G step at 64 px, batch 16; the folded
    path's per-image slices cost a zero-filled gradient each in the backward pass)."""
    if not torch.is_grad_enabled():
        return True
    frozen_rank1 = (not layer.weight.requires_grad and "styles" in mod and mod["styles"].requires_grad
                    and (delta is None or delta.shape[0] == 1 or delta.ndim in (2, 4)))
    batched_grad = x.shape[0] > 1 and (x.requires_grad or layer.weight.requires_grad
                                       or any(t.requires_grad for t in mod.values())
                                       or (delta is not None and delta.requires_grad))
    return not frozen_rank1 and not batched_grad


def folded_layer(layer, x, mod, settings: Settings, *, delta, kernel, noise, gain, skip, fused, kept=None):
    """A whole CPU layer by the folded path (bias, noise, activation and the skip sum inside the convolution's
    output pass; the float32 image sum only from a float32 convolution), or None where it does not serve: not
    asked for, a forced path (``fused``), not float32 / bfloat16 on CPU, or where it does not pay."""
    if (not settings.folded or fused is not None or x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.bfloat16) or not _folding_pays(layer, x, mod, delta)):
        return None
    into = skip if layer.conv_clamp is None and x.dtype == torch.float32 else None
    y = modulated_conv2d_folded(
        x, layer.weight, **mod, delta=delta, demodulate=not layer.is_rgb, up=layer.spec.up, kernel=kernel,
        out_scale=gain, bias=layer.bias * gain,
        noise=None if noise is None else noise.to(x.dtype) * (layer.noise_strength * gain).to(x.dtype),
        leaky_relu=not layer.is_rgb, add_to=into, settings=settings, kept=kept,
    )
    if layer.conv_clamp is not None:
        y = y.clamp(-layer.conv_clamp, layer.conv_clamp)
    if skip is not None and into is None:
        y = skip + y.float()
    return y
