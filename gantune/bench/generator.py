"""The bench runner, this machine's convolution rate, and the generator section (see :mod:`gantune.bench`)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import resource
import time

import torch
import torch.nn.functional as F

from ..accel import accelerate
from ..accel.machine import CPU_FLAGS, cpu_model
from ..core import Generator, GeneratorConfig, layer_specs
from ..process import wait_settings


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, *, min_time: float = 1.0, max_reps: int = 20, warmup: int = 1) -> float:
    """Median-free simple timing: warm up, then repeat until ``min_time`` seconds; returns seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        sync(device)
        el = time.perf_counter() - t0
        if el >= min_time or reps >= max_reps:
            return el / reps


def conv_rate(dtype: torch.dtype, device: torch.device, *, channels: int = 512, size: int = 64) -> float:
    """Measured FLOP/s of one 3x3 conv (channels -> channels, size², batch 1, channels-last) in ``dtype``."""
    x = torch.randn(1, channels, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
        for _ in range(5):  # best of 5: the machine's rate, not its momentary load
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * channels * channels * 9 * size * size / best


def generator_flops(cfg: GeneratorConfig, batch: int) -> float:
    """FLOPs of the modulated convolutions (2 per multiply-add); mapping, blur, bias and noise are left out (<2%)."""
    total = 0
    for s in layer_specs(cfg):
        in_pixels = (s.res // s.up) ** 2  # a stride-2 transposed conv does k² MACs per *input* pixel
        total += 2 * s.out_ch * s.in_ch * s.kernel**2 * in_pixels
    return float(total * batch)


def bench_generator(device: torch.device, resolutions=(256, 1024), batches=(1, 4), quick: bool = False) -> list[str]:
    lines = []
    rates = {}
    for dt in (torch.float32, torch.bfloat16):
        rates[dt] = conv_rate(dt, device)
        lines.append(f"machine conv rate ({device.type}, {str(dt)[6:]}, 3x3 512ch 64² channels-last): {rates[dt] / 1e9:,.0f} GFLOP/s")
    slow_bf16 = rates[torch.bfloat16] < rates[torch.float32] / 3
    if slow_bf16:
        lines.append(
            f"bf16 convolutions run at {rates[torch.bfloat16] / rates[torch.float32]:.2f}x the fp32 rate on this "
            f"{device.type} (capability {torch.backends.cpu.get_cpu_capability()}: no AVX512-BF16/AMX): bf16 is timed "
            f"only at {resolutions[0]}px batch 1 (for its accuracy); use --dtype float32 here"
        )
    for res in resolutions:
        cfg = GeneratorConfig(resolution=res)
        G = accelerate(Generator(cfg).eval().to(device))
        for batch in batches:
            ws = G.map(torch.randn(batch, cfg.z_dim, device=device)).detach()
            ref = None
            dtypes = [torch.float32, torch.bfloat16]
            if slow_bf16 and (res, batch) != (resolutions[0], batches[0]):
                dtypes = [torch.float32]
            for dt in dtypes:
                for cl in ((True,) if quick or (dt == torch.bfloat16 and slow_bf16) else (False, True)):
                    G.set_precision(dt, channels_last=cl)
                    with torch.no_grad():
                        reps = 1 if (dt == torch.bfloat16 and slow_bf16) else 10
                        t = timeit(lambda: G.synthesis(ws), device, min_time=0.5 if quick else 2.0, max_reps=reps,
                                   warmup=0 if reps == 1 else 1)
                        img = G.synthesis(ws)
                    if dt == torch.float32 and ref is None:
                        ref = img
                    diff = "" if dt == torch.float32 else (
                        f", vs fp32: max|d| {(img - ref).abs().max().item():.3f} mean|d| {(img - ref).abs().mean().item():.4f}"
                        f" (image std {ref.std().item():.2f})")
                    gf = generator_flops(cfg, batch) / t
                    lines.append(
                        f"generator {res}px batch {batch} {str(dt)[6:]:8s} {'NHWC' if cl else 'NCHW'}: "
                        f"{batch / t:6.2f} img/s, {t * 1000 / batch:8.1f} ms/img, {gf / 1e9:7.1f} GFLOP/s = "
                        f"{gf / rates[dt]:.2f} x conv rate{diff}"
                    )
            G.set_precision(torch.float32)
        if res == max(resolutions):
            lines += _batch_and_offsets(G, cfg, device, batches, rates[torch.float32], quick)
    lines.append(f"peak RSS {peak_rss_mb():,.0f} MB")
    return lines


def _batch_and_offsets(G, cfg, device, batches, rate: float, quick: bool) -> list[str]:
    """fp32 per-image time at each batch, plain and with per-image HyperStyle offsets on the medium and fine convs
    (the layers HyperStyle tunes): the target is that a batch costs no more per image than one image. The batches
    and kinds are timed interleaved, best of 3 rounds (1 with ``quick``): one render at 1024 px takes 2 s here, so
    timing each batch once in turn compared two single runs minutes apart (batch 4 read 1.01-1.05 that way, 0.98
    interleaved)."""
    from ..core import select_layers

    G.set_precision(torch.float32)
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for batch in batches:
        ws = G.map(torch.randn(batch, cfg.z_dim, generator=g).to(device)).detach()
        deltas = {s.name: 0.1 * torch.randn(batch, s.out_ch, s.in_ch, generator=g).to(device)
                  for s in select_layers(G.specs)}
        inputs["plain", batch] = (ws, None)
        inputs["offsets", batch] = (ws, deltas)
    per_image = {key: float("inf") for key in inputs}
    with torch.no_grad():
        for ws, d in (inputs["plain", batches[0]], inputs["offsets", batches[0]]):
            G.synthesis(ws, deltas=d)  # warm-up: first-call allocations and kernel selection
        for _ in range(1 if quick else 3):
            for key, (ws, d) in inputs.items():
                sync(device)
                t0 = time.perf_counter()
                G.synthesis(ws, deltas=d)
                sync(device)
                per_image[key] = min(per_image[key], (time.perf_counter() - t0) / key[1])
    lines = []
    for (kind, batch), t in per_image.items():
        lines.append(f"generator {cfg.resolution}px batch {batch} fp32 {kind:8s}: {t * 1000:8.1f} ms/img = "
                     f"{generator_flops(cfg, 1) / t / rate:.2f} x conv rate (target >= 0.6)")
    b0 = batches[0]
    for kind in ("plain", "offsets"):
        ratios = ", ".join(f"batch {b}: {per_image[kind, b] / per_image[kind, b0]:.2f}" for b in batches[1:])
        lines.append(f"per-image time against batch {b0}, {kind}: {ratios} (target <= 1.0; interleaved, best of "
                     f"{1 if quick else 3})")
    return lines


SECTIONS = {
    # section name -> (module, function) provided by each method's own bench; "paths" first: it measures this
    # machine's convolution choices, which the later sections then use
    "paths": ("gantune.bench.paths", "bench_paths"),
    "hyper": ("gantune.bench.hyper", "bench_hyper"),
    "optim": ("gantune.bench.optim", "bench_optim"),
    "align": ("gantune.bench.align", "bench_align"),
    "loading": ("gantune.bench.loading", "bench_loading"),
    "memory": ("gantune.bench.memory", "bench_memory"),
    "gpu": ("gantune.bench.gpu", "bench_gpu"),
    "threads": ("gantune.bench.threads", "bench_threads"),
}


def cpu_description() -> str:
    """The CPU model and the vector flags that decide which kernels run (from /proc/cpuinfo), and torch's own
    reading of the capability."""
    model, have = cpu_model()
    flags = " ".join(have) or "none of " + "/".join(CPU_FLAGS)
    return f"{model} [{flags}; torch capability {torch.backends.cpu.get_cpu_capability()}]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    ap.add_argument("--only", default="", help="comma list of sections: generator," + ",".join(SECTIONS))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    from ..runtime import resolve_device

    device = resolve_device(args.device)
    only = {s for s in args.only.split(",") if s}
    print(f"gantune bench: {cpu_description()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (waiting: {wait_settings()}), "
          f"device {device}")
    if not only or "generator" in only:
        print("== generator forward")
        res = (256,) if args.quick else (256, 1024)
        for line in bench_generator(device, resolutions=res, quick=args.quick):
            print("  " + line, flush=True)
    for name, (mod, fn) in SECTIONS.items():
        if only and name not in only:
            continue
        print(f"== {name}")
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            print(f"  (not available: {e})")
            continue
        func = getattr(module, fn)
        params = inspect.signature(func).parameters
        offered = (("device", device), ("quick", args.quick), ("resolution", 256 if args.quick else 1024))
        kwargs = {k: v for k, v in offered if k in params}
        for line in func(**kwargs):
            print("  " + line, flush=True)


