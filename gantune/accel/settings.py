"""Which accelerated form each operation of the generator takes: one explicit :class:`Settings` object, chosen per
device and dtype in one place (:func:`settings_for`).

Every choice here changes only speed and rounding: each accelerated form computes the reference arithmetic of
:mod:`gantune.core` (tests compare every path with it). The figures behind the defaults are in docs/performance.md
and docs/gpu.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from ..runtime import native_bf16_cpu
from .machine import load_choices

PER_IMAGE_MODES = ("grouped", "loop", "auto", "compiled")
UPSAMPLE_MODES = ("transposed", "phases", "auto")
LAYOUT_MODES = ("nchw", "channels_last", "compiled")


@dataclass(frozen=True)
class Settings:
    """The accelerated paths a generator (and :class:`gantune.accel.Conv2d`) may take. The defaults are the
    reference paths; :func:`settings_for` gives the measured choice for a device and dtype."""

    # CPU without autograd over a batch: the modulation folded into one weight per image, one oneDNN convolution per
    # image with the bias, noise, activation and skip sum in its output pass (:mod:`gantune.accel.folded`)
    folded: bool = False
    # CPU float32 3x3 stride-1 convolutions by Winograd F(2x2)/F(4x4) where :func:`winograd.tile_size` says faster
    winograd: bool = False
    winograd_min_channels: int = 128  # input channels below which the direct convolution won at every map size
    winograd_max_map: int = 256 * 128 * 128  # input elements (C·H·W) above which the transformed maps are memory-bound
    # (in_ch, side, tile) measured on this machine (gantune.accel.measure; tile 0: direct): these shapes follow the
    # table instead of the rule above
    winograd_tiles: tuple[tuple[int, int, int], ...] = ()
    # (mode, in_ch, side, tile) measured with gradients ("x": the input differentiated, "w": the weight too): such
    # passes follow these rows, and the rule above for shapes not listed (never the table without gradients)
    winograd_grad_tiles: tuple[tuple[str, int, int, int], ...] = ()
    # (dtype, in_ch, side, form) measured on this machine: the folded path's per-image upsampling convolution on
    # these maps runs by "phases" (four ordinary convolutions, interleaved) or "transposed" (one transposed
    # convolution); other maps follow the rule (phases above the native kernel's size)
    upconv_forms: tuple[tuple[str, int, int, str], ...] = ()
    # the same, measured forward and backward with the weight differentiated (PTI, the overparameterized latent):
    # the folded path's passes with gradients follow these rows, and the rule for maps not listed
    upconv_grad_forms: tuple[tuple[str, int, int, str], ...] = ()
    # the skip branch's 2x binomial upsampling as two 1-D passes (CPU: the depthwise 4x4 convolution is slow there)
    separable_upsample: bool = False
    # layout of the synthesis maps when the generator's own setting is None and the pass records no gradients:
    # "nchw", "channels_last", or "compiled" (channels-last under torch.compile only)
    layout: str = "nchw"
    # the gradient modes ("x": the projectors' frozen generator, "w": weights differentiated; see
    # gantune.core.ops.Ops.channels_last) whose passes run channels-last, as measured on this machine; others NCHW
    # (on the AVX2 EPYC oneDNN's weight gradient ran at 0.35 of the conv rate channels-last against 0.75 NCHW)
    grad_channels_last: tuple[str, ...] = ()
    # per-image weights without autograd: "grouped" (one grouped convolution, groups = B), "loop" (one batch-1
    # convolution per image on channels-last maps), "auto" (loop on maps of per_image_loop_min_hw pixels or more),
    # "compiled" ("auto" under torch.compile, else "grouped")
    per_image_conv: str = "grouped"
    per_image_loop_min_hw: int = 32 * 32
    # an upsampling layer's transposed 3x3 convolution + 4x4 blur: "transposed" (the reference), "phases" (the blur
    # folded into four phase kernels of one ordinary convolution, interleaved by pixel_shuffle), "auto" (phases at
    # batch >= phases_min_batch_half in bf16/fp16, >= phases_min_batch_tf32 in float32 with TF32 on)
    upsample: str = "transposed"
    phases_min_batch_half: int = 4
    phases_min_batch_tf32: int = 8
    # noise added per image by one multi-tensor launch (CUDA: the broadcast add runs an unvectorised kernel)
    noise_foreach: bool = False
    # images per synthesis pass without autograd (0: the whole batch). CPU: 1 — each image then gets its batch-1
    # bits whatever the batch size, and the folded path costs a batch exactly its images anyway; whole-batch 1024 px
    # maps leave the caches and fragment the heap (AMX Xeon, batch 4, ms an image, whole / one a pass: 1024 px
    # 606-621 / 563-593 and in another run 696-825 / 621-631; 512 px 374-389 / 384-402; 256 px 246-252 / 254-261;
    # HyperStyle 5 iterations at 1024 px 6.4-6.7 / 5.0-5.1 s)
    images_per_pass: int = 0

    def by_rule(self) -> "Settings":
        """These settings with none of this machine's measured choices: the built-in rules everywhere."""
        return replace(self, winograd_tiles=(), winograd_grad_tiles=(), upconv_forms=(), upconv_grad_forms=(),
                       grad_channels_last=())

    def __post_init__(self) -> None:
        for name, value, allowed in (("per_image_conv", self.per_image_conv, PER_IMAGE_MODES),
                                     ("upsample", self.upsample, UPSAMPLE_MODES), ("layout", self.layout, LAYOUT_MODES)):
            if value not in allowed:
                raise ValueError(f"Settings.{name} must be one of {', '.join(allowed)}; got {value!r}")


REFERENCE = Settings()


@functools.cache
def onednn_pointwise_available() -> bool:
    """Whether oneDNN's convolution with a fused output pass (the folded path's kernel) is in this torch build."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")


@functools.cache
def settings_for(device_type: str, dtype: torch.dtype = torch.float32) -> Settings:
    """The measured choice for a device type ("cpu", "cuda", ...) and compute dtype: the one place where gantune
    decides how a generator computes.

    * CPU: the folded path in float32, and in bfloat16 where the CPU has it in hardware (an AMX Xeon, 1024 px render
      with offsets: 466 ms against 721 ms unfolded, and closer to float32); Winograd for wide 3x3 layers;
      channels-last maps; the separable skip upsampling.
    * CUDA: per-image convolutions looped under torch.compile, phase upsampling at larger batches, the multi-tensor
      noise add, channels-last maps under torch.compile only (eager measured as fast NCHW).
    * Anything else: the reference paths.

    On CPU, Winograd and the folded path's upsampling form follow this machine's measured table where
    ``make bench`` wrote one (:mod:`gantune.accel.measure`), read once per process.
    """
    if device_type == "cpu":
        folded = onednn_pointwise_available() and (
            dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16_cpu()))
        choices = load_choices()
        return Settings(folded=folded, winograd=True, separable_upsample=True, layout="channels_last",
                        winograd_tiles=choices.tiles, winograd_grad_tiles=choices.grad_tiles,
                        grad_channels_last=choices.grad_channels_last,
                        upconv_forms=choices.upconv, upconv_grad_forms=choices.upconv_grad, images_per_pass=1)
    if device_type == "cuda":
        return Settings(layout="compiled", per_image_conv="compiled", upsample="auto", noise_foreach=True)
    return REFERENCE
