"""The built-in demo-faces model: registry entries, publishing into the package, the training recipe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from gantune import demo_model
from gantune.errors import WeightsError
from gantune.weights import registry

REPO = Path(__file__).resolve().parents[1]
DEMO = list(demo_model.FILES)

ENTRY = '''
[[weights]]
name = "{name}"
kind = "direction"
file = "{file}"
urls = {urls}
sha256 = ""
sha256_note = "unknown: test"
size = 0
format = "ganspace-pt"
licence = "test"
source = "test"
{extra}'''


def test_demo_entries_are_packaged_and_non_commercial():
    reg = registry.load_registry()
    for name in DEMO:
        e = reg[name]
        assert e.package == "gantune" and e.package_file == f"data/demo-faces/{demo_model.FILES[name]}"
        assert "NON-COMMERCIAL" in e.licence and "DigiFace-1M" in e.licence
        assert e.urls == ()  # shipped, never downloaded


def test_published_files_match_the_registry():
    """Whatever is in gantune/data/demo-faces must be what weights.toml says (a stale publish fails here)."""
    reg = registry.load_registry()
    present = [n for n in DEMO if reg[n].package_path() is not None]
    for name in present:
        p = reg[name].package_path()
        assert reg[name].sha256 == hashlib.sha256(p.read_bytes()).hexdigest(), name
        assert reg[name].size == p.stat().st_size
    total = sum(reg[n].package_path().stat().st_size for n in present)
    assert total <= 40e6  # the budget for files in the repository


def test_empty_urls_only_for_packaged_files():
    registry.parse_registry(ENTRY.format(name="a", file="a.pt", urls="[]", extra='package = "gantune"\npackage_file = "x.pt"\n'))
    with pytest.raises(WeightsError, match="urls may be empty only"):
        registry.parse_registry(ENTRY.format(name="a", file="a.pt", urls="[]", extra=""))


def test_missing_packaged_file_is_a_one_line_error(tmp_path, monkeypatch):
    from gantune.weights.download import fetch

    reg = tmp_path / "r.toml"
    reg.write_text(ENTRY.format(name="a", file="a.pt", urls="[]", extra='package = "gantune"\npackage_file = "nope.pt"\n'))
    monkeypatch.setenv("GANTUNE_REGISTRY", str(reg))
    with pytest.raises(WeightsError, match="ships inside the Python package 'gantune'"):
        fetch(registry.get("a"))


def test_ganspace_component_by_registry_name(tmp_path, monkeypatch):
    from gantune.editing.directions import load_direction
    from gantune.editing.ganspace import GANSpace

    torch.manual_seed(0)
    comp = torch.linalg.qr(torch.randn(8, 8))[0][:3]
    gs = GANSpace(mean=torch.zeros(8), comp=comp, std=torch.tensor([3.0, 2.0, 1.0]), layer_ranges={"all": [0, 4]})
    f = gs.save(tmp_path / "g.pt")
    reg = tmp_path / "r.toml"
    reg.write_text(ENTRY.format(name="my-ganspace", file="g.pt", urls=f'["{f.as_uri()}"]', extra=""))
    monkeypatch.setenv("GANTUNE_REGISTRY", str(reg))
    d = load_direction("my-ganspace:1")
    torch.testing.assert_close(d.vector.reshape(-1), gs.direction(1).reshape(-1))
    assert d.vector.reshape(-1).dot(gs.direction(0).reshape(-1)).abs() < 1e-5  # component 1, not 0


def test_set_entry_fields_touches_only_that_entry():
    text = (ENTRY.format(name="a", file="a.pt", urls='["https://x/a"]', extra="")
            + ENTRY.format(name="b", file="b.pt", urls='["https://x/b"]', extra=""))
    out = demo_model.set_entry_fields(text, "b", {"sha256": "ab" * 32, "size": 123})
    reg = registry.parse_registry(out)
    assert reg["b"].sha256 == "ab" * 32 and reg["b"].size == 123 and not reg["b"].sha256_note
    assert reg["a"].sha256 == "" and reg["a"].size == 0 and reg["a"].sha256_note == "unknown: test"
    with pytest.raises(ValueError, match="no entry c"):
        demo_model.set_entry_fields(text, "c", {"size": 1})


def _fake_run(runs: Path) -> None:
    for kind in ("standard", "overparam"):
        d = runs / f"generator-{kind}"
        d.mkdir(parents=True)
        for k in (4000, 8000):
            (d / f"network-{k:09d}.safetensors").write_bytes(f"{kind}{k}".encode())
            (d / f"training-state-{k:09d}.pt").write_bytes(b"state")
    for sub, f in (("w-encoder", "w_encoder.pt"), ("hypernet", "hypernet.pt")):
        (runs / sub).mkdir()
        (runs / sub / f).write_bytes(sub.encode())
    (runs / "ganspace.pt").write_bytes(b"pca")


def test_publish_copies_newest_snapshots_and_records_hashes(tmp_path):
    runs, dest, reg = tmp_path / "runs", tmp_path / "pkg", tmp_path / "weights.toml"
    reg.write_text((REPO / "weights.toml").read_text())
    with pytest.raises(SystemExit, match="no network"):
        demo_model.publish(runs, reg, dest)
    _fake_run(runs)
    out = demo_model.publish(runs, reg, dest)
    assert out["demo-faces"].read_bytes() == b"standard8000"  # the newest snapshot
    assert out["demo-faces-overparam"].read_bytes() == b"overparam8000"
    parsed = registry.parse_registry(reg.read_text())
    for name, path in out.items():
        assert parsed[name].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert parsed[name].size == path.stat().st_size
    assert parsed["ffhq-1024"] == registry.load_registry()["ffhq-1024"]  # other entries untouched
    # only some entries: the others keep their files and registry fields
    (runs / "hypernet" / "hypernet.pt").write_bytes(b"retrained")
    for f in (runs / "generator-standard").glob("network-*"):  # a run folder holding only the re-trained file
        f.unlink()
    (dest / "generator.safetensors").write_bytes(b"kept")
    demo_model.publish(runs, reg, dest, names=["demo-faces-hypernet"])
    assert (dest / "hypernet.pt").read_bytes() == b"retrained" and (dest / "generator.safetensors").read_bytes() == b"kept"
    again = registry.parse_registry(reg.read_text())
    assert again["demo-faces-hypernet"].sha256 == hashlib.sha256(b"retrained").hexdigest()
    assert again["demo-faces"] == parsed["demo-faces"]
    with pytest.raises(SystemExit, match="unknown demo file"):
        demo_model.publish(runs, reg, dest, names=["nope"])


def test_recipe_expands_latest_snapshot_and_resume(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs)
    cmds = demo_model.recipe(runs, kimg=(7, 9), enc_steps=5, hyp_steps=5)
    assert [c[:2] for c in cmds] == [["train", "generator"]] * 2 + [["train", "w-encoder"]] * 2 + [
        ["train", "hypernet"], ["directions", "ganspace"]]
    assert [c[c.index("--kimg") + 1] for c in cmds[:2]] == ["7", "9"] and "--overparam" in cmds[1]
    # the generators learn by distillation alone: the distillation-only phase outlasts the run
    for c in cmds[:2]:
        assert float(c[c.index("--distill") + 1]) > 0
        assert float(c[c.index("--distill-only") + 1]) >= float(c[c.index("--kimg") + 1])
    # the hypernetwork trains with the paper's 5 passes; neither network uses an identity term, as published
    assert cmds[4][cmds[4].index("--iters") + 1] == "5"
    assert all(c[c.index("--sim-lambda") + 1] == "0" for c in cmds[2:5])
    # the W-encoder first learns on generator samples (known w), then continues on the faces it must invert
    assert [c[c.index("--data") + 1] for c in cmds[2:4]] == ["synthetic", "synthetic-faces"]
    assert [int(c[c.index("--steps") + 1]) for c in cmds[2:4]] == [5, 5]
    big = demo_model.recipe(runs, enc_steps=2500)
    assert [int(c[c.index("--steps") + 1]) for c in big[2:4]] == [demo_model.ENC_SYNTHETIC_STEPS, 2500]
    enc = demo_model.expand(cmds[2])
    assert str(runs / "generator-standard" / "network-000008000.safetensors") in enc
    assert "--resume" not in enc and "--resume-if-any" not in enc
    (runs / "w-encoder" / "train_state.pt").write_bytes(b"x")
    assert demo_model.expand(cmds[2])[-2:] == ["--resume", "auto"]


def test_loading_a_packaged_foreign_file_never_writes_into_the_package(_isolated_home):
    """The hypernetwork file holds a rosinality decoder: its native conversion goes to the cache, not the package."""
    from gantune.weights import load_generator

    e = registry.get("demo-faces-hypernet")
    if e.package_path() is None:
        pytest.skip("demo-faces files not in this checkout")
    before = sorted(p.name for p in e.package_path().parent.iterdir())
    G, info = load_generator("demo-faces-hypernet")
    assert G.cfg.resolution == 64
    assert sorted(p.name for p in e.package_path().parent.iterdir()) == before
    assert Path(info["converted"]).parent == _isolated_home / "converted"
