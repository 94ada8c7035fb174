"""Pivotal tuning: the objective follows the loss (pixel MSE needs no ImageNet network), the default target makes real
tuning steps, the metrics say how many ran and why they stopped, and a missing backbone fails at setup."""

from __future__ import annotations

import pytest
import torch

from gantune.errors import InputError, WeightsError
from gantune.methods import optim
from gantune.methods.optim import TUNE_TARGETS, ProjectorSettings, TuneSettings, project, tune


@pytest.fixture
def no_lpips(monkeypatch):
    """Any attempt to build an LPIPS network fails the test (pixel MSE must not need one)."""
    import gantune.metrics.lpips as lp

    def refuse(*a, **k):
        raise AssertionError("LPIPS must not be built with loss l2")

    monkeypatch.setattr(lp, "get_lpips", refuse)
    monkeypatch.setattr(lp, "LPIPSDistance", refuse)


def _pivot(G, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target = G.synthesis(G.map(torch.randn(1, G.cfg.z_dim, generator=g))).clamp(-1, 1)
    out = project(G, target, ProjectorSettings(loss="l2", num_steps=4, w_avg_samples=64, optimize_noise=False))
    return target, out.results[0]


def test_l2_tuning_with_the_default_target_makes_real_steps_offline(tiny_G, no_lpips):
    target, pivot = _pivot(tiny_G)
    s = TuneSettings(loss="l2", num_steps=5, learning_rate=3e-3)
    assert s.stop_target == TUNE_TARGETS["l2"] == 0.001
    res, curve = tune(tiny_G, target, pivot, s)
    m = res.meta["metrics"]
    assert m["tune_distance_pivot"] > s.stop_target  # the pivot does not already meet the default target
    assert m["tune_steps"] == 5 == len(curve) and m["tune_stop"] == "step_limit"
    assert m["tune_loss"] == "l2" and m["tune_target"] == 0.001
    assert m["tune_distance"] < m["tune_distance_pivot"] and curve[-1] < curve[0]
    assert "lpips" not in m and m["l2"] == pytest.approx(m["tune_distance"], rel=1e-2)  # metric follows the loss
    assert any(k.startswith("synthesis.") and not k.endswith("noise_const") for k in res.tuned)


def test_tuning_stops_at_the_target_and_says_so(tiny_G, no_lpips):
    target, pivot = _pivot(tiny_G)
    # a target between the pivot's distance and what 8 steps reach: stops early, at or below it
    first = tune(tiny_G, target, pivot, TuneSettings(loss="l2", num_steps=0))[0].meta["metrics"]["tune_distance"]
    last = tune(tiny_G, target, pivot, TuneSettings(loss="l2", num_steps=8, learning_rate=3e-3, stop_at=0.0))[0]
    goal = (first + last.meta["metrics"]["tune_distance"]) / 2
    res, curve = tune(tiny_G, target, pivot, TuneSettings(loss="l2", num_steps=8, learning_rate=3e-3, stop_at=goal))
    m = res.meta["metrics"]
    assert 0 < m["tune_steps"] < 8 and m["tune_stop"] == "target" and m["tune_distance"] <= goal < first
    assert res.meta["params"]["tune"]["stop_at"] == goal
    # a pivot that already meets the target: no step, and the metrics say the target stopped it
    res, curve = tune(tiny_G, target, pivot, TuneSettings(loss="l2", num_steps=8, stop_at=1e9))
    m = res.meta["metrics"]
    assert m["tune_steps"] == 0 and curve == [] and m["tune_stop"] == "target"
    assert m["tune_distance"] == m["tune_distance_pivot"] == pytest.approx(first)


def test_lpips_tuning_keeps_pti_objective_and_reports_it(tiny_G):
    from gantune.metrics import LPIPSDistance

    target, pivot = _pivot(tiny_G)
    alex = LPIPSDistance("alex", allow_random=True)
    res, curve = tune(tiny_G, target, pivot, TuneSettings(num_steps=2, learning_rate=1e-3, stop_at=0.0), distance=alex,
                      metric=alex)
    m = res.meta["metrics"]
    assert TuneSettings().stop_target == 0.06 and m["tune_loss"] == "lpips-alex" and m["tune_steps"] == 2
    with torch.no_grad():
        expect = float(alex(res.image[None], target))
    assert m["tune_distance"] == pytest.approx(expect, abs=2e-3)  # measured on the tuned generator, not the pivot


@pytest.mark.parametrize("bad", [dict(loss="ssim"), dict(stop_at=float("nan")), dict(stop_at=-1.0),
                                 dict(learning_rate=float("inf"))])
def test_tune_settings_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        TuneSettings(**bad)


# --- the command's setup ---------------------------------------------------------------------------------------
def _opts(gpath, **params):
    from gantune.methods.pipeline import InvertOptions

    return InvertOptions(weights=str(gpath), device="cpu", params={k: str(v) for k, v in params.items()})


@pytest.fixture
def gpath(tiny_G, tmp_path):
    from gantune.weights.native import save_native

    return save_native(tiny_G, tmp_path / "g.safetensors")


def test_invert_optim_setup_with_l2_tuning_needs_no_lpips(tiny_G, gpath, monkeypatch):
    from gantune.methods import optim_run as optim_cmd

    def refuse(*a, **k):
        raise AssertionError("LPIPS must not be built with --loss l2")

    monkeypatch.setattr(optim_cmd, "lpips_network", refuse)
    run = optim_cmd.setup_optim(_opts(gpath, tune="true", loss="l2", num_steps=2, w_avg_samples=50, tune_num_steps=3,
                                      tune_learning_rate=3e-3))
    assert "pixel MSE" in run.describe and "0.001" in run.describe
    with torch.no_grad():
        img = tiny_G.synthesis(tiny_G.map(torch.randn(1, tiny_G.cfg.z_dim))).clamp(-1, 1)
    [res] = run.invert_batch(img, ["a"])
    m = res.meta["metrics"]
    assert m["tune_loss"] == "l2" and m["tune_steps"] == 3 and m["tune_stop"] == "step_limit"
    assert res.meta["params"]["tune"]["loss"] == "l2"


def test_invert_optim_setup_fails_before_projecting_when_a_backbone_is_missing(gpath, monkeypatch):
    from gantune.methods import optim_run as optim_cmd

    monkeypatch.setenv("GANTUNE_OFFLINE", "1")

    def no_projection(*a, **k):
        raise AssertionError("projected before checking the LPIPS backbone")

    monkeypatch.setattr(optim, "project", no_projection)
    # the projector's loss is l2 but PTI asks for lpips explicitly: LPIPS-alex is missing, at setup
    with pytest.raises(WeightsError) as e:
        optim_cmd.setup_optim(_opts(gpath, tune="true", loss="l2", tune_loss="lpips", num_steps=2))
    assert "gantune weights fetch lpips-alex-backbone" in e.value.one_line() and "\n" not in e.value.one_line()
    with pytest.raises(WeightsError, match="lpips-vgg-backbone"):
        optim_cmd.setup_optim(_opts(gpath, tune="true", num_steps=2))
    with pytest.raises(InputError, match="stop_at"):
        optim_cmd.setup_optim(_opts(gpath, tune="true", loss="l2", tune_stop_at="nan"))


def test_invert_optim_l2_tune_runs_offline_from_the_command_line(tiny_G, gpath, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gantune.methods import optim_run as optim_cmd
    from gantune.cli.app import app
    from gantune.io.images import save_image
    from gantune.io.record import InversionRecord

    monkeypatch.setenv("GANTUNE_OFFLINE", "1")  # no backbone can come from anywhere

    def refuse(*a, **k):
        raise AssertionError("LPIPS must not be built with --loss l2")

    monkeypatch.setattr(optim_cmd, "lpips_network", refuse)
    with torch.no_grad():
        img = tiny_G.synthesis(tiny_G.map(torch.randn(1, tiny_G.cfg.z_dim))).clamp(-1, 1)
    save_image(img[0], tmp_path / "in" / "face.png")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["invert-optim", str(tmp_path / "in" / "face.png"), "--weights", str(gpath), "-o",
                                 str(out), "--steps", "2", "--w-avg-samples", "50", "--loss", "l2", "--tune",
                                 "--tune-steps", "3", "--tune-lr", "0.003", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    m = InversionRecord.load(out / "face.safetensors").meta["metrics"]
    assert m["tune_loss"] == "l2" and m["tune_steps"] == 3 and m["tune_stop"] == "step_limit"
    assert m["tune_target"] == 0.001 and m["tune_distance"] < m["tune_distance_pivot"]
    for bad in ("inf", "1e400"):  # (nan already fails click's min=0 range check)
        r = CliRunner().invoke(app, ["invert-optim", str(tmp_path / "in" / "face.png"), "--weights", str(gpath), "-o",
                                     str(out), "--loss", "l2", "--tune", "--tune-target", bad])
        assert isinstance(r.exception, InputError) and "--tune-target" in r.exception.one_line()
