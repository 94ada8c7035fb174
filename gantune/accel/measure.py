"""Choices measured on the machine that runs them: which 3x3 convolution shapes run faster by Winograd than directly.

The rule in :func:`gantune.accel.winograd.tile_size` was measured on one CPU kind. ``make bench`` (section ``paths``)
times, for the layer shapes of the generator, the hypernetwork and the encoders, the direct oneDNN convolution
against Winograd F(2x2) and F(4x4) (their weight transform included, as every call pays it), and writes the fastest
per shape into ``$GANTUNE_HOME/accel/<machine>.json``, keyed by the CPU model, its vector flags, the torch version and
the thread count. :func:`gantune.accel.settings_for` then follows that table on this machine (shapes it does not list
keep the rule); Winograd is chosen only where it measured at least 5 % faster than the direct convolution. Deleting
the file returns to the rule; editing it pins a choice.
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from ..io.atomic import atomic_write
from . import winograd
from .machine import choices_path, cpu_model, machine_key

# (input channels, map side) of the 3x3 stride-1 layers where the rule's answer may be wrong on some CPU
SHAPES = ((512, 16), (512, 32), (512, 64), (256, 16), (256, 32), (256, 64), (256, 128), (128, 32), (128, 64),
          (128, 128), (128, 256), (64, 64), (64, 128), (64, 256))
MARGIN = 0.95  # Winograd must take at most this fraction of the direct convolution's time


def _best_of(fn, reps: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_shape(in_ch: int, side: int, reps: int = 3) -> dict[int, float]:
    """Seconds of one batch-1 channels-last float32 3x3 convolution (in_ch -> in_ch) by tile: 0 direct, 2, 4."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, in_ch, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(in_ch, in_ch, 3, 3, generator=g)
    out = {0: _best_of(lambda: F.conv2d(x, w.contiguous(memory_format=torch.channels_last), padding=1), reps)}
    with torch.no_grad():
        for m in (2, 4):
            if side % m == 0:
                out[m] = _best_of(lambda m=m: winograd.conv3x3(x, winograd.transform_weight(w, m)), reps)
    return out


def measure(shapes=SHAPES, reps: int = 3) -> dict:
    """Times every shape and picks its tile (0: direct); the content of the choices file."""
    rows = []
    for in_ch, side in shapes:
        t = time_shape(in_ch, side, reps)
        m = min((k for k in t if k), key=lambda k: t[k], default=0)
        rows.append({"in_ch": in_ch, "side": side, "tile": m if m and t[m] <= MARGIN * t[0] else 0,
                     "ms": {str(k): round(v * 1e3, 3) for k, v in t.items()}})
    model, flags = cpu_model()
    return {"machine": machine_key(), "cpu": model, "flags": flags, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "measured": date.today().isoformat(), "winograd": rows}


def save(choices: dict, path: Path | None = None) -> Path:
    path = path or choices_path()
    with atomic_write(path, "w") as f:
        json.dump(choices, f, indent=1)
    return path
