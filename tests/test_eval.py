"""gantune eval: metric aggregation, the named LPIPS substitute, the ordering verdicts, held-out seeds, the
reconstruction report on tiny models, and dlib face-detection rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gantune.evaluation import data as ev_data
from gantune.evaluation import detection as ev_detection
from gantune.evaluation import lpips as ev_lpips
from gantune.evaluation import reconstruction as ev
from gantune.evaluation import report as ev_report
from gantune.evaluation import stats as ev_stats
from gantune.evaluation import verdicts as ev_verdicts
from gantune.cli.app import app
from support import tiny_generator, write_tiny_official_files

runner = CliRunner()
ASTRONAUT = Path(__file__).parent.parent / "gantune" / "data" / "astronaut.jpg"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread here: these models are tiny, and on two cores shared with other work two threads spin-wait
    (measured 10-50x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _main_fails(argv, capsys) -> str:
    """The installed entry point: a user error is one line on stderr and a non-zero exit."""
    from gantune.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code not in (0, None)
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    return err


@pytest.fixture
def offline(monkeypatch):
    """No registry downloads: LPIPS falls back to its named substitute at once."""
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")


@pytest.fixture(scope="module")
def random_lpips():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTUNE_OFFLINE", "1")
        return ev_lpips.lpips_metric("cpu")


# --- metrics -----------------------------------------------------------------------------------------------------------
def test_perfect_reconstruction_scores_and_aggregation(random_lpips):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    per = ev_stats.image_metrics(x, x, random_lpips)
    agg = ev_stats.aggregate(per)
    assert agg["l2"]["mean"] == 0 and agg["l2"]["std"] == 0 and agg["l2"]["n"] == 3
    assert agg["ms_ssim"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert agg["lpips"]["mean"] == pytest.approx(0.0, abs=1e-6)
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    worse = ev_stats.aggregate(ev_stats.image_metrics(y, x, random_lpips))
    assert worse["l2"]["mean"] > 0.01 and worse["ms_ssim"]["mean"] < 0.99 and worse["lpips"]["mean"] > 0
    # reconstructions are clamped to [-1, 1] before scoring
    assert ev_stats.image_metrics(x.sign() * 3, x.sign(), None)["l2"] == [0.0] * 3
    s = ev_stats.summarize([1.0, 2.0, 3.0])
    assert (s["mean"], s["std"], s["n"]) == (2.0, 1.0, 3)  # sample std (n - 1)
    assert ev_stats.summarize([5.0])["std"] == 0.0 and math.isnan(ev_stats.summarize([])["mean"])


def test_lpips_substitute_is_named_deterministic_and_upsampled(offline, random_lpips):
    m = ev_lpips.lpips_metric("cpu")
    assert m.substitute and m.label == ev_lpips.LPIPS_SUBSTITUTE_LABEL and "SUBSTITUTE" in m.note
    assert m.label.startswith("LPIPS*") and "seed 0" in m.label
    g = torch.Generator().manual_seed(1)
    a, b = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    # the trunk is the one torch seed 0 gives: its first layer is AlexNet's first conv, created first
    torch.manual_seed(0)
    first = torch.nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2)
    assert torch.equal(m.distance.model.net.slice1[0].weight, first.weight)
    torch.testing.assert_close(m(a, b), random_lpips(a, b))
    up = [torch.nn.functional.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False) for t in (a, b)]
    torch.testing.assert_close(m(a, b), m.distance(*up))  # < 64 px: compared upsampled to 64 px


def test_ordering_verdict_is_computed_from_the_numbers():
    good = {"l2": 0.01, "lpips": 0.1, "ms_ssim": 0.9}
    bad = {"l2": {"mean": 0.05}, "lpips": {"mean": 0.3}, "ms_ssim": {"mean": 0.5}}
    v = ev_verdicts.ordering_verdict(good, bad)
    assert v["holds"] is True and v["verdict"].startswith("holds") and all(v["per_metric"].values())
    v = ev_verdicts.ordering_verdict({k: x["mean"] for k, x in bad.items()}, good)
    assert v["holds"] is False and v["verdict"].startswith("does not hold") and not any(v["per_metric"].values())
    v = ev_verdicts.ordering_verdict({"l2": 0.01, "lpips": 0.5, "ms_ssim": 0.95}, good)
    assert v["holds"] is None and v["verdict"].startswith("mixed") and v["per_metric"] == {"l2": False, "lpips": False,
                                                                                          "ms_ssim": True}
    assert ev_verdicts.ordering_verdict({}, good)["verdict"] == "not measured"
    rows = [{"method": "W-encoder",
             "metrics": ev_stats.aggregate({"l2": [0.2, 0.4], "lpips": [0.5], "ms_ssim": [0.3]})},
            {"method": "HyperStyle 5 iters",
             "metrics": ev_stats.aggregate({"l2": [0.1], "lpips": [0.4], "ms_ssim": [0.6]})}]
    o = ev_verdicts.orderings(rows)
    assert o[0]["better"] == "HyperStyle 5 iters" and o[0]["holds"] is True
    assert o[1]["holds"] is None and o[1]["verdict"].startswith("not measured")


# --- held-out images ---------------------------------------------------------------------------------------------------
def test_heldout_faces_are_not_the_training_draws():
    pytest.importorskip("gan_face_generate")
    from gantune.train.data import SyntheticFaces

    assert ev_data.heldout_seed(3) == 10_000_003
    held = ev_data.HeldOutImages("synthetic-faces", 3, seed=0)
    x = held.at(32)
    assert x.shape == (3, 3, 32, 32) and torch.equal(x, ev_data.HeldOutImages("synthetic-faces", 3, seed=0).at(32))
    src = SyntheticFaces(32)
    for train_seed in (0, 1):  # the trainers' data streams for --seed 0: torch seed 0 (encoders) and 1 (generator)
        t = src.sample(3, torch.Generator().manual_seed(train_seed))
        assert (x - t).abs().flatten(1).amax(1).min() > 0.1
    torch.testing.assert_close(x, src.sample(3, torch.Generator().manual_seed(10_000_000)))
    assert held.describe()["heldout_torch_seed"] == 10_000_000


# --- reconstruction end to end -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.wencoder import WEncoder
    from gantune.weights.native import save_native

    tmp = tmp_path_factory.mktemp("eval")
    G = tiny_generator(5, perturb=True)
    # compact encoders (as `gantune train … --width 16 --input-size 64` writes them): the official ResNet34 at
    # 256 px would take most of a minute on two busy cores
    hn = HyperNetwork.from_specs(G.specs, width=16, input_size=64).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone()
    # the input size is not visible in the weights: it goes into opts
    p_hs, p_enc = write_tiny_official_files(tmp, G, hn, enc, la, opts={"input_size": 64}, enc_opts={"input_size": 64})
    g_std = save_native(G, tmp / "g.safetensors")
    g_over = save_native(tiny_generator(6, latent_rows=32), tmp / "g_over.safetensors")
    return dict(tmp=tmp, hs=p_hs, enc=p_enc, std=g_std, over=g_over)


@pytest.fixture(scope="module")
def recon(tiny_files):
    pytest.importorskip("gan_face_generate")
    t = tiny_files
    out = t["tmp"] / "report.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANTUNE_OFFLINE", "1")
        mp.setenv("GANTUNE_HOME", str(t["tmp"] / "home"))
        res = runner.invoke(app, ["eval", "reconstruction", "--weights", str(t["std"]), "--overparam-weights",
                                  str(t["over"]), "--encoder", str(t["enc"]), "--hypernet", str(t["hs"]), "--count", "2",
                                  "--seed", "1", "--steps", "2", "--device", "cpu", "-o", str(out)])
    return res, out


def test_reconstruction_report_rows_metrics_and_orderings(recon):
    res, out = recon
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert not list(out.parent.glob(".report.json.*"))  # atomic: no temp file left behind
    assert [r["method"] for r in rep["rows"]] == list(ev.ROWS) and rep["skipped"] == []
    for r in rep["rows"]:
        assert r["n"] == 2 and r["resolution"] == 32 and math.isfinite(r["seconds_per_image"])
        for m in ev_stats.METRICS:
            s = r["metrics"][m]
            assert s["n"] == 2 and math.isfinite(s["mean"]) and math.isfinite(s["std"])
            assert len(r["per_image"][m]) == 2
        assert 0 < r["metrics"]["ms_ssim"]["mean"] <= 1 and r["metrics"]["l2"]["mean"] > 0
    by = {r["method"]: r for r in rep["rows"]}
    assert by["W-encoder"]["settings"]["iters"] == 0 and by["HyperStyle 5 iters"]["settings"]["iters"] == 5
    assert by["W+ optim"]["settings"] == {"num_steps": 2, "loss": "l2", "space": "w+", "steps": 2}
    assert by["overparam optim"]["generator"]["kind"] == "overparameterized"
    assert rep["data"]["heldout_torch_seed"] == 10_000_001 and rep["data"]["source"] == "synthetic-faces"
    lp = rep["metrics"]["lpips"]
    assert lp["substitute"] is True and lp["label"] == ev_lpips.LPIPS_SUBSTITUTE_LABEL
    assert "pixel L2" in rep["optim_loss"]
    assert any("renders the same images as --weights" in n for n in rep["notes"])
    # the verdicts are the ones the numbers give
    for o in rep["orderings"]:
        want = ev_verdicts.ordering_verdict(by[o["better"]]["metrics"], by[o["worse"]]["metrics"])
        assert o["verdict"] == want["verdict"] and o["holds"] == want["holds"]
    # terminal: the markdown table (pasteable) with the substitute named, and the ordering lines
    assert "| method | generator | px | L2 ↓ | LPIPS* (random AlexNet trunk" in res.output
    assert "| HyperStyle 5 iters |" in res.output
    assert "HyperStyle better than the W-encoder alone — measured:" in res.output
    assert "overparameterized latent better than W+ — measured:" in res.output


def test_reconstruction_skips_missing_rows_and_reads_folders(tiny_files, offline, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    rep = ev.evaluate_reconstruction(overparam_weights=str(tiny_files["std"]), data=str(tmp_path / "imgs"), count=3,
                                     steps=1, device="cpu")
    assert [r["method"] for r in rep["rows"]] == ["overparam optim"]
    assert [s["method"] for s in rep["skipped"]] == ["W-encoder", "HyperStyle 1 iter", "HyperStyle 5 iters", "W+ optim"]
    assert rep["skipped"][0]["reason"] == "needs --encoder and --hypernet"
    assert rep["images"] == ["0", "1"] and any("has 2 images" in n for n in rep["notes"])
    assert any("is a standard generator" in n for n in rep["notes"])
    assert all(o["holds"] is None and "not measured" in o["verdict"] for o in rep["orderings"])
    md = ev_report.reconstruction_markdown(rep)
    assert "- W+ optim: not run (needs --weights)." in md
    assert "nothing to evaluate" in _main_fails(["eval", "reconstruction", "--count", "2"], capsys)


# --- detection ---------------------------------------------------------------------------------------------------------
def test_detection_rate_real_faces_and_noise():
    pytest.importorskip("dlib")
    skdata = pytest.importorskip("skimage.data")
    real = ev_detection.detection_rate([ASTRONAUT, skdata.astronaut()], upscale=256)
    assert real["count"] == 2 and real["rate"] > 0 and real["found"] >= 1
    g = torch.Generator().manual_seed(0)
    noise = ev_detection.detection_rate(torch.rand(3, 3, 64, 64, generator=g) * 2 - 1, upscale=256)
    assert noise == {"count": 3, "found": 0, "rate": 0.0, "faces": [0, 0, 0]}


def test_detection_cli_generator_and_source(tiny_files, tmp_path, capsys):
    pytest.importorskip("dlib")
    pytest.importorskip("gan_face_generate")
    out = tmp_path / "det.json"
    res = runner.invoke(app, ["eval", "detection", "--weights", str(tiny_files["std"]), "--count", "3", "--upscale",
                              "128", "--source-too", "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert [r["kind"] for r in rep["rows"]] == ["generator", "source", "source"] and rep["upscale"] == 128
    for r in rep["rows"]:
        assert r["count"] == 3 and 0 <= r["rate"] <= 1 and len(r["faces"]) == 3
    # the source at its own 64 px and at the 32 px the generator was trained at
    assert [r["resolution"] for r in rep["rows"]] == [32, 64, 32]
    assert "| images | px | upscaled to | faces found | rate |" in res.output
    assert "nothing to evaluate" in _main_fails(["eval", "detection", "--count", "2"], capsys)
