"""Loading speed of the importers against a bare ``torch.load(weights_only=True)`` of the same files.

``bench_loading()`` writes official-layout files at run time (random numbers, no download): a ``hyperstyle_ffhq.pt``
(hypernetwork with the 14 published layers + 1024 px decoder + latent_avg + opts), a ``faces_w_encoder.pt``
(W-encoder + decoder) and a rosinality generator ``.pt`` (g_ema + latent_avg). It reports, each measured with the
page cache warm for both sides:

* ``ratio``: seconds for gantune to give a ready model (hashes included) / seconds of a bare ``torch.load`` of the
  same files — the target is ≤ 1.0;
* the first load (file hashes not yet remembered) and the next ones, and a memory-mapped bare load for reference.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import torch


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        del out
    return best


def _pair(a, b, reps: int) -> tuple[float, float]:
    """Best-of-``reps`` seconds of ``a`` and ``b``, run alternately so that a busy machine slows both alike."""
    ta = tb = float("inf")
    for _ in range(reps):
        ta = min(ta, _best(a, 1))
        tb = min(tb, _best(b, 1))
    return ta, tb


def _fill(module: torch.nn.Module) -> torch.nn.Module:
    """Real (CPU) storage for a module built on the meta device, filled cheaply (values do not matter for loading)."""
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.fill_(0.01)
    return module


def write_constant_files(folder: Path, resolution: int = 1024) -> dict[str, Path]:
    """Official-layout HyperStyle, W-encoder and rosinality generator files in ``folder``, every weight 0.01 (quick
    to write, and values do not matter for loading; they render nothing useful: for files that invert, see
    :func:`gantune.bench.memory.write_official_files`)."""
    from ..core import Generator, GeneratorConfig
    from ..methods.hyper.checkpoint import layers_to_tune, write_hyperstyle_file, write_w_encoder_file
    from ..methods.hyper.hypernet import HyperNetwork
    from ..methods.hyper.wencoder import WEncoder
    from ..weights.rosinality import save_rosinality

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution)).eval()
    la = G.mapping.w_avg.detach().clone()
    with torch.device("meta"):
        hn = HyperNetwork.from_specs(G.specs)
        enc = WEncoder(num_ws=G.num_ws)
    hn, enc = _fill(hn), _fill(enc)
    paths = {"hyperstyle": folder / "hyperstyle_ffhq.pt", "w-encoder": folder / "faces_w_encoder.pt",
             "generator": folder / "stylegan2-ffhq-config-f.pt"}
    write_hyperstyle_file(paths["hyperstyle"], G, hn, la[None].expand(G.num_ws, -1).clone(), opts={
        "output_size": resolution, "layers_to_tune": layers_to_tune(hn), "encoder_type": "SharedWeightsHyperNetResNet"})
    del hn
    write_w_encoder_file(paths["w-encoder"], enc, la.clone(), G=G, opts={"encoder_type": "WEncoder"})
    save_rosinality(G, paths["generator"])
    return paths


def bench_loading(*, resolution: int = 1024, quick: bool = False, reps: int | None = None) -> list[str]:
    from ..methods.hyper.method import HyperStyle
    from ..weights.download import load_generator
    from ..weights.formats import load_generator_file

    reps = reps or (2 if quick else 3)
    lines = []
    home = os.environ.get("GANTUNE_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GANTUNE_HOME"] = str(Path(tmp) / "home")  # an empty cache: first loads are really first
        try:
            t0 = time.perf_counter()
            p = write_constant_files(Path(tmp), resolution)
            sizes = {k: v.stat().st_size / 1e6 for k, v in p.items()}
            lines.append(f"official-layout files written in {time.perf_counter() - t0:.1f} s: "
                         + ", ".join(f"{k} {mb:,.0f} MB" for k, mb in sizes.items()))

            def bare(*names, mmap=False):
                return [torch.load(p[n], map_location="cpu", weights_only=True, mmap=mmap) for n in names]

            bare(*p)  # warm the page cache for both sides
            # HyperStyle + W-encoder
            t0 = time.perf_counter()
            HyperStyle.load(str(p["hyperstyle"]), str(p["w-encoder"]))
            t_first = time.perf_counter() - t0
            t_bare, t_next = _pair(lambda: bare("hyperstyle", "w-encoder"),
                                   lambda: HyperStyle.load(str(p["hyperstyle"]), str(p["w-encoder"])), reps)
            t_mmap = _best(lambda: bare("hyperstyle", "w-encoder", mmap=True), reps)
            lines.append(f"HyperStyle + W-encoder ({resolution}px): bare torch.load {t_bare:.2f} s (mmap {t_mmap:.2f} s); "
                         f"gantune first load {t_first:.2f} s (hashes computed), next loads {t_next:.2f} s")
            lines.append(f"  ratio gantune / bare torch.load: first {t_first / t_bare:.2f}, next {t_next / t_bare:.2f} "
                         f"(target <= 1.0)")
            # generator: the importer itself, and load_generator (which converts once into the cache)
            t0 = time.perf_counter()
            load_generator_file(p["generator"])
            g_first = time.perf_counter() - t0
            g_bare, g_next = _pair(lambda: bare("generator"), lambda: load_generator_file(p["generator"]), reps + 2)
            t0 = time.perf_counter()
            load_generator(str(p["generator"]), progress=False)
            g_conv = time.perf_counter() - t0
            g_bare2, g_cached = _pair(lambda: bare("generator"),
                                      lambda: load_generator(str(p["generator"]), progress=False), reps + 2)
            g_bare = min(g_bare, g_bare2)
            lines.append(f"rosinality generator ({resolution}px): bare torch.load {g_bare:.2f} s; importer first "
                         f"{g_first:.2f} s, next {g_next:.2f} s; load_generator first (converts into the cache) "
                         f"{g_conv:.2f} s, next (native copy) {g_cached:.2f} s")
            lines.append(f"  ratio gantune / bare torch.load: importer {g_next / g_bare:.2f}, load_generator "
                         f"{g_cached / g_bare:.2f} (target <= 1.0)")
        finally:
            if home is None:
                os.environ.pop("GANTUNE_HOME", None)
            else:
                os.environ["GANTUNE_HOME"] = home
    return lines


if __name__ == "__main__":
    import sys

    for line in bench_loading(resolution=int(sys.argv[1]) if len(sys.argv) > 1 else 1024):
        print(line, flush=True)
