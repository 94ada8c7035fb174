"""gantune's native generator format: safetensors + JSON config/provenance, strict and bit-exact."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gantune.errors import WeightsError
from gantune.weights.native import load_native, read_native_header, save_native
from support import tiny_generator


def test_round_trip_is_bit_exact(tiny_G, tmp_path):
    meta = {"source_format": "rosinality", "source_sha256": "ab" * 32, "w_avg_computed": True}
    path = save_native(tiny_G, tmp_path / "g.safetensors", meta=meta)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    assert json.loads(md["gantune_config"]) == tiny_G.cfg.to_dict()
    assert json.loads(md["gantune_meta"]) == meta
    G, meta2 = load_native(path)
    assert meta2 == meta and G.cfg == tiny_G.cfg and not G.training
    a, b = tiny_G.state_dict(), G.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    ws = torch.randn(2, G.num_ws, G.cfg.w_dim)
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws), tiny_G.synthesis(ws))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]  # no temp files left


@pytest.mark.parametrize(
    "kw", [dict(use_noise=False), dict(latent_rows=32, conv_clamp=256.0), dict(mapping_layers=8, img_channels=1)]
)
def test_config_variants_round_trip(tmp_path, kw):
    G = tiny_generator(0, **kw, extra={"note": "provenance"})
    save_native(G, tmp_path / "g.safetensors")
    G2, meta = load_native(tmp_path / "g.safetensors")
    assert meta == {} and G2.cfg == G.cfg and G2.cfg.to_dict() == G.cfg.to_dict()
    assert all(torch.equal(x, y) for x, y in zip(G.state_dict().values(), G2.state_dict().values()))


def test_overwrite_and_header_only_read(tiny_G, tmp_path):
    path = tmp_path / "g.safetensors"
    save_native(tiny_generator(resolution=16), path, meta={"v": 1})
    save_native(tiny_G, path, meta={"v": 2})
    cfg, meta = read_native_header(path)
    assert cfg["resolution"] == 32 and meta == {"v": 2}


def _rewrite(path, out, edit):
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    edit(tensors)
    save_file(tensors, str(out), metadata=md)


def test_strict_keys_name_the_problem(tiny_G, tmp_path):
    path = save_native(tiny_G, tmp_path / "g.safetensors")
    _rewrite(path, tmp_path / "extra.safetensors", lambda t: t.__setitem__("synthesis.bogus", torch.zeros(1)))
    with pytest.raises(WeightsError, match=r"unexpected.*synthesis\.bogus"):
        load_native(tmp_path / "extra.safetensors")
    _rewrite(path, tmp_path / "missing.safetensors", lambda t: t.pop("synthesis.layers.b16.conv1.noise_const"))
    with pytest.raises(WeightsError, match=r"missing.*synthesis\.layers\.b16\.conv1\.noise_const"):
        load_native(tmp_path / "missing.safetensors")
    _rewrite(path, tmp_path / "shape.safetensors", lambda t: t.__setitem__("mapping.w_avg", torch.zeros(7)))
    with pytest.raises(WeightsError, match=r"mapping\.w_avg.*shape"):
        load_native(tmp_path / "shape.safetensors")


def test_foreign_safetensors_is_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="without a gantune generator config"):
        load_native(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_native(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="JSON"):
        save_native(tiny_generator(), tmp_path / "x.safetensors", meta={"t": torch.zeros(1)})
