"""``make bench`` section ``paths``: this machine's Winograd and upsampling choices measured and written to
``$GANTUNE_HOME/accel/`` (:mod:`gantune.accel.measure`), then a 1024 px render timed with every convolution direct,
with the built-in rule, and with the measured table (float32; bfloat16 rule and table where the CPU has bf16), and
the projectors' forward and backward pass the same three ways (the table measured with gradients)."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..accel import accelerate, settings_for
from ..accel.machine import Choices, parse_choices
from ..accel.measure import GRAD_LAYOUT_RESOLUTION, measure, save
from ..core import Generator, GeneratorConfig
from ..runtime import native_bf16_cpu
from .generator import timeit


def _render_times(resolution: int, choices: Choices, quick: bool) -> dict[str, float]:
    """Seconds of one batch-1 render: float32 with direct convolutions only, the rule, the measured table; bfloat16
    (where the CPU has it) by the rule and the table."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution)).eval()
    ws = G.map(torch.randn(1, G.cfg.z_dim))
    variants = {}
    for dtype in (torch.float32, torch.bfloat16) if native_bf16_cpu() else (torch.float32,):
        rule = settings_for("cpu", dtype).by_rule()
        name = "fp32" if dtype == torch.float32 else "bf16"
        if dtype == torch.float32:
            variants["fp32 direct"] = (dtype, replace(rule, winograd=False))
        variants[f"{name} rule"] = (dtype, rule)
        variants[f"{name} measured"] = (dtype, replace(rule, winograd_tiles=choices.tiles,
                                                       upconv_forms=choices.upconv))
    out = {}
    with torch.no_grad():
        for _ in range(1 if quick else 2):  # interleaved rounds, best of each
            for name, (dtype, settings) in variants.items():
                accelerate(G, settings).set_precision(dtype)
                t = timeit(lambda: G.synthesis(ws), torch.device("cpu"), min_time=0.5 if quick else 2.0)
                out[name] = min(out.get(name, t), t)
    return out


def bench_paths(device: torch.device, quick: bool = False, resolution: int = 1024) -> list[str]:
    if device.type != "cpu":
        return ["(CPU only)"]
    choices = measure(reps=1 if quick else 3)
    path = save(choices)
    settings_for.cache_clear()  # the later sections use the table
    lines = [f"machine {choices['machine']} ({choices['cpu']}, {' '.join(choices['flags'])}, torch {choices['torch']}, "
             f"{choices['threads']} threads): written to {path}"]
    lines += [_tile_line(r, "") for r in choices["winograd"]]
    lines += [_tile_line(r, f" with gradients ({GRAD_NAMES[r['grad']]})") for r in choices["winograd_grad"]]
    for r in choices["grad_layout"]:
        lines.append(f"generator {GRAD_LAYOUT_RESOLUTION} px forward and backward, gradients of the "
                     f"{GRAD_NAMES[r['grad']]}: NCHW {r['ms']['nchw']:.0f}, channels-last {r['ms']['channels_last']:.0f} "
                     f"ms -> {r['layout']}")
    for key, what in (("upconv", ""), ("upconv_grad", " with gradients (input and weight)")):
        lines += [f"upsampling {r['dtype']} {r['in_ch']}->{r['out_ch']} ch {r['side']}²{what}: phases "
                  f"{r['ms']['phases']:.2f}, transposed {r['ms']['transposed']:.2f} ms -> {r['form']}"
                  for r in choices[key]]
    measured = parse_choices(choices)
    res = 256 if quick else resolution
    t = _render_times(res, measured, quick)
    lines.append(f"generator {res} px batch 1 fp32: direct {t['fp32 direct'] * 1e3:.0f} ms, rule "
                 f"{t['fp32 rule'] * 1e3:.0f} ms, measured {t['fp32 measured'] * 1e3:.0f} ms "
                 f"(measured / direct {t['fp32 measured'] / t['fp32 direct']:.2f}; target <= 1)")
    if "bf16 rule" in t:
        lines.append(f"generator {res} px batch 1 bf16: rule {t['bf16 rule'] * 1e3:.0f} ms, measured "
                     f"{t['bf16 measured'] * 1e3:.0f} ms (measured / rule {t['bf16 measured'] / t['bf16 rule']:.2f})")
    g = _grad_times(res, measured, quick)
    lines.append(f"generator {res} px batch 1, forward and backward through W+ (the projectors' pass): direct "
                 f"{g['direct'] * 1e3:.0f} ms, rule {g['rule'] * 1e3:.0f} ms, measured {g['measured'] * 1e3:.0f} ms "
                 f"(measured / direct {g['measured'] / g['direct']:.2f}; target <= 1)")
    return lines


def _tile_line(row: dict, what: str) -> str:
    """One measured Winograd row: its times by tile and the choice."""
    ms = ", ".join(f"{'direct' if k == '0' else f'F({k}x{k})'} {v:.2f}" for k, v in row["ms"].items())
    pick = "direct" if not row["tile"] else f"F({row['tile']}x{row['tile']})"
    return f"3x3 {row['in_ch']} ch {row['side']}²{what}: {ms} ms -> {pick}"


GRAD_NAMES = {"x": "input", "w": "input and weight"}  # what a mode differentiates, in a convolution's terms


def _grad_times(resolution: int, choices: Choices, quick: bool) -> dict[str, float]:
    """Seconds of one batch-1 float32 forward and backward pass of a frozen generator differentiated through its W+
    latent (the projectors' pass): every convolution direct, the rule (NCHW), the choices measured with gradients
    (Winograd rows and layout)."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution)).eval().requires_grad_(False)
    ws = G.map(torch.randn(1, G.cfg.z_dim)).detach().requires_grad_(True)
    rule = settings_for("cpu").by_rule()
    variants = {"direct": replace(rule, winograd=False), "rule": rule,
                "measured": replace(rule, winograd_grad_tiles=choices.grad_tiles,
                                    grad_channels_last=choices.grad_channels_last)}

    def step():
        ws.grad = None
        G.synthesis(ws).square().mean().backward()

    out = {}
    for _ in range(1 if quick else 3):  # interleaved rounds, best of each
        for name, settings in variants.items():
            accelerate(G, settings)
            t = timeit(step, torch.device("cpu"), min_time=0.5 if quick else 2.0)
            out[name] = min(out.get(name, t), t)
    return out
