"""The GPU benchmark's code runs (tiny models, on the CPU here) and reports every precision and batch, with the
difference of each low precision against fp32; without CUDA the real section says so instead of failing."""

from __future__ import annotations

import re

import pytest
import torch

from gantune.bench.gpu import bench_gpu


def test_gpu_bench_code_path_on_tiny_models():
    lines = bench_gpu("cpu", resolution=64, batches=(1, 2), precisions=("fp32", "bf16"), iters=2, reps=1,
                      compiled=False, tiny=True)
    rows = [ln for ln in lines if re.match(r"(fp32|bf16) batch", ln)]
    assert len(rows) == 4, lines
    assert all("generator" in r and "HyperStyle" in r and "ms/img" in r for r in rows)
    assert all("vs fp32" in r for r in rows if r.startswith("bf16"))
    assert not any("vs fp32" in r for r in rows if r.startswith("fp32"))
    paths = [ln for ln in lines if ln.startswith("upsampling bf16 batch")]
    assert len(paths) == 2 and all("phases" in ln and "transposed" in ln for ln in paths), lines
    [layout] = [ln for ln in lines if ln.startswith("layout bf16 batch 2")]
    assert "NCHW" in layout and "channels-last" in layout, lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_gpu_section_without_cuda_says_so():
    [line] = bench_gpu("cpu")
    assert "no CUDA" in line


def test_compiled_line_times_the_compiled_synthesis_and_undoes_it(monkeypatch):
    """The ``--compile`` figure (CUDA only in the bench) runs here with the compiler swapped for plain in-place
    ``Module.compile`` bookkeeping: it reports HyperStyle and the generator and leaves the synthesis eager."""
    from gantune import runtime
    from gantune.bench import gpu

    calls = []
    monkeypatch.setattr(runtime, "compile_synthesis",
                        lambda G, dev: calls.append(dev) or setattr(G.synthesis, "_compiled_call_impl",
                                                                    G.synthesis._call_impl))
    dev = torch.device("cpu")
    G, hn, enc = gpu._models(64, True, dev)
    la = torch.zeros(G.num_ws, G.cfg.w_dim)
    x = torch.rand(2, 3, hn.input_size, hn.input_size) * 2 - 1
    ws = G.map(torch.randn(2, G.cfg.z_dim))
    [line] = gpu._compiled(G, hn, enc, la, x, ws, dev, 1, 1)
    assert calls == [dev] and re.match(r"--compile \(torch.compile synthesis\), bf16 batch 2: HyperStyle [\d.]+ "
                                       r"ms/img, generator [\d.]+ ms/img \(first HyperStyle call", line), line
    assert G.synthesis._compiled_call_impl is None
