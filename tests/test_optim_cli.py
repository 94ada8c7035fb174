"""invert-optim / invert-overparam / invert --method optim|overparam on a tiny native generator and small PNGs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gantune.cli.app import app
from gantune.io.images import load_image, pil_to_tensor, save_image, tensor_to_pil
from gantune.io.record import InversionRecord
from gantune.methods.optim import render_record


@pytest.fixture
def setup(tiny_G, tmp_path, monkeypatch):
    from gantune.methods import optim_run
    from gantune.metrics import LPIPSDistance
    from gantune.weights.native import save_native

    gpath = save_native(tiny_G, tmp_path / "g.safetensors")
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        imgs = tiny_G.synthesis(tiny_G.map(torch.randn(2, tiny_G.cfg.z_dim, generator=g))).clamp(-1, 1)
    src = tmp_path / "in"
    for i, im in enumerate(imgs):
        save_image(im, src / f"face{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    nets = {}
    monkeypatch.setattr(optim_run, "lpips_network", lambda net, device, resolution=256: nets.setdefault(
        net, LPIPSDistance("alex", allow_random=True, resolution=resolution)))
    return tiny_G, gpath, src, tmp_path / "out"


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_invert_optim_with_pti_progress_and_gif(setup):
    G, gpath, src, out = setup
    r = CliRunner().invoke(app, ["invert-optim", str(src), "--weights", str(gpath), "-o", str(out), "--space", "w+",
                                 "--steps", "3", "--w-avg-samples", "100", "--tune", "--tune-steps", "2",
                                 "--tune-rank", "2", "--tune-target", "0", "--save-intermediate", "--every", "2", "--gif",
                                 "--batch-size", "2", "--device", "cpu", "--mse", "1"])
    assert r.exit_code == 1, r.output  # the broken file fails, the others succeed
    man = {e["name"]: e for e in _lines(out / "manifest.jsonl")}
    assert man["broken"]["status"] == "failed" and man["face0"]["status"] == "ok" and man["face1"]["status"] == "ok"
    metrics = {n: e["metrics"] for n, e in man.items() if e["metrics"]}  # per-image metrics in the manifest
    assert set(metrics) == {"face0", "face1"}
    for name in ("face0", "face1"):
        m = metrics[name]
        assert m["steps"] == 3 and m["tune_steps"] == 2 and m["l2"] >= 0 and m["lpips"] >= 0 and m["seconds"] > 0
        rec = InversionRecord.load(out / f"{name}.safetensors")
        assert rec.method == "optim" and rec.latent_kind == "w+"
        assert any(k.endswith(".u") for k in rec.tuned) and any(k.endswith("noise_const") for k in rec.tuned)
        assert rec.meta["generator"]["config"] == G.cfg.to_dict()
        # the record re-renders the saved reconstruction
        saved = pil_to_tensor(load_image(out / f"{name}.png"))
        again = pil_to_tensor(tensor_to_pil(render_record(G, rec)[0]))
        assert torch.equal(saved, again)
        frames = sorted((out / "intermediate").glob(f"*/{name}.png"))
        assert len(frames) == 3  # projector steps 2 and 3 (the last), tuning step 2
        assert (out / f"{name}.gif").is_file()


def test_invert_method_overparam_and_optim(setup):
    from gantune.cli.app import main

    G, gpath, src, out = setup
    with pytest.raises(SystemExit) as e:
        main(["invert", str(src / "face0.png"), "--method", "overparam", "--weights", str(gpath), "-o", str(out),
              "--param", "num_steps=2", "--param", "w_avg_samples=50", "--param", "per_layer=true", "--device", "cpu"])
    assert e.value.code in (0, None)
    rec = InversionRecord.load(out / "face0.safetensors")
    assert rec.method == "overparam" and rec.latent_kind == "W+" and rec.latent.shape == (G.num_ws, 32, G.cfg.w_dim)
    assert rec.meta["params"]["overparam"]["num_steps"] == 2
    with pytest.raises(SystemExit) as e:
        main(["invert", str(src / "face1.png"), "--method", "optim", "--weights", str(gpath), "-o", str(out),
              "--iters", "2", "--param", "space=w", "--param", "w_avg_samples=50", "--device", "cpu"])
    assert e.value.code in (0, None)
    rec = InversionRecord.load(out / "face1.safetensors")
    assert rec.method == "optim" and rec.latent_kind == "w" and rec.meta["params"]["projector"]["num_steps"] == 2
    with pytest.raises(SystemExit) as e:
        main(["invert", str(src / "face1.png"), "--method", "optim", "--weights", str(gpath), "-o", str(out),
              "--param", "bogus=1"])
    assert e.value.code == 2


def test_invert_overparam_command(setup):
    G, gpath, src, out = setup
    r = CliRunner().invoke(app, ["invert-overparam", str(src / "face1.png"), "--weights", str(gpath), "-o", str(out),
                                 "--steps", "2", "--w-avg-samples", "50", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = InversionRecord.load(out / "face1.safetensors")
    assert rec.latent_kind == "W" and rec.latent.dtype == torch.float16  # W is stored in fp16


def test_missing_lpips_backbone_is_one_line_with_the_fetch_command(tiny_G, tmp_path, monkeypatch, capsys):
    from gantune.cli.app import main
    from gantune.weights.native import save_native

    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    gpath = save_native(tiny_G, tmp_path / "g.safetensors")
    save_image(torch.zeros(3, 32, 32), tmp_path / "a.png")
    with pytest.raises(SystemExit) as e:
        main(["invert-optim", str(tmp_path / "a.png"), "--weights", str(gpath), "-o", str(tmp_path / "o"),
              "--steps", "2", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr()
    assert "gantune weights fetch lpips-vgg-backbone" in " ".join((err.out + err.err).split())
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_l2_loss_needs_no_imagenet_backbone(setup, monkeypatch):
    """--loss l2 runs with no LPIPS backbone in the cache (users on a laptop with no download) and says l2 only."""
    G, gpath, src, out = setup
    import gantune.methods.optim_run as oc

    def no_lpips(*a, **k):
        raise AssertionError("LPIPS must not be built with --loss l2")

    monkeypatch.setattr(oc, "lpips_network", no_lpips)
    r = CliRunner().invoke(app, ["invert-optim", str(src / "face1.png"), "--weights", str(gpath), "-o", str(out),
                                 "--space", "w+", "--steps", "3", "--w-avg-samples", "50", "--loss", "l2",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = InversionRecord.load(out / "face1.safetensors")
    assert set(rec.meta["metrics"]) >= {"l2", "steps"} and "lpips" not in rec.meta["metrics"]
    bad = CliRunner().invoke(app, ["invert-optim", str(src / "face1.png"), "--weights", str(gpath), "-o", str(out),
                                   "--loss", "ssim"])
    assert bad.exit_code != 0


def test_typed_options_reach_the_settings_fields_of_their_names(setup, monkeypatch):
    """invert-optim / invert-overparam name each typed option after the settings field it sets, and run it as
    invert --method optim|overparam --param FIELD=VALUE: both reach the same settings."""
    import dataclasses
    import inspect

    from gantune.cli.invert_cmd import RUN_OPTIONS
    from gantune.cli.optim_cmd import invert_optim_command, invert_overparam_command
    from gantune.errors import InputError
    from gantune.methods import optim_run
    from gantune.methods.optim import ProjectorSettings, TuneSettings
    from gantune.methods.overparam import OverparamSettings

    G, gpath, src, out = setup
    seen = []

    def build_method(method, weights, settings, tune_settings=None, **kw):
        seen.append((method, settings, tune_settings, kw["seed"], kw["progress_every"], kw["class_index"]))
        raise InputError("stop here")

    monkeypatch.setattr(optim_run, "build_method", build_method)
    base = [str(src / "face0.png"), "--weights", str(gpath), "--device", "cpu"]
    runs = [
        (["invert-optim", "--space", "w+"], ["invert", "--method", "optim", "--param", "space=w+"]),
        (["invert-optim", "--steps", "7", "--lr", "0.2", "--mse", "0.5", "--loss", "l2", "--fixed-noise", "--tune",
          "--tune-steps", "3", "--tune-lr", "0.001", "--tune-target", "0.25", "--tune-rank", "2", "--seed", "5"],
         ["invert", "--method", "optim", "--param", "num_steps=7", "--param", "learning_rate=0.2", "--param",
          "mse_weight=0.5", "--param", "loss=l2", "--param", "optimize_noise=false", "--param", "tune=true",
          "--param", "tune_num_steps=3", "--param", "tune_learning_rate=0.001", "--param", "tune_stop_at=0.25",
          "--param", "tune_rank=2", "--param", "seed=5"]),
        (["invert-overparam", "--per-layer", "--noise", "none", "--truncation", "0.5"],
         ["invert", "--method", "overparam", "--param", "per_layer=true", "--param", "noise_mode=none", "--param",
          "truncation=0.5"]),
    ]
    got = []
    for k, (typed, params) in enumerate(runs):
        seen.clear()
        for i, argv in enumerate((typed, params)):
            r = CliRunner().invoke(app, [*argv, *base, "-o", str(out / f"{k}{i}")])
            assert isinstance(r.exception, InputError) and "stop here" in str(r.exception), r.output
        assert len(seen) == 2 and seen[0] == seen[1]
        got.append(seen[0])
    assert got[0][1].space == "w+" and got[0][2] is None
    assert got[1][1] == ProjectorSettings(num_steps=7, learning_rate=0.2, mse_weight=0.5, loss="l2", optimize_noise=False)
    assert got[1][2] == TuneSettings(num_steps=3, learning_rate=0.001, loss="l2", stop_at=0.25, rank=2)
    assert got[1][3] == 5
    assert got[2][1] == OverparamSettings(per_layer=True, noise_mode="none", truncation=0.5)
    # every typed option of the two commands is a settings field (tune_<field>: TuneSettings), or a run option
    fields = {f.name for f in dataclasses.fields(ProjectorSettings)} | {"tune"}
    fields |= {f"tune_{f.name}" for f in dataclasses.fields(TuneSettings)}
    for cmd, names in ((invert_optim_command, fields), (invert_overparam_command,
                                                       {f.name for f in dataclasses.fields(OverparamSettings)})):
        own = set(inspect.signature(cmd).parameters) - set(RUN_OPTIONS) - {"inputs", "weights", "out"}
        assert own and own <= names, own - names
