"""``make bench`` section ``paths``: this machine's Winograd choices measured and written to
``$GANTUNE_HOME/accel/`` (:mod:`gantune.accel.measure`), then a 1024 px render timed with every convolution direct,
with the built-in rule, and with the measured table."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..accel import accelerate, settings_for
from ..accel.measure import measure, save
from ..core import Generator, GeneratorConfig
from .generator import timeit


def _render_times(resolution: int, table, quick: bool) -> dict[str, float]:
    """Seconds of one batch-1 float32 render: direct convolutions only, the rule, the measured table."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution)).eval()
    ws = G.map(torch.randn(1, G.cfg.z_dim))
    cpu = replace(settings_for("cpu"), winograd_tiles=())
    variants = {"direct": replace(cpu, winograd=False), "rule": cpu, "measured": replace(cpu, winograd_tiles=table)}
    out = {}
    with torch.no_grad():
        for _ in range(1 if quick else 2):  # interleaved rounds, best of each
            for name, settings in variants.items():
                accelerate(G, settings)
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
    for r in choices["winograd"]:
        ms = ", ".join(f"{'direct' if k == '0' else f'F({k}x{k})'} {v:.2f}" for k, v in r["ms"].items())
        pick = "direct" if not r["tile"] else f"F({r['tile']}x{r['tile']})"
        lines.append(f"3x3 {r['in_ch']} ch {r['side']}²: {ms} ms -> {pick}")
    table = tuple((r["in_ch"], r["side"], r["tile"]) for r in choices["winograd"])
    t = _render_times(256 if quick else resolution, table, quick)
    lines.append(f"generator {256 if quick else resolution} px batch 1 fp32: direct {t['direct'] * 1e3:.0f} ms, rule "
                 f"{t['rule'] * 1e3:.0f} ms, measured {t['measured'] * 1e3:.0f} ms "
                 f"(measured / direct {t['measured'] / t['direct']:.2f}; target <= 1)")
    return lines
