"""Faster forms of the core's arithmetic, chosen in one place from an explicit :class:`Settings` object.

The core (:mod:`gantune.core`) computes with reference operations. :func:`accelerate` gives a generator (and the
Winograd-capable convolutions of the encoders and the hypernetwork, :class:`Conv2d`) the accelerated forms: the
folded per-image CPU path, Winograd 3x3 convolutions, phase upsampling, per-image convolution loops, channels-last
maps, the separable skip upsampling and the multi-tensor noise add. With ``settings=None`` each call takes
:func:`settings_for` its device and dtype (the measured choice); tests and users pass a :class:`Settings` to pin
one. Every path gives the reference's images within float rounding (tests/test_accel_paths.py and friends).
"""

from __future__ import annotations

import torch.nn as nn

from ..core.generator import SynthesisNetwork
from .ops import AcceleratedOps
from ..runtime import native_bf16_cpu
from .settings import REFERENCE, Settings, settings_for
from .winograd import Conv2d

__all__ = ["REFERENCE", "AcceleratedOps", "Conv2d", "Settings", "accelerate", "native_bf16_cpu",
           "settings_for"]


def accelerate(module: nn.Module, settings: Settings | None = None) -> nn.Module:
    """Gives every synthesis network and :class:`Conv2d` inside ``module`` the accelerated operations (``settings``:
    pinned; None: the measured choice per device and dtype, each call). Returns ``module``; changes nothing else of
    it (no weights, no process state)."""
    for m in module.modules():
        if isinstance(m, SynthesisNetwork):
            m.ops = AcceleratedOps(settings)
        elif isinstance(m, Conv2d):
            m.settings = settings
    return module
