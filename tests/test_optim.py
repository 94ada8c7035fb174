"""Projector (W / W+), PTI and the record round trip on a tiny generator.

The algorithm tests use the pixel L2 as the distance (any (x, y) -> (B,) callable is accepted) so that they stay
fast on two shared CPU cores; the LPIPS path is exercised in a short run and in the CLI tests."""

from __future__ import annotations

import math

import pytest
import torch

from gantune.io.record import InversionRecord
from gantune.methods.optim import (
    compact_difference,
    lr_schedule,
    noise_regularization,
    project,
    render_record,
    tune,
)
from gantune.metrics import LPIPSDistance, l2_distance


def _target(G, seed=1, n=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return G.synthesis(G.map(torch.randn(n, G.cfg.z_dim, generator=g)))


def test_lr_schedule_ramps():
    peak = 0.1
    assert lr_schedule(0.0, peak, 0.05, 0.25) == 0.0
    assert lr_schedule(0.025, peak, 0.05, 0.25) == pytest.approx(0.05)
    assert lr_schedule(0.5, peak, 0.05, 0.25) == pytest.approx(peak)
    assert lr_schedule(0.875, peak, 0.05, 0.25) == pytest.approx(peak * (0.5 - 0.5 * math.cos(0.5 * math.pi)))
    assert lr_schedule(0.999, peak, 0.05, 0.25) < 1e-4


def test_noise_regularization_penalises_correlated_noise():
    g = torch.Generator().manual_seed(0)
    white = {"a": torch.randn(2, 1, 32, 32, generator=g)}
    smooth = {"a": torch.nn.functional.interpolate(torch.randn(2, 1, 8, 8, generator=g), size=(32, 32), mode="bilinear")}
    rw, rs = noise_regularization(white), noise_regularization(smooth)
    assert rw.shape == (2,)
    assert (rs > 20 * rw).all()


def test_compact_difference_low_rank_and_fp16():
    g = torch.Generator().manual_seed(0)
    diff = (torch.randn(16, 2, generator=g) @ torch.randn(2, 24, generator=g)).reshape(16, 8, 3) * 0.01
    low = compact_difference(diff, rank=2)
    assert set(low) == {".u", ".v"} and low[".u"].dtype == torch.float16 and low[".u"].shape == (16, 2)
    rec = (low[".u"].float() @ low[".v"].float()).reshape(diff.shape)
    assert torch.allclose(rec, diff, atol=1e-4) and not torch.allclose(rec, torch.zeros_like(rec), atol=1e-3)
    full = compact_difference(diff, rank=None)
    assert set(full) == {""} and full[""].dtype == torch.float16
    # rank factors bigger than the matrix: stored in full
    assert set(compact_difference(torch.randn(4, 4), rank=3)) == {""}
    assert set(compact_difference(torch.randn(7), rank=1)) == {""}


def test_wplus_projector_recovers_a_generated_image_and_pti_improves_it(tiny_G, tmp_path):
    G = tiny_G
    target = _target(G)
    with torch.no_grad():
        w0 = G.synthesis(G.w_avg[None]).float()
    out = project(G, target, space="w+", num_steps=60, w_avg_samples=500, optimize_noise=False, distance=l2_distance)
    res = out.results[0]
    assert out.history.shape == (60, 1)
    start = float(l2_distance(w0, target))
    final = res.meta["metrics"]["l2"]
    assert out.history[-5:].mean() < 0.5 * out.history[:5].mean()
    assert final < 0.1 * start, (start, final)
    assert res.latent.shape == (G.num_ws, G.cfg.w_dim) and res.latent_kind == "w+"
    assert res.tuned == {}  # generator noise buffers kept, nothing to store
    # the saved record re-renders the returned reconstruction exactly
    path = res.to_record().save(tmp_path / "a.safetensors")
    again = render_record(G, InversionRecord.load(path))[0]
    assert torch.equal(again, res.image)

    tuned, curve = tune(G, target, res, distance=l2_distance, metric=l2_distance, num_steps=12, learning_rate=3e-3,
                        stop_at=0.0, rank=2)
    m = tuned.meta["metrics"]
    assert m["l2"] < 0.7 * final, (final, m["l2"])
    assert m["tune_steps"] == 12 and len(curve) == 12 and curve[-1] < curve[0]
    assert any(k.endswith(".u") for k in tuned.tuned) and all(v.dtype == torch.float16 for v in tuned.tuned.values())
    assert "synthesis.layers.b32.conv1.weight.u" in tuned.tuned
    assert not any(k.startswith("mapping.") for k in tuned.tuned)
    path = tuned.to_record().save(tmp_path / "b.safetensors")
    rec = InversionRecord.load(path)
    assert torch.equal(render_record(G, rec)[0], tuned.image)
    # the generator itself is untouched
    assert torch.equal(render_record(G, res.to_record())[0], res.image)


def test_pti_stops_at_target():
    from support import tiny_generator

    G = tiny_generator(0, resolution=16)
    target = _target(G)
    pivot = project(G, target, space="w", num_steps=2, w_avg_samples=100, distance=l2_distance).results[0]
    res, curve = tune(G, target, pivot, distance=l2_distance, metric=l2_distance, num_steps=50, stop_at=1e9)
    assert res.meta["metrics"]["tune_steps"] == 0 and curve == []
    assert set(res.tuned) == set(pivot.tuned)  # only the pivot's noise maps, no weight differences


def test_batched_projection_matches_single_images_and_stores_noise_maps(tiny_G, tmp_path):
    G = tiny_G
    targets = _target(G, seed=2, n=2)
    d = LPIPSDistance("alex", allow_random=True)
    kw = dict(space="w", num_steps=3, w_avg_samples=200, distance=d, mse_weight=1.0)
    both = project(G, targets, seed=[11, 12], names=["a", "b"], **kw)
    one = project(G, targets[1:], seed=[12], names=["b"], **kw)
    ra, rb = both.results
    assert (ra.name, rb.name) == ("a", "b")
    assert torch.allclose(rb.latent, one.results[0].latent, atol=1e-5)
    assert torch.allclose(rb.image, one.results[0].image, atol=1e-4)
    assert not torch.allclose(ra.latent, rb.latent)
    assert ra.latent.shape == (1, G.cfg.w_dim) and ra.latent_kind == "w"
    noise_keys = [k for k in ra.tuned if k.endswith("noise_const")]
    assert len(noise_keys) == sum(s.kind == "conv" for s in G.specs)
    base = G.state_dict()
    merged = ra.to_record().tuned_state(base)
    for k in noise_keys:  # stored as differences; the maps themselves are renormalised
        m = merged[k]
        assert abs(float(m.mean())) < 1e-2 and abs(float(m.std(unbiased=False)) - 1) < 1e-2
    for r in (ra, rb):
        rec = InversionRecord.load(r.to_record().save(tmp_path / f"{r.name}.safetensors"))
        assert torch.equal(render_record(G, rec)[0], r.image)
        assert set(r.meta["metrics"]) >= {"l2", "lpips", "steps", "seconds"}
    assert both.results[0].meta["params"]["projector"]["seed"] == 11


def test_bad_inputs(tiny_G):
    with pytest.raises(ValueError, match="space"):
        project(tiny_G, torch.zeros(1, 3, 32, 32), space="z", distance=l2_distance)
    with pytest.raises(ValueError, match="targets"):
        project(tiny_G, torch.zeros(1, 3, 16, 16), distance=l2_distance)


def test_results_are_measured_on_the_targets_device(tiny_G, monkeypatch):
    """The reconstruction is rendered on the CPU; its metrics are taken where the targets are (on a GPU run, CUDA:
    `invert-optim --device cuda` once failed with 'cuda:0 and cpu'). A 'meta' target stands in for the other device."""
    from gantune.methods import optim

    seen = []

    def dist(a, b):
        seen.append((a.device.type, b.device.type))
        return torch.tensor(0.25)

    monkeypatch.setattr(optim, "l2_distance", dist)
    rec = InversionRecord(latent=tiny_G.w_avg[None].clone(), latent_kind="w", method="optim")
    res = tiny_G.cfg.resolution
    [r] = optim._results_from_records(tiny_G, [rec], torch.zeros(1, 3, res, res, device="meta"), ["a"], dist,
                                      seconds=[0.0], steps=[0], method="optim", params={})
    assert seen == [("meta", "meta")] * 2
    assert r.image.device.type == "cpu" and r.meta["metrics"]["l2"] == 0.25
