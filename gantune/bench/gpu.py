"""``make bench`` section ``gpu``: the generator and HyperStyle on a CUDA device, per precision and batch.

For each precision (fp32, TF32, bf16, fp16) and batch (1, 8, 32): milliseconds per image of a 1024 px generator
render and of a 5-iteration HyperStyle inversion (random models with the official layout and sizes), the peak GPU
memory of that run, and the image difference against fp32 (first image of the batch). Then bf16 with the upsampling
layers as phase kernels against the transposed convolution (batch 1, 4 and the largest), bf16 channels-last
against NCHW at the largest batch, and, once, the generator and HyperStyle with the synthesis under ``torch.compile``
(``--compile``; its compile time reported apart). Without CUDA it says so and returns; ``tiny=True`` runs
the same code on any device with small models (what the CPU tests use).
"""

from __future__ import annotations

import time

import torch

PRECISIONS = {  # name -> (compute dtype, TF32 matmuls and convolutions)
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}


def _set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _time(fn, device: torch.device, reps: int) -> float:
    """Best of ``reps`` calls after one warm-up, seconds."""
    from .generator import sync

    fn()
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _peak_mib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB"


def _models(resolution: int, tiny: bool, device: torch.device):
    from ..accel import accelerate
    from ..core import Generator, GeneratorConfig
    from ..methods.hyper.hypernet import HyperNetwork
    from ..methods.hyper.wencoder import WEncoder
    from .hyper import _random_models

    if not tiny:
        G, hn, enc = _random_models(resolution, "claimed14", 0)
    else:
        torch.manual_seed(0)
        G = accelerate(Generator(GeneratorConfig(resolution=resolution, z_dim=32, w_dim=32, mapping_layers=2,
                                                 channel_base=512, channel_max=32)).eval())
        hn = HyperNetwork.from_specs(G.specs, width=16, input_size=64).eval()
        enc = WEncoder(num_ws=G.num_ws, w_dim=32, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    return G.to(device), hn.to(device), enc.to(device)


def bench_gpu(device: str | torch.device = "auto", *, resolution: int = 1024, batches=(1, 8, 32),
              precisions=tuple(PRECISIONS), iters: int = 5, reps: int = 3, compiled: bool = True,
              budget_s: float = 420.0, tiny: bool = False, upsampling_paths: bool = True,
              layouts: bool = True) -> list[str]:
    from ..methods.hyper.inference import refine
    from ..runtime import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda" and not tiny:
        return ["no CUDA device here: the GPU figures need one (run `make bench` on a GPU machine)"]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    lines = [f"gpu bench: {name}, torch {torch.__version__}, generator {resolution} px, HyperStyle {iters} iterations"]
    G, hn, enc = _models(resolution, tiny, dev)
    la = torch.zeros(G.num_ws, G.cfg.w_dim, device=dev)
    side = hn.input_size
    g = torch.Generator().manual_seed(1)
    x_all = (torch.rand(max(batches), 3, side, side, generator=g) * 2 - 1).to(dev)
    ws_all = G.map(torch.randn(max(batches), G.cfg.z_dim, generator=g).to(dev)).detach()
    refs: dict[str, torch.Tensor] = {}
    t_start = time.perf_counter()
    tf32_before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for prec in precisions:
            dtype, tf32 = PRECISIONS[prec]
            _set_tf32(tf32)
            G.set_precision(dtype)
            diff = None
            for b in batches:
                if time.perf_counter() - t_start > budget_s:
                    lines.append(f"{prec} batch {b}: skipped (over the {budget_s:.0f} s budget)")
                    continue
                ws, x = ws_all[:b], x_all[:b]
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                try:
                    with torch.no_grad():
                        t_g = _time(lambda: G.synthesis(ws), dev, reps)
                        mem_g = _peak_mib(dev)
                        if dev.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(dev)
                        t_h = _time(lambda: refine(x, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=iters,
                                                   dtype=dtype), dev, reps)
                        mem_h = _peak_mib(dev)
                        if diff is None:  # once per precision: the first image against fp32's
                            diff = _difference(prec, refs, G.synthesis(ws_all[:1]).float(),
                                               refine(x_all[:1], G=G, hypernet=hn, w_encoder=enc, latent_avg=la,
                                                      iters=iters, dtype=dtype).images.float())
                except torch.OutOfMemoryError:
                    lines.append(f"{prec} batch {b}: out of GPU memory")
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                lines.append(f"{prec} batch {b:>2}: generator {t_g * 1000 / b:8.2f} ms/img (peak {mem_g}), "
                             f"HyperStyle {t_h * 1000 / b:8.2f} ms/img (peak {mem_h}){diff or ''}")
        if upsampling_paths and time.perf_counter() - t_start < budget_s:
            lines += _upsampling_paths(G, hn, enc, la, x_all, ws_all, dev, reps, iters)
        if layouts and time.perf_counter() - t_start < budget_s:
            lines += _layouts(G, hn, enc, la, x_all, ws_all, dev, reps, iters)
        if compiled and dev.type == "cuda" and time.perf_counter() - t_start < budget_s:
            lines += _compiled(G, hn, enc, la, x_all, ws_all, dev, reps, iters)
    finally:
        _set_tf32(tf32_before[0])
        torch.backends.cudnn.allow_tf32 = tf32_before[1]
        G.set_precision(torch.float32)
    return lines


def _difference(prec: str, refs: dict, img: torch.Tensor, inv: torch.Tensor) -> str:
    """fp32 keeps its images as the references; other precisions report their difference to them."""
    if prec == "fp32":
        refs["g"], refs["h"] = img, inv
        return ""
    if "g" not in refs:
        return ""
    dg, dh = (img - refs["g"]).abs(), (inv - refs["h"]).abs()
    return (f"; vs fp32: generator max {dg.max():.3f} mean {dg.mean():.4f}, "
            f"HyperStyle max {dh.max():.3f} mean {dh.mean():.4f}")


def _upsampling_paths(G, hn, enc, la, x_all, ws_all, dev, reps: int, iters: int) -> list[str]:
    """bf16 at batch 1, 4 and the largest: the upsampling layers as phase kernels against the transposed convolution
    + depthwise blur (``gantune.accel.Settings.upsample``), generator and HyperStyle, so the "auto" rule can be
    checked."""
    from dataclasses import replace

    from ..accel import accelerate, settings_for
    from ..methods.hyper.inference import refine

    before = G.synthesis.ops
    G.set_precision(torch.bfloat16)
    out = []
    try:
        for b in sorted({1, min(4, ws_all.shape[0]), ws_all.shape[0]}):
            ws, x = ws_all[:b], x_all[:b]
            row = []
            for impl in ("phases", "transposed"):
                accelerate(G, replace(settings_for(dev.type, torch.bfloat16), upsample=impl))
                with torch.no_grad():
                    t_g = _time(lambda: G.synthesis(ws), dev, reps)
                    t_h = _time(lambda: refine(x, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=iters,
                                               dtype=torch.bfloat16), dev, reps)
                row.append(f"{impl} {t_g * 1000 / b:.2f} / {t_h * 1000 / b:.2f}")
            out.append(f"upsampling bf16 batch {b:>2} (generator / HyperStyle ms/img): " + ", ".join(row))
    finally:
        G.synthesis.ops = before
        G.set_precision(torch.float32)
    return out


def _layouts(G, hn, enc, la, x_all, ws_all, dev, reps: int, iters: int) -> list[str]:
    """bf16 at the largest batch, the synthesis maps channels-last against NCHW (``G.set_precision(channels_last=)``):
    on an H200 half of cuDNN's time in a batch-32 inversion was converting NCHW maps to NHWC and back around the
    per-image convolutions (README "On a GPU"); this measures whether keeping them NHWC pays."""
    from ..methods.hyper.inference import refine

    b = ws_all.shape[0]
    row = []
    try:
        for name, cl in (("NCHW", False), ("channels-last", True)):
            G.set_precision(torch.bfloat16, channels_last=cl)
            with torch.no_grad():
                t_g = _time(lambda: G.synthesis(ws_all), dev, reps)
                t_h = _time(lambda: refine(x_all, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=iters,
                                           dtype=torch.bfloat16), dev, reps)
            row.append(f"{name} {t_g * 1000 / b:.2f} / {t_h * 1000 / b:.2f}")
    except torch.OutOfMemoryError:
        row.append("out of GPU memory")
    finally:
        G.set_precision(torch.float32)
    return [f"layout bf16 batch {b} (generator / HyperStyle ms/img): " + ", ".join(row)]


def _compiled(G, hn, enc, la, x_all, ws_all, dev, reps: int, iters: int) -> list[str]:
    """``--compile`` (:func:`gantune.runtime.compile_synthesis`) in bf16 at the largest batch: the generator and a
    HyperStyle inversion with the synthesis compiled in place, the compile time apart; compiled mode is undone after."""
    from ..methods.hyper.inference import refine
    from ..runtime import compile_synthesis, uncompile_synthesis
    from .generator import sync

    G.set_precision(torch.bfloat16)
    b = ws_all.shape[0]
    try:
        compile_synthesis(G, dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            run = lambda: refine(x_all, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=iters,  # noqa: E731
                                 dtype=torch.bfloat16)
            run()
            sync(dev)
            t_compile = time.perf_counter() - t0
            t_h = _time(run, dev, reps)
            t_g = _time(lambda: G.synthesis(ws_all), dev, reps)  # (compiles its own graph in the warm-up call)
    except Exception as e:  # a compiler failure is a figure too, not a reason to lose the others
        return [f"--compile: failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})"]
    finally:
        uncompile_synthesis(G)  # eager again
    return [f"--compile (torch.compile synthesis), bf16 batch {b}: HyperStyle {t_h * 1000 / b:.2f} ms/img, generator "
            f"{t_g * 1000 / b:.2f} ms/img (first HyperStyle call with compilation {t_compile:.1f} s)"]


if __name__ == "__main__":  # python -m gantune.bench.gpu
    for ln in bench_gpu():
        print(ln, flush=True)
