"""Equalized-learning-rate layers and the modulated synthesis layers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modconv import modulated_conv2d
from .ops import REFERENCE_OPS, Ops
from .specs import LayerSpec

SQRT2 = math.sqrt(2.0)


def init_normal(*shape: int, divisor: float = 1.0) -> torch.Tensor:
    """N(0, 1) / ``divisor`` initial values (the same draws and bits as ``torch.randn(*shape) / divisor``), or bare
    storage when the module is built on the meta device, where importers build the skeleton they assign loaded
    tensors to: there the draws and the division ran as Python reference ops (a 1024 px generator's skeleton took
    37 ms, 17 ms without them)."""
    if torch.get_default_device().type == "meta":
        return torch.empty(*shape)
    t = torch.randn(*shape)
    return t if divisor == 1.0 else t / divisor


def activate(x: torch.Tensor, on: bool) -> torch.Tensor:
    """StyleGAN2's "lrelu": leaky ReLU(0.2) times its gain √2, where ``on``."""
    return F.leaky_relu(x, 0.2) * SQRT2 if on else x


class FullyConnected(nn.Module):
    """Equalized-lr linear layer: stores N(0,1)/lr_mul weights, applies weight_gain = lr_mul / sqrt(in) at run time."""

    def __init__(
        self,
        in_features: int,  # input size
        out_features: int,  # output size
        *,
        bias_init: float = 0.0,  # initial bias (1 for the style affines, so styles start near 1)
        lr_mul: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        activation: bool = False,  # leaky ReLU(0.2) * sqrt(2) after the bias
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.lr_mul = lr_mul
        self.weight = nn.Parameter(init_normal(out_features, in_features, divisor=lr_mul))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain), self.activation)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, lr_mul={self.lr_mul}, act={'lrelu' if self.activation else 'linear'}"


class ModulatedLayer(nn.Module):
    """One modulated conv (3x3 feature conv or 1x1 toRGB) with its style affine, noise, bias and activation.

    ``latent`` is either a w vector (B, w_dim), giving styles (B, in) — or the overparameterized latent rows
    (B, rows, w_dim), of which the first ``out`` rows give a per-output-row modulation (B, out, in).
    """

    def __init__(
        self,
        spec: LayerSpec,  # name, channels, kernel, resolution, kind
        w_dim: int,  # style vector size
        *,
        use_noise: bool,  # per-pixel noise input (conv layers only)
        conv_clamp: float | None = None,  # optional clamp of pre-activations
    ) -> None:
        super().__init__()
        self.spec = spec
        self.is_rgb = spec.kind == "torgb"
        self.conv_clamp = conv_clamp
        k = spec.kernel
        self.weight = nn.Parameter(init_normal(spec.out_ch, spec.in_ch, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_ch))
        self.affine = FullyConnected(w_dim, spec.in_ch, bias_init=1.0)
        self.use_noise = use_noise and not self.is_rgb
        if self.use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", init_normal(spec.res, spec.res))

    def modulation_inputs(self, latent: torch.Tensor) -> dict:
        if latent.ndim == 2:
            return {"styles": self.affine(latent)}
        if latent.ndim == 3:
            rows = latent[:, : self.spec.out_ch]
            if rows.shape[1] < self.spec.out_ch:
                raise ValueError(f"{self.spec.name}: latent has {latent.shape[1]} rows, layer needs {self.spec.out_ch}")
            return {"modulation": self.affine(rows)}
        raise ValueError(f"{self.spec.name}: latent must be (B, w_dim) or (B, rows, w_dim), got {tuple(latent.shape)}")

    def offset_styles(self, mod: dict, offset: torch.Tensor) -> dict:
        """Style-space (S) edit: ``offset`` (B or 1, in) added to the styles (to every row of a per-row modulation)."""
        if offset.ndim != 2 or offset.shape[1] != self.spec.in_ch:
            raise ValueError(f"{self.spec.name}: style offset must be (B or 1, {self.spec.in_ch}), "
                             f"got {tuple(offset.shape)}")
        if "styles" in mod:
            return {"styles": mod["styles"] + offset.to(mod["styles"].dtype)}
        m = mod["modulation"]
        return {"modulation": m + offset.to(m.dtype)[:, None, :]}

    def forward(
        self,
        x: torch.Tensor,
        latent: torch.Tensor,
        *,
        kernel: torch.Tensor | None = None,
        delta: torch.Tensor | None = None,
        noise_mode: str = "const",
        fused: bool | None = None,
        skip: torch.Tensor | None = None,  # toRGB: the upsampled image so far; returns skip + this layer's output
        style_offset: torch.Tensor | None = None,  # (B or 1, in) added to the styles (S space)
        ops: Ops = REFERENCE_OPS,  # the convolutions and fused forms (the synthesis network's)
    ) -> torch.Tensor:
        # lrelu(z)·√2 = lrelu(√2·z): the activation gain is folded into the conv weight, the bias and the noise
        # strength, so the layer makes two passes over its output (noise add, activation) besides the conv itself.
        gain = 1.0 if self.is_rgb else SQRT2
        mod = self.modulation_inputs(latent)
        if style_offset is not None:
            mod = self.offset_styles(mod, style_offset)
        res = x.shape[2] * self.spec.up
        noise = None
        if self.use_noise and noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const[None, None]
            elif noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, res, res, device=x.device, dtype=x.dtype)
            else:
                raise ValueError(f"noise_mode must be const, random or none; got {noise_mode!r}")
        if (y := ops.layer(self, x, mod, delta=delta, kernel=kernel, noise=noise, gain=gain, skip=skip,
                           fused=fused)) is not None:
            return y
        y = modulated_conv2d(
            x,
            self.weight,
            **mod,
            delta=delta,
            demodulate=not self.is_rgb,
            up=self.spec.up,
            kernel=kernel,
            fused=fused,
            out_scale=gain,
            bias=self.bias * gain,
            ops=ops,
        )
        # without autograd, in place on the fresh conv output (no new map per operation)
        inplace = not (torch.is_grad_enabled() and y.requires_grad)
        if noise is not None:
            n = noise.to(y.dtype) * (self.noise_strength * gain).to(y.dtype)
            y = ops.add_noise_(y, n) if inplace else y + n
        if not self.is_rgb:
            y = F.leaky_relu_(y, 0.2) if inplace else F.leaky_relu(y, 0.2)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        if skip is not None:
            return skip + y.float()
        return y

    def extra_repr(self) -> str:
        s = self.spec
        return f"{s.name}: {s.in_ch}->{s.out_ch}, k={s.kernel}, res={s.res}, up={s.up}, noise={self.use_noise}"
