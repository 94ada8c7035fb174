"""Interpolation between records: ends are the records' own renders, the path moves latents, HyperStyle offsets
and tuned differences together; incompatible records are refused; the command writes frames, GIF, sheet, manifest."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from gantune.editing import render_record
from gantune.editing.interpolate import check_compatible, interpolation_frames
from gantune.errors import InputError
from gantune.io.record import InversionRecord


def _records(G):
    torch.manual_seed(1)
    spec = next(s for s in G.specs if s.kind == "conv" and s.res == 16)
    a = InversionRecord(latent=torch.randn(G.num_ws, G.cfg.w_dim), latent_kind="w+", method="hyperstyle",
                        deltas={spec.name: 0.3 * torch.randn(spec.out_ch, spec.in_ch)})
    name = next(n for n, p in G.named_parameters() if n.startswith("synthesis.") and p.ndim == 4)
    b = InversionRecord(latent=torch.randn(G.num_ws, G.cfg.w_dim), latent_kind="w+", method="optim",
                        tuned={name: (0.2 * torch.randn_like(G.get_parameter(name))).half()})
    return a, b, spec.name, name


def test_ends_are_the_records_and_the_middle_is_the_lerp(tiny_G):
    G = tiny_G
    a, b, layer, param = _records(G)
    frames = list(interpolation_frames(G, a, b, 3))
    assert [t for t, _ in frames] == [0.0, 0.5, 1.0]
    torch.testing.assert_close(frames[0][1], render_record(G, a)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(frames[2][1], render_record(G, b)[0], atol=1e-5, rtol=0)
    # the midpoint: half of each latent, half of a's offsets, half of b's tuned difference
    state = G.state_dict()
    half = {param: state[param] + 0.5 * b.tuned[param].float()}
    want = render_record(G, a, latents=(0.5 * (a.latent + b.latent))[None], deltas={layer: 0.5 * a.deltas[layer]},
                         state=half)[0]
    torch.testing.assert_close(frames[1][1], want, atol=1e-5, rtol=0)
    assert (frames[1][1] - frames[0][1]).abs().max() > 1e-2  # it moves


def test_incompatible_records_are_refused(tiny_G):
    a, b, _, _ = _records(tiny_G)
    w = InversionRecord(latent=torch.zeros(40, tiny_G.cfg.w_dim), latent_kind="W", method="overparam")
    with pytest.raises(InputError, match="different latent kinds"):
        check_compatible([a, w], ["a", "w"])
    a.meta["generator"] = {"sha256": "1" * 64}
    b.meta["generator"] = {"sha256": "2" * 64}
    with pytest.raises(InputError, match="different generators"):
        check_compatible([a, b], ["a", "b"])
    with pytest.raises(InputError, match="at least 2 frames"):
        list(interpolation_frames(tiny_G, a, a, 1))


def test_interpolate_command(tmp_path, capsys):
    from gantune.cli.app import main

    def cli(*argv):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        return e.value.code or 0, capsys.readouterr().err

    assert cli("generate", "--weights", "demo-faces", "--seeds", "1,2", "-o", tmp_path / "g")[0] == 0
    assert cli("generate", "--weights", "demo-faces-overparam", "--seeds", "3", "-o", tmp_path / "w")[0] == 0
    recs = [tmp_path / "g" / "seed0001.safetensors", tmp_path / "g" / "seed0002.safetensors"]
    code, err = cli("interpolate", *recs, "--frames", "4", "--loop", "-o", tmp_path / "p")
    assert code == 0, err
    lines = [json.loads(ln) for ln in (tmp_path / "p" / "manifest.jsonl").read_text().splitlines()]
    assert [e["name"] for e in lines] == ["seed0001_to_seed0002", "seed0002_to_seed0001"]
    frames = sorted((tmp_path / "p" / "seed0001_to_seed0002").glob("*.png"))
    assert len(frames) == 4 and Image.open(tmp_path / "p" / "seed0001_to_seed0002.gif").n_frames == 4
    # the first frame is the generated sample itself; the return path ends where the first began
    assert (Image.open(frames[0]).tobytes() == Image.open(tmp_path / "g" / "seed0001.png").tobytes())
    back = sorted((tmp_path / "p" / "seed0002_to_seed0001").glob("*.png"))
    assert Image.open(back[-1]).tobytes() == Image.open(frames[0]).tobytes()
    code, err = cli("interpolate", recs[0], tmp_path / "w" / "seed0003.safetensors", "-o", tmp_path / "bad")
    assert code == 2 and "different latent kinds" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
