"""GANSpace: PCA of sampled w (orthonormal, sorted, σ-calibrated), both edit conventions, published files,
``directions ganspace`` and the ``FILE:K[:rows]`` selector of ``gantune edit``."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gantune.cli.app import app
from gantune.editing.directions import load_direction
from gantune.editing.ganspace import compute_ganspace, load_ganspace
from gantune.errors import InputError
from support import tiny_generator

runner = CliRunner()


@pytest.fixture(scope="module")
def G():
    return tiny_generator(0)


@pytest.fixture(scope="module")
def gs(G):
    return compute_ganspace(G, samples=4000, components=8, seed=1, batch=1000)


def test_components_orthonormal_sorted_and_match_sample_statistics(G, gs):
    comp = gs.comp
    assert comp.shape == (8, G.cfg.w_dim) and gs.std.shape == (8,)
    torch.testing.assert_close(comp @ comp.T, torch.eye(8), atol=1e-5, rtol=0)
    assert (gs.std[:-1] >= gs.std[1:]).all() and gs.std[-1] > 0
    # on fresh samples: coordinates are ~ zero-mean with the stored std, and uncorrelated
    with torch.no_grad():
        w = G.map(torch.randn(6000, G.cfg.z_dim, generator=torch.Generator().manual_seed(9)))[:, 0]
    c = gs.coordinates(w)
    assert c.mean(0).abs().max() < 0.1
    torch.testing.assert_close(c.std(0), torch.ones(8), atol=0.08, rtol=0)
    # component 0 is the direction of largest variance: no random unit direction has more
    proj = (w - gs.mean) @ torch.nn.functional.normalize(torch.randn(50, G.cfg.w_dim), dim=1).T
    assert proj.std(0).max() <= gs.std[0] * 1.02
    # deterministic signs: largest entry positive
    assert (comp.gather(1, comp.abs().argmax(1, keepdim=True)) > 0).all()


def test_edits_move_the_coordinate_by_the_requested_sigma(G, gs):
    with torch.no_grad():
        lat = G.map(torch.randn(2, G.cfg.z_dim))  # (2, num_ws, w)
    before = gs.coordinates(lat)
    add = gs.apply(lat, 0, 2.5, start=2, end=5, convention="additive")
    after = gs.coordinates(add)
    torch.testing.assert_close(after[:, 2:5, 0], before[:, 2:5, 0] + 2.5, atol=1e-4, rtol=0)
    torch.testing.assert_close(after[:, 2:5, 1:], before[:, 2:5, 1:], atol=1e-4, rtol=0)  # other components unchanged
    torch.testing.assert_close(add[:, :2], lat[:, :2]) and torch.testing.assert_close(add[:, 5:], lat[:, 5:])
    absolute = gs.apply(lat, 3, -1.5, start=0, end=None, convention="absolute")
    torch.testing.assert_close(gs.coordinates(absolute)[..., 3], torch.full((2, G.num_ws), -1.5), atol=1e-4, rtol=0)
    with pytest.raises(InputError):
        gs.apply(lat, 8, 1.0)
    with pytest.raises(InputError):
        gs.apply(lat, 0, 1.0, start=3, end=99)


def test_published_layout_round_trip_and_foreign_file(G, gs, tmp_path):
    p = gs.save(tmp_path / "g.pt")
    raw = torch.load(p, weights_only=True)
    assert raw["mean"].shape == (1, 32) and raw["std"].shape == (8,) and raw["comp"].shape == (8, 1, 32)
    back = load_ganspace(p)
    torch.testing.assert_close(back.comp, gs.comp) and torch.testing.assert_close(back.std, gs.std)
    assert back.layer_ranges["fine" if "fine" in back.layer_ranges else "medium"][1] == G.num_ws
    # a published file (cars_pca.pt layout: only mean / std / comp; 80 components)
    q, _ = torch.linalg.qr(torch.randn(512, 80))
    pub = {"mean": torch.randn(1, 512), "std": torch.linspace(3, 1, 80), "comp": q.T[:, None, :].contiguous()}
    torch.save(pub, tmp_path / "cars_pca.pt")
    g2 = load_ganspace(tmp_path / "cars_pca.pt")
    assert g2.num_components == 80 and g2.layer_ranges == {}
    torch.testing.assert_close(g2.direction(5), pub["comp"][5, 0] * pub["std"][5])
    torch.save({"mean": torch.randn(1, 512), "std": torch.ones(3), "comp": torch.randn(4, 1, 512)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not fit"):
        load_ganspace(tmp_path / "bad.pt")


def test_edit_selector_builds_layer_limited_directions(gs, tmp_path):
    p = gs.save(tmp_path / "gs.pt")
    d = load_direction(f"{p}:1:2-4")
    v = d.fit(8, 32)
    torch.testing.assert_close(v[2], gs.comp[1] * gs.std[1])
    assert v[:2].abs().sum() == 0 and v[4:].abs().sum() == 0 and d.name == "gs_c1_2-4"
    lo, hi = gs.layer_ranges["medium"]
    vm = load_direction(f"{p}:0:medium").fit(8, 32)
    assert (vm.abs().sum(1) > 0).tolist() == [lo <= i < hi for i in range(8)]
    assert load_direction(f"{p}:0").fit(8, 32).abs().sum(1).min() > 0
    with pytest.raises(InputError, match="GANSpace") as e:
        load_direction(str(p))
    assert "pick a component" in e.value.hint
    with pytest.raises(InputError):
        load_direction(f"{p}:0:nowhere")


def test_directions_ganspace_command(G, tmp_path):
    from gantune.weights.native import save_native

    gpath = save_native(G, tmp_path / "g.safetensors")
    out = tmp_path / "dirs" / "pca.pt"
    res = runner.invoke(app, ["directions", "ganspace", "--weights", str(gpath), "-o", str(out), "--samples", "2000",
                              "--components", "5", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    gs = load_ganspace(out)
    assert gs.num_components == 5 and gs.meta["samples"] == 2000 and gs.meta["generator"]["sha256"]
    ref = compute_ganspace(G, samples=2000, components=5, seed=0)
    torch.testing.assert_close(gs.comp, ref.comp, atol=1e-4, rtol=0)
