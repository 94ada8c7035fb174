"""HyperStyle speed benchmark on random models with the official layout (no downloads).

``bench_hyper(...)`` returns report lines: seconds per image for each (iterations, batch, dtype), the difference
between the bf16 and fp32 reconstructions, the time to import an official-layout checkpoint (file -> ready model),
and the peak resident memory. ``make bench`` calls it with ``resolution=1024``; the defaults are modest so that it
finishes in a few minutes on two CPU cores.
"""

from __future__ import annotations

import copy
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..accel import accelerate, settings_for
from ..core import Generator, GeneratorConfig
from ..io.hashing import sha256_file
from ..methods.hyper.checkpoint import load_hyperstyle, write_hyperstyle_file
from ..methods.hyper.hypernet import HyperNetwork
from ..methods.hyper.inference import refine
from ..methods.hyper.method import bf16_weights
from ..runtime import bf16_in_hardware, resolve_device, resolve_dtype
from ..methods.hyper.wencoder import WEncoder


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _random_models(resolution: int, layers: str, seed: int):
    torch.manual_seed(seed)
    G = accelerate(Generator(GeneratorConfig(resolution=resolution)).eval())
    with torch.no_grad():
        for lyr in G.synthesis.layers.values():
            for m in lyr.values():
                if m.use_noise:
                    m.noise_strength.fill_(0.1)
    names = None
    if layers == "default17":  # the README set: every non-toRGB conv
        names = [s.name for s in G.specs if s.kind == "conv"]
    hn = HyperNetwork.from_specs(G.specs, names).eval()
    enc = WEncoder(num_ws=G.num_ws).eval()
    return G, hn, enc


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _through_file(G, hn, la, dev) -> tuple:
    """Write the models as an official-layout checkpoint and import it: (G, hypernet, latent_avg, report line)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "hyperstyle_bench.pt"
        t0 = time.perf_counter()
        write_hyperstyle_file(p, G, hn, la, opts={"output_size": G.cfg.resolution})
        t_save = time.perf_counter() - t0
        size = os.path.getsize(p) / 2**20
        t0 = time.perf_counter()
        model = load_hyperstyle(p, device=dev, hash_file=False)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        sha256_file(p, remember=False)
        t_hash = time.perf_counter() - t0
    line = (f"official-layout checkpoint {size:.0f} MiB: load {t_load:.2f} s (+{t_hash:.2f} s sha256 for the record), "
            f"written in {t_save:.2f} s")
    return model.G, model.hypernet, model.latent_avg, line


def _time_configs(G, nets: dict, la, x_all, dev, *, iters, batches, dtypes, budget_s) -> tuple[list, dict, dict, list]:
    """Time every (iterations, batch, dtype), cheapest first so that a time budget cuts the expensive ones:
    (report lines, seconds per image, first final image per (iterations, dtype), configurations skipped)."""
    lines, finals, seconds, skipped = [], {}, {}, []
    hn, enc = nets[torch.float32]
    t_start = time.perf_counter()
    for n_it in sorted(iters):
        for b in sorted(batches):
            for dt in dtypes:
                if budget_s is not None and time.perf_counter() - t_start > budget_s:
                    skipped.append(f"iters {n_it} batch {b} {dt}")
                    continue
                dtype = resolve_dtype(dt)
                G.set_precision(dtype)
                x = x_all[:b]
                h, e = nets.get(dtype, (hn, enc))
                # an untimed pass first: the memory of this batch and dtype is then in the process, as in a run
                # over a folder (otherwise the first configuration to need it pays its page faults)
                refine(x, G=G, hypernet=h, w_encoder=e, latent_avg=la, iters=1, dtype=dtype, own_modules=True)
                t0 = time.perf_counter()
                out = refine(x, G=G, hypernet=h, w_encoder=e, latent_avg=la, iters=n_it, dtype=dtype,
                             own_modules=True)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                dt_s = time.perf_counter() - t0
                seconds[n_it, b, dt] = dt_s / b
                t = out.timings
                line = (f"iters {n_it} batch {b} {dt:<8}: {dt_s / b:7.2f} s/image  (encode {t['encode'] / b:.2f}, "
                        f"hypernet {t['hypernet'] / b:.2f}, render {t['render'] / b:.2f})")
                finals[(n_it, dt)] = out.images[:1].float().cpu()
                ref = finals.get((n_it, "float32"))
                if dt != "float32" and ref is not None:
                    d = (out.images[:1].float().cpu() - ref).abs()
                    line += f"  |bf16-fp32| mean {d.mean():.4f} max {d.max():.3f}"
                lines.append(line)
    G.set_precision(torch.float32)
    return lines, seconds, finals, skipped


def _conv_rate_lines(G, hn, enc, la, x_all, dev, seconds, finals, *, iters, batches, compare_direct) -> list[str]:
    """CPU: the longest fp32 inversion against the time of its renders at the conv rate (and with Winograd off)."""
    from .generator import conv_rate, generator_flops

    lines = []
    rate = conv_rate(torch.float32, dev)
    t5 = seconds[max(iters), min(batches), "float32"]
    renders = (max(iters) + 1) * generator_flops(G.cfg, 1) / rate
    lines.append(f"iters {max(iters)} batch {min(batches)} fp32: {t5:.2f} s/image = {t5 / renders:.2f} x the time of "
                 f"its {max(iters) + 1} renders at the conv rate ({rate / 1e9:.0f} GFLOP/s; target <= 1.6)")
    if compare_direct:
        # the same inversion with every convolution direct (oneDNN), for the Winograd layers' share
        b = min(batches)
        for m in (G, hn, enc):
            accelerate(m, replace(settings_for(dev.type), winograd=False))
        try:
            t0 = time.perf_counter()
            out = refine(x_all[:b], G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=max(iters),
                         own_modules=True)
            t_direct = (time.perf_counter() - t0) / b
        finally:
            for m in (G, hn, enc):
                accelerate(m)
        d = (out.images[:1].float().cpu() - finals[(max(iters), "float32")]).abs()
        lines.append(f"  same with direct convolutions only (Settings(winograd=False)): {t_direct:.2f} s/image = "
                     f"{t_direct / renders:.2f} x; Winograd against direct: images differ by max {d.max():.1e} "
                     f"(mean {d.mean():.1e})")
    return lines


def bench_hyper(
    *,
    resolution: int = 256,  # generator resolution (official channel widths); make bench passes 1024
    iters: tuple[int, ...] = (1, 5),  # refinement passes to time
    batches: tuple[int, ...] = (1, 4),  # batch sizes to time
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),  # compute dtypes (bf16 is compared with fp32)
    layers: str = "claimed14",  # tuned-layer set: claimed14 (medium + fine convs) or default17 (all convs)
    device: str = "cpu",
    threads: int | None = None,  # torch threads (None: leave as is)
    load_from_file: bool = True,  # time writing + importing an official-layout .pt (≈1.4 GB at 1024 px)
    budget_s: float | None = 300.0,  # stop starting new configurations after this many seconds (None: run all)
    emulated_bf16: bool = False,  # also time bf16 where the hardware lacks it (very slow on plain AVX2 CPUs)
    compare_direct: bool = True,  # CPU: time the longest fp32 inversion again with Winograd off
    seed: int = 0,
) -> list[str]:
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    lines = [f"hyperstyle bench: {resolution}px generator, layers {layers}, device {dev}, "
             f"{torch.get_num_threads()} threads"]
    t0 = time.perf_counter()
    G, hn, enc = _random_models(resolution, layers, seed)
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone() * 0.1
    lines.append(f"random models built in {time.perf_counter() - t0:.1f} s: hypernet {_millions(hn):.1f} M "
                 f"params ({len(hn.layers)} tuned layers), W-encoder {_millions(enc):.1f} M, "
                 f"generator {_millions(G):.1f} M")
    if not emulated_bf16 and not bf16_in_hardware(dev) and any(resolve_dtype(d) == torch.bfloat16 for d in dtypes):
        dtypes = tuple(d for d in dtypes if resolve_dtype(d) != torch.bfloat16)
        lines.append(f"bfloat16 skipped: no native bf16 on this {dev.type} (emulated it is ~40x slower than fp32; "
                     "pass emulated_bf16=True to time it anyway)")
    if load_from_file:
        G, hn, la, line = _through_file(G, hn, la, dev)
        lines.append(line)
    G, hn, enc, la = G.to(dev), hn.to(dev), enc.to(dev), la.to(dev)
    g = torch.Generator().manual_seed(seed + 1)
    x_all = (torch.rand(max(batches), 3, 256, 256, generator=g) * 2 - 1).to(dev)
    nets = {torch.float32: (hn, enc)}  # the product's networks per dtype: bf16 weights where HyperStyle holds them
    if any(bf16_weights(resolve_dtype(d), dev) for d in dtypes):
        nets[torch.bfloat16] = (copy.deepcopy(hn).to(torch.bfloat16), copy.deepcopy(enc).to(torch.bfloat16))
    timed, seconds, finals, skipped = _time_configs(G, nets, la, x_all, dev, iters=iters, batches=batches,
                                                    dtypes=dtypes, budget_s=budget_s)
    lines += timed
    for b in sorted(batches):
        n = max(iters)
        if (n, b, "float32") in seconds and (n, b, "bfloat16") in seconds:
            lines.append(f"iters {n} batch {b}: bf16 {seconds[n, b, 'float32'] / seconds[n, b, 'bfloat16']:.2f} x faster "
                         "than fp32 (target >= 3 on CPUs with AMX)")
    if (max(iters), "float32") in finals and dev.type == "cpu":
        lines += _conv_rate_lines(G, hn, enc, la, x_all, dev, seconds, finals, iters=iters, batches=batches,
                                  compare_direct=compare_direct)
    if skipped:
        lines.append(f"skipped after the {budget_s:.0f} s budget: {'; '.join(skipped)}")
    lines.append(f"peak RSS of this benchmark process {_peak_rss_mb():,.0f} MiB (every model built, saved and loaded, "
                 "batches up to 4; the target for load + one 1024 px image is measured by the memory section)")
    if dev.type == "cuda":
        lines.append(f"peak CUDA memory {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
    return lines


if __name__ == "__main__":  # python -m gantune.bench.hyper [resolution]
    import sys

    for ln in bench_hyper(resolution=int(sys.argv[1]) if len(sys.argv) > 1 else 256):
        print(ln, flush=True)
