"""GPU checks (marked ``gpu``; skipped without CUDA): the official-layout parity tests on CUDA with TF32 off
(max |Δ| ≤ 1e-4 against the CPU), and every command that takes ``--device`` once with ``--device cuda`` (``align`` runs
dlib on the CPU and takes none)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_keys

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    err = (a.float().cpu() - b.float().cpu()).abs().max().item()
    assert err <= tol, f"max |Δ| {err:.3g} > {tol}"


def test_official_rosinality_1024_generator_matches_cpu(tmp_path):
    from support import random_rosinality

    from gantune.weights.rosinality import load_rosinality

    layout = [(k, s) for k, s, _ in read_keys("keys_rosinality_G1024.tsv")]
    torch.save({"g_ema": random_rosinality(layout, seed=1), "latent_avg": torch.randn(512)}, tmp_path / "g.pt")
    G_cpu, _ = load_rosinality(tmp_path / "g.pt")
    G_gpu, _ = load_rosinality(tmp_path / "g.pt")
    G_cpu.eval().set_precision(torch.float32, channels_last=False)
    G_gpu = G_gpu.eval().to("cuda")
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = G_cpu.synthesis(G_cpu.map(z), noise_mode="const")
        b = G_gpu.synthesis(G_gpu.map(z.cuda()), noise_mode="const")
    _close(b, a, 1e-4 * (1 + a.abs().max().item()))


def test_hyperstyle_offsets_match_cpu(tiny_G):
    """Per-image offsets through the grouped path on CUDA equal the CPU render."""
    G = tiny_G
    spec = next(s for s in G.specs if s.kind == "conv" and s.res == 16)
    g = torch.Generator().manual_seed(2)
    ws = torch.randn(3, G.num_ws, G.cfg.w_dim, generator=g)
    deltas = {spec.name: 0.2 * torch.randn(3, spec.out_ch, spec.in_ch, generator=g)}
    with torch.no_grad():
        a = G.synthesis(ws, deltas=deltas, noise_mode="const")
        Gc = G.to("cuda")
        b = Gc.synthesis(ws.cuda(), deltas={k: v.cuda() for k, v in deltas.items()}, noise_mode="const")
    _close(b, a)


def test_phase_upsampling_on_cuda_matches_cpu(tiny_G, monkeypatch):
    """The phase-kernel upsampling (CUDA's path from batch 4 in half precision) forced on at float32, TF32 off: a
    batch-4 render with per-image offsets equals the CPU's transposed-conv render."""
    from dataclasses import replace

    from gantune.accel import accelerate, settings_for

    G = accelerate(tiny_G)
    g = torch.Generator().manual_seed(8)
    ws = G.map(torch.randn(4, G.cfg.z_dim, generator=g))
    deltas = {s.name: 0.2 * torch.randn(4, s.out_ch, s.in_ch, generator=g) for s in G.specs if s.kind == "conv"}
    with torch.no_grad():
        a = G.synthesis(ws, deltas=deltas, noise_mode="const")
        Gc = accelerate(G.to("cuda"), replace(settings_for("cuda"), upsample="phases"))
        b = Gc.synthesis(ws.cuda(), deltas={k: v.cuda() for k, v in deltas.items()}, noise_mode="const")
        plain = Gc.synthesis(ws.cuda(), noise_mode="const")
        accelerate(G.to("cpu"))
        plain_ref = G.synthesis(ws, noise_mode="const")
    _close(b, a, 1e-4 * (1 + a.abs().max().item()))
    _close(plain, plain_ref, 1e-4 * (1 + plain_ref.abs().max().item()))


def test_hyperstyle_refine_with_shared_heads_matches_cpu():
    """A 5-pass inversion with shared and per-channel heads on CUDA (batched shared-offset GEMM, phase upsampling,
    in-place activations) gives the CPU's images and offsets."""
    from support import TINY64, tiny_generator

    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.inference import refine
    from gantune.methods.hyper.wencoder import WEncoder

    G = tiny_generator(3, **TINY64)
    hn = HyperNetwork.from_specs(G.specs, width=16, input_size=64).eval()
    with torch.no_grad():
        hn.shared_fc.w1.mul_(0.5)
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    assert any(lyr.head == "shared" for lyr in hn.layers)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        a = refine(x, G=G, hypernet=hn, w_encoder=enc, iters=5)
        G, hn, enc = G.to("cuda"), hn.to("cuda"), enc.to("cuda")
        b = refine(x.cuda(), G=G, hypernet=hn, w_encoder=enc, iters=5)
    _close(b.images, a.images, 1e-3)
    for name in a.deltas:
        _close(b.deltas[name], a.deltas[name], 1e-3)


def _cli(capsys, *argv) -> tuple[int, str]:
    from gantune.cli.app import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code or 0, capsys.readouterr().err


def test_every_command_runs_on_cuda(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    cuda = ["--device", "cuda"]
    steps = [
        ("generate", "--weights", "demo-faces", "--seeds", "0-3", "-o", tmp_path / "gen", *cuda),
        ("invert", tmp_path / "face.png", "--method", "hyperstyle", "--weights", "demo-faces-hypernet", "--encoder",
         "demo-faces-w-encoder", "-o", tmp_path / "hs", *cuda),
        ("invert-optim", tmp_path / "face.png", "--weights", "demo-faces", "--steps", "5", "--loss", "l2",
         "--w-avg-samples", "100", "--tune", "--tune-steps", "3", "-o", tmp_path / "op", *cuda),
        ("invert-overparam", tmp_path / "face.png", "--weights", "demo-faces-overparam", "--steps", "5", "--loss",
         "l2", "--w-avg-samples", "100", "-o", tmp_path / "ov", *cuda),
        ("edit", tmp_path / "hs" / "face.safetensors", "-d", "demo-faces-ganspace:0", "-s", "-2,2", "-o",
         tmp_path / "ed", *cuda),
        ("adapt", tmp_path / "hs" / "face.safetensors", "--target", "demo-faces", "--layers", "all", "-o",
         tmp_path / "ad", *cuda),
        ("interpolate", tmp_path / "gen" / "seed0000.safetensors", tmp_path / "gen" / "seed0001.safetensors",
         "--frames", "3", "-o", tmp_path / "ip", *cuda),
    ]
    failed = []  # every command runs even when one fails, so one GPU session sees them all
    for argv in steps:
        code, err = _cli(capsys, *argv)
        if code != 0:
            manifest = argv[argv.index("-o") + 1] / "manifest.jsonl"
            errors = [json.loads(ln).get("error") for ln in manifest.read_text().splitlines()] if manifest.exists() else []
            failed.append(f"{argv[0]}: exit {code}: {err.strip().splitlines()[-1:]} {errors}")
    assert not failed, "\n".join(failed)
    rec_png = np.asarray(Image.open(tmp_path / "hs" / "face.png"))
    assert rec_png.shape == (64, 64, 3)  # the demo model's resolution
    lines = [json.loads(ln) for ln in (tmp_path / "op" / "manifest.jsonl").read_text().splitlines()]
    assert lines[0]["status"] == "ok" and lines[0]["metrics"]["tune_steps"] >= 1


def test_train_and_eval_run_on_cuda(tmp_path, capsys):
    """``train generator``, ``train w-encoder``, ``train hypernet`` and ``eval reconstruction`` on CUDA (tiny sizes,
    a few steps, no dlib identity network): each exits 0 and writes what the next step reads."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cuda = ["--device", "cuda"]
    code, err = _cli(capsys, "train", "generator", "--data", data, "-r", "16", "--channel-base", "128",
                     "--channel-max", "16", "--z-dim", "16", "--mapping-layers", "2", "--batch", "4", "--snap",
                     "0.004", "--kimg", "0.008", "-o", tmp_path / "g", *cuda)
    assert code == 0, err
    gpath = sorted((tmp_path / "g").glob("network-*.safetensors"))[-1]
    code, err = _cli(capsys, "train", "w-encoder", "-g", gpath, "-o", tmp_path / "enc", "--depth", "1,1,1,1",
                     "--width", "16", "--input-size", "64", "--steps", "2", "-b", "2", "--identity-loss", "off", *cuda)
    assert code == 0, err
    enc = tmp_path / "enc" / "w_encoder.pt"
    code, err = _cli(capsys, "train", "hypernet", "-g", gpath, "-e", enc, "-o", tmp_path / "hyp", "--steps", "2",
                     "--iters", "2", "-b", "2", "--width", "16", "--input-size", "64", "--identity-loss", "off", *cuda)
    assert code == 0, err
    from gantune.align.landmarks import model_path
    from gantune.errors import GantuneError

    try:  # the identity metric aligns with dlib's 68-point model (face_recognition_models, or the registry)
        model_path("dlib-landmarks-68")
    except GantuneError:
        pytest.skip("eval reconstruction needs dlib's 68-point landmark model (pip install face_recognition_models)")
    report = tmp_path / "eval.json"
    code, err = _cli(capsys, "eval", "reconstruction", "--weights", gpath, "--encoder", enc, "--hypernet",
                     tmp_path / "hyp" / "hypernet.pt", "--data", data, "--count", "2", "--steps", "2", "-o", report,
                     *cuda)
    assert code == 0, err
    text = report.read_text()
    assert "HyperStyle" in text and "nan" not in text.lower()


def test_compiled_hyperstyle_matches_eager_and_pads_the_last_batch(tmp_path, capsys):
    """``invert --compile`` (the synthesis under torch.compile, per-image convolutions one image at a time): three
    photos at --batch-size 2 give the eager run's images (float32, TF32 off), the last batch padded to two."""
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    photos = [tmp_path / f"p{i}.png" for i in range(3)]
    base = ["invert", *photos, "--method", "hyperstyle", "--weights", "demo-faces-hypernet", "--encoder",
            "demo-faces-w-encoder", "--batch-size", "2", "--device", "cuda"]
    assert _cli(capsys, *base, "-o", tmp_path / "eager")[0] == 0
    code, err = _cli(capsys, *base, "--compile", "-o", tmp_path / "compiled")
    assert code == 0, err
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "eager" / f"p{i}.png"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "compiled" / f"p{i}.png"), dtype=np.int16)
        assert np.abs(a - b).max() <= 2, (i, np.abs(a - b).max())
