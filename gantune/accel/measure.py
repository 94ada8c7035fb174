"""Choices measured on the machine that runs them: which 3x3 convolution shapes run faster by Winograd than directly,
and which form the folded path's upsampling convolution takes (four phase convolutions or one transposed one).

The rule in :func:`gantune.accel.winograd.tile_size` was measured on one CPU kind. ``make bench`` (section ``paths``)
times, for the layer shapes of the generator, the hypernetwork and the encoders, the direct oneDNN convolution
against Winograd F(2x2) and F(4x4) (their weight transform included, as every call pays it), and writes the fastest
per shape into ``$GANTUNE_HOME/accel/<machine>.json``, keyed by the CPU model, its vector flags, the torch version and
the thread count. :func:`gantune.accel.settings_for` then follows that table on this machine (shapes it does not list
keep the rule); Winograd is chosen only where it measured at least 5 % faster than the direct convolution. Deleting
the file returns to the rule; editing it pins a choice. The upsampling form is timed per dtype (float32, and
bfloat16 where the CPU has it in hardware) for the generator's upsampling layers; the transposed convolution is
chosen where it took at most 0.95 of the phases' time.

Passes that record gradients are timed apart (forward and backward), because Winograd's backward (the overlapping
tiles' gradients summed, the transposed products) shifts the balance: on an AMX Xeon, 128 channels at 128² took
12.0 ms by F(4x4) against 14.6 ms direct without gradients, but 56.4 against 29.7 ms with the input's gradient.
Mode "x": only the input is differentiated (the projectors' frozen generator); mode "w": the weight too (PTI, the
overparameterized latent).
The folded path's upsampling form is timed again forward and backward (mode "w", float32, NCHW): with
gradients the transposed convolution won where the phases won without them (AMX Xeon, 128 -> 64 channels at 256²:
85 against 153 ms). Each mode's layout, NCHW or channels-last, is chosen from a whole 256 px generator pass timed
both ways (on the AMX
Xeon channels-last made the projectors' pass faster and PTI's slower; on the AVX2 EPYC oneDNN's weight gradient ran
at half its NCHW rate channels-last).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core import Generator, GeneratorConfig
from ..io.atomic import atomic_write
from ..runtime import native_bf16_cpu
from . import winograd
from .folded import transposed_conv_phases
from .machine import choices_path, cpu_model, machine_key, parse_choices
from .ops import AcceleratedOps
from .settings import settings_for

# (input channels, map side) of the 3x3 stride-1 layers where the rule's answer may be wrong on some CPU
SHAPES = ((512, 16), (512, 32), (512, 64), (256, 16), (256, 32), (256, 64), (256, 128), (128, 32), (128, 64),
          (128, 128), (128, 256), (64, 64), (64, 128), (64, 256))
# (input channels, output channels, input side) of a 1024 px generator's upsampling layers on the folded path
UPCONV_SHAPES = ((512, 512, 8), (512, 512, 16), (512, 512, 32), (512, 256, 64), (256, 128, 128), (128, 64, 256),
                 (64, 32, 512))
# (input channels, map side) of the generators' 3x3 layers timed with gradients (the projectors, PTI): 1024 px
# config-f and the 256 px layout
GRAD_SHAPES = ((512, 16), (512, 32), (512, 64), (256, 64), (256, 128), (128, 128), (128, 256))
GRAD_MODES = ("x", "w")  # what a pass differentiates: the input only, or the weight too
GRAD_LAYOUT_RESOLUTION = 256  # the generator whose passes with gradients are timed in both layouts
MARGIN = 0.95  # the other path must take at most this fraction of the default's time


def _best_of(fn, reps: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_shape(in_ch: int, side: int, reps: int = 3, grad: str | None = None) -> dict[int, float]:
    """Seconds of one batch-1 float32 3x3 convolution (in_ch -> in_ch) by tile: 0 direct, 2, 4. ``grad``: None (no
    autograd; channels-last maps, as inference runs), "x" (forward and backward, the input differentiated) or "w"
    (input and weight; NCHW maps, as passes with gradients run on CPU)."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if grad is None else torch.contiguous_format
    x = torch.randn(1, in_ch, side, side, generator=g).contiguous(memory_format=fmt)
    w = torch.randn(in_ch, in_ch, 3, 3, generator=g)
    gy = None if grad is None else torch.randn(x.shape, generator=g).contiguous(memory_format=fmt)
    x.requires_grad_(grad is not None)
    w.requires_grad_(grad == "w")
    out = {0: _best_of(lambda: _pass(lambda: F.conv2d(x, w.contiguous(memory_format=fmt), padding=1), gy), reps)}
    for m in (2, 4):
        if side % m == 0:
            out[m] = _best_of(lambda m=m: _pass(lambda: winograd.conv3x3(x, winograd.transform_weight(w, m)), gy),
                              reps)
    return out


def _pass(conv, gy: torch.Tensor | None) -> None:
    """conv() without autograd, or forward and backward with the output's gradient ``gy``."""
    if gy is None:
        with torch.no_grad():
            conv()
    else:
        conv().backward(gy)


def _tile_row(in_ch: int, side: int, t: dict[int, float]) -> dict:
    """The fastest tile of one shape's times, Winograd only where it took at most MARGIN of the direct time."""
    m = min((k for k in t if k), key=lambda k: t[k], default=0)
    return {"in_ch": in_ch, "side": side, "tile": m if m and t[m] <= MARGIN * t[0] else 0,
            "ms": {str(k): round(v * 1e3, 3) for k, v in t.items()}}


def time_upconv(in_ch: int, out_ch: int, side: int, dtype: torch.dtype, reps: int = 3,
                grad: bool = False) -> dict[str, float]:
    """Seconds of one image's stride-2 3x3 transposed convolution (channels-last, the folded path's weight layout
    made on each call as there) by form: "phases" and "transposed". ``grad``: forward and backward with the input
    and the weight differentiated, on NCHW maps (as the folded path's passes with gradients, PTI's)."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.contiguous_format if grad else torch.channels_last
    x = torch.randn(1, in_ch, side, side, generator=g).to(dtype).contiguous(memory_format=fmt).requires_grad_(grad)
    w = torch.randn(out_ch, in_ch, 3, 3, generator=g).to(dtype).requires_grad_(grad)
    gy = torch.randn(1, out_ch, 2 * side + 1, 2 * side + 1, generator=g).to(dtype) if grad else None
    return {"phases": _best_of(lambda: _pass(lambda: transposed_conv_phases(x, w.contiguous(memory_format=fmt)), gy),
                               reps),
            "transposed": _best_of(lambda: _pass(lambda: F.conv_transpose2d(
                x, w.transpose(0, 1).contiguous(memory_format=fmt), stride=2), gy), reps)}


def measure_upconv(shapes=UPCONV_SHAPES, reps: int = 3, grad: bool = False) -> list[dict]:
    """The upsampling form per (dtype, shape): float32, and bfloat16 where the CPU computes it in hardware (without
    gradients; with them, ``grad``, float32 only: passes with gradients run in float32)."""
    rows = []
    dtypes = (torch.float32, torch.bfloat16) if native_bf16_cpu() and not grad else (torch.float32,)
    for dtype in dtypes:
        for in_ch, out_ch, side in shapes:
            t = time_upconv(in_ch, out_ch, side, dtype, reps, grad)
            form = "transposed" if t["transposed"] <= MARGIN * t["phases"] else "phases"
            rows.append({"dtype": str(dtype).removeprefix("torch."), "in_ch": in_ch, "out_ch": out_ch, "side": side,
                         "form": form, "ms": {k: round(v * 1e3, 3) for k, v in t.items()}})
    return rows


def time_grad_layouts(mode: str, grad_tiles, upconv_grad=(), resolution: int = GRAD_LAYOUT_RESOLUTION,
                      reps: int = 3) -> dict[str, float]:
    """Seconds of one batch-1 forward and backward pass of a generator (official channel widths) differentiated
    as ``mode`` says ("x": through its W+ latent, weights frozen; "w": its weights), NCHW against channels-last maps,
    interleaved, best of ``reps``; the Winograd rows ``grad_tiles`` and upsampling forms ``upconv_grad`` measured
    with gradients apply as they will."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution)).eval().requires_grad_(mode == "w")
    G.synthesis.ops = AcceleratedOps(replace(settings_for("cpu"), winograd_grad_tiles=tuple(grad_tiles),
                                             upconv_grad_forms=tuple(upconv_grad)))
    ws = G.map(torch.randn(1, G.cfg.z_dim)).detach().requires_grad_(mode == "x")

    def step():
        G.zero_grad(set_to_none=True)
        ws.grad = None
        G.synthesis(ws).square().mean().backward()

    best = {"nchw": float("inf"), "channels_last": float("inf")}
    for r in range(reps + 1):  # the first round warms up both
        for layout in best:
            G.synthesis.channels_last = layout == "channels_last"
            t0 = time.perf_counter()
            step()
            if r:
                best[layout] = min(best[layout], time.perf_counter() - t0)
    return best


def measure_grad_layouts(grad_tiles, upconv_grad=(), reps: int = 3) -> list[dict]:
    """Per gradient mode, the layout of its passes: channels-last only where it took at most MARGIN of NCHW's time."""
    rows = []
    for mode in GRAD_MODES:
        t = time_grad_layouts(mode, grad_tiles, upconv_grad, reps=reps)
        layout = "channels_last" if t["channels_last"] <= MARGIN * t["nchw"] else "nchw"
        rows.append({"grad": mode, "layout": layout, "ms": {k: round(v * 1e3, 1) for k, v in t.items()}})
    return rows


def measure(shapes=SHAPES, reps: int = 3, upconv_shapes=UPCONV_SHAPES, grad_shapes=GRAD_SHAPES,
            grad_layouts: bool = True) -> dict:
    """Times every shape and picks its tile (0: direct) without and with gradients, and the upsampling form; the
    content of the choices file."""
    rows = [_tile_row(in_ch, side, time_shape(in_ch, side, reps)) for in_ch, side in shapes]
    grad_rows = [{"grad": mode, **_tile_row(in_ch, side, time_shape(in_ch, side, reps, mode))}
                 for mode in GRAD_MODES for in_ch, side in grad_shapes]
    up_grad = measure_upconv(upconv_shapes, reps, grad=True)
    with_grad = parse_choices({"winograd_grad": grad_rows, "upconv_grad": up_grad})
    model, flags = cpu_model()
    return {"machine": machine_key(), "cpu": model, "flags": flags, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "measured": date.today().isoformat(), "winograd": rows,
            "winograd_grad": grad_rows, "upconv": measure_upconv(upconv_shapes, reps), "upconv_grad": up_grad,
            "grad_layout": (measure_grad_layouts(with_grad.grad_tiles, with_grad.upconv_grad, reps)
                            if grad_layouts else [])}


def save(choices: dict, path: Path | None = None) -> Path:
    path = path or choices_path()
    with atomic_write(path, "w") as f:
        json.dump(choices, f, indent=1)
    return path
