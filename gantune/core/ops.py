"""The operations of the synthesis layers that have faster forms, in their reference form.

The core computes with an :class:`Ops` object: the generator's ``synthesis.ops`` (this reference by default), handed
to every layer and to :func:`gantune.core.modconv.modulated_conv2d`. :mod:`gantune.accel` subclasses it with faster
forms of the same arithmetic (per device, dtype and batch) and installs one with ``gantune.accel.accelerate(G)``;
the core itself never imports it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .resample import blur_after_transposed_conv, upsample2x


class Ops:
    """Reference operations: PyTorch's own convolutions, the FIR blur as a depthwise convolution, NCHW maps."""

    def layer(self, layer, x: torch.Tensor, mod: dict, **kw) -> torch.Tensor | None:
        """A whole modulated layer (convolution, bias, noise, activation, clamp, skip sum) as one computation, or
        None to run the reference steps of :meth:`gantune.core.layers.ModulatedLayer.forward`."""
        return None

    def conv_shared(self, x: torch.Tensor, w: torch.Tensor, padding: int, *, frozen: bool) -> torch.Tensor:
        """x (B, in, H, W) convolved with one weight w (out, in, k, k) for the whole batch; ``frozen``: w takes no
        gradient in this pass."""
        return F.conv2d(x, w, padding=padding)

    def upconv_shared(self, x: torch.Tensor, w32: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Stride-2 transposed 3x3 convolution of x by one float32 weight w32 (out, in, 3, 3) in x's dtype (not
        flipped, as both official codes), then the 4x4 blur: (B, out, 2H, 2W)."""
        y = F.conv_transpose2d(x, w32.to(x.dtype).transpose(0, 1), stride=2)
        return blur_after_transposed_conv(y, kernel)

    def conv_per_image(self, x: torch.Tensor, wb: torch.Tensor, bias: torch.Tensor | None,
                       padding: int) -> torch.Tensor:
        """Image b of x (B, in, H, W) convolved with its own weight wb[b] (B, out, in, k, k), plus bias (out,): one
        grouped convolution with groups = B."""
        batch, in_ch, height, width = x.shape
        out_ch, k = wb.shape[1], wb.shape[-1]
        y = F.conv2d(x.reshape(1, batch * in_ch, height, width), wb.reshape(batch * out_ch, in_ch, k, k),
                     None if bias is None else bias.repeat(batch), padding=padding, groups=batch)
        return y.reshape(batch, out_ch, y.shape[2], y.shape[3])

    def upconv_per_image(self, x: torch.Tensor, wb: torch.Tensor, kernel: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
        """:meth:`upconv_shared` with image b's own weight wb[b] (B, out, in, 3, 3) in x's dtype, plus bias (out,)
        after the blur (the blur's zero padding would dim a bias added before it)."""
        batch, in_ch, height, width = x.shape
        out_ch = wb.shape[1]
        wt = wb.transpose(1, 2).reshape(batch * in_ch, out_ch, 3, 3)  # conv_transpose2d layout (groups·in, out, k, k)
        y = F.conv_transpose2d(x.reshape(1, batch * in_ch, height, width), wt, stride=2, groups=batch)
        y = blur_after_transposed_conv(y, kernel)
        y = y.reshape(batch, out_ch, y.shape[2], y.shape[3])
        if bias is None:
            return y
        grad = torch.is_grad_enabled() and y.requires_grad
        return y + bias[None, :, None, None] if grad else y.add_(bias[None, :, None, None])

    def add_noise_(self, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """y += n in place (n broadcast over the batch and channels)."""
        return y.add_(n)

    def upsample2x(self, img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """2x FIR upsampling of the skip branch (rosinality ``Upsample``: kernel·4, pad (2, 1))."""
        return upsample2x(img, kernel)

    def channels_last(self, device: torch.device, grad: str | None = None) -> bool:
        """Whether maps run channels-last when the generator's own setting is None. ``grad``: what the pass
        differentiates (None: nothing; "x": the maps through the latent alone, the weights frozen, as the W and W+
        projectors; "w": weights too, or a per-image weight folded from what is differentiated, as PTI, the
        overparameterized latent and training)."""
        return False

    def images_per_pass(self, x: torch.Tensor) -> int:
        """How many images of a batch (latents x) one synthesis pass without gradients renders; 0: all at once."""
        return 0

    def batch_in_passes(self) -> contextlib.AbstractContextManager:
        """The scope of one batch rendered in several passes (what depends on the weights alone may be kept across
        its passes)."""
        return contextlib.nullcontext()


REFERENCE_OPS = Ops()
