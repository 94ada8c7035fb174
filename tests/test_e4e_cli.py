"""gantune invert --method e4e|restyle-e4e, and e4e / ReStyle-e4e as HyperStyle's initial latent, on tiny files of
the official layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gantune.cli.app import app
from gantune.core import Generator
from gantune.io import InversionRecord, load_image, pil_to_tensor
from gantune.methods.e4e import checkpoint as ck
from gantune.methods.e4e.method import encode_e4e, encode_restyle
from gantune.methods.hyper.hypernet import HyperNetwork
from gantune.methods.hyper.wencoder import WEncoder
from gantune.weights.rosinality import save_rosinality
from support import TINY64, _tiny_file, tiny_generator, write_tiny_official_files

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e4e_cli")
    G = tiny_generator(2, perturb=True, **TINY64)
    (tmp / "e").mkdir()
    (tmp / "r").mkdir()
    p_e4e, _, _ = _tiny_file(tmp / "e", G, fpn=True, seed=1)
    p_rs, _, _ = _tiny_file(tmp / "r", G, fpn=False, seed=2)
    p_gen = save_rosinality(G, tmp / "gen.pt")
    hn = HyperNetwork.from_specs(G.specs).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1)).eval()
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone()
    p_hs, p_enc = write_tiny_official_files(tmp, G, hn, enc, la)
    img = tmp / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    return dict(tmp=tmp, G=G, p_e4e=p_e4e, p_rs=p_rs, p_gen=p_gen, p_hs=p_hs, p_enc=p_enc, img=img)


def _x(s, size):
    return pil_to_tensor(load_image(s["img"]), size)


@pytest.mark.parametrize("method", ["e4e", "restyle-e4e"])
def test_invert_encoder_only(setup, method):
    s = setup
    out = s["tmp"] / f"out_{method}"
    enc = s["p_e4e"] if method == "e4e" else s["p_rs"]
    args = ["invert", str(s["img"]), "--method", method, "--encoder", str(enc), "--weights", str(s["p_gen"]),
            "-o", str(out), "--device", "cpu"] + (["--iters", "2"] if method == "restyle-e4e" else [])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    entry = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert entry["status"] == "ok" and entry["outputs"]["record"] == "face.safetensors"
    rec = InversionRecord.load(out / "face.safetensors")
    assert rec.latent_kind == "w+" and rec.method == method and not rec.deltas and rec.shared is None
    assert rec.meta["encoder"]["kind"] == method and len(rec.meta["encoder"]["sha256"]) == 64
    m = ck.load_style_encoder(enc)
    x = _x(s, m.encoder.input_size)
    want = encode_e4e(m, x, s["G"]) if method == "e4e" else encode_restyle(m, x, s["G"], iters=2).codes
    torch.testing.assert_close(rec.latent.float(), want[0], atol=1e-4, rtol=1e-4)
    if method == "restyle-e4e":
        assert rec.meta["params"]["iters"] == 2
        one = encode_restyle(m, x, s["G"], iters=1).codes
        assert (one[0] - rec.latent.float()).abs().max() > 1e-3


def test_wrong_encoder_file_for_method(setup):
    s = setup
    res = runner.invoke(app, ["invert", str(s["img"]), "--method", "e4e", "--encoder", str(s["p_rs"]), "--weights",
                              str(s["p_gen"]), "-o", str(s["tmp"] / "bad"), "--device", "cpu"])
    msg = str(res.exception) + str(getattr(res.exception, "hint", ""))
    assert res.exit_code != 0 and "ReStyle-e4e" in msg and "e4e-ffhq" in msg


def test_hyperstyle_initial_from_restyle(setup):
    s = setup
    out = s["tmp"] / "hs_rs"
    res = runner.invoke(app, ["invert", str(s["img"]), "--method", "hyperstyle", "--weights", str(s["p_hs"]),
                              "--encoder", str(s["p_rs"]), "--param", "initial=restyle-e4e", "--iters", "1",
                              "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rec = InversionRecord.load(out / "face.safetensors")
    assert rec.meta["params"]["initial"] == "restyle-e4e" and rec.meta["params"]["initial_iters"] == 2
    from gantune.methods.hyper.checkpoint import load_hyperstyle

    G = load_hyperstyle(s["p_hs"]).G
    m = ck.load_style_encoder(s["p_rs"])
    want = encode_restyle(m, _x(s, 256), G, iters=2).codes  # the pipeline feeds HyperStyle 256 px images
    torch.testing.assert_close(rec.latent.float(), want[0], atol=1e-4, rtol=1e-4)
    assert rec.deltas or rec.shared is not None
    # the W-encoder's latent differs: the initial latent really came from ReStyle
    out2 = s["tmp"] / "hs_w"
    res = runner.invoke(app, ["invert", str(s["img"]), "--method", "hyperstyle", "--weights", str(s["p_hs"]),
                              "--encoder", str(s["p_enc"]), "--iters", "1", "-o", str(out2), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (InversionRecord.load(out2 / "face.safetensors").latent.float() - rec.latent.float()).abs().max() > 1e-3
    bad = runner.invoke(app, ["invert", str(s["img"]), "--method", "hyperstyle", "--weights", str(s["p_hs"]),
                              "--encoder", str(s["p_rs"]), "--param", "initial=e4e", "-o", str(s["tmp"] / "hs_bad"),
                              "--device", "cpu"])
    msg = str(bad.exception) + str(getattr(bad.exception, "hint", ""))
    assert bad.exit_code != 0 and "initial=e4e" in msg and "restyle-e4e file" in msg


def test_adapt_with_restyle_codes(setup):
    from gantune.editing import adapt_render
    from gantune.io import tensor_to_pil
    from gantune.methods.hyper.checkpoint import load_hyperstyle

    s = setup
    inv = s["tmp"] / "adapt_inv"
    res = runner.invoke(app, ["invert", str(s["img"]), "--method", "hyperstyle", "--weights", str(s["p_hs"]),
                              "--encoder", str(s["p_enc"]), "--iters", "2", "-o", str(inv), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    target = Generator(s["G"].cfg).eval()
    target.load_state_dict(s["G"].state_dict())
    with torch.no_grad():
        for p in target.synthesis.parameters():
            p.add_(0.05 * torch.randn_like(p))
    p_toon = save_rosinality(target, s["tmp"] / "toon.pt")
    outs = {}
    for codes in ["record", str(s["p_rs"])]:
        ao = s["tmp"] / f"adapted_{len(outs)}"
        res = runner.invoke(app, ["adapt", str(inv / "face.safetensors"), "--target", str(p_toon), "-o", str(ao),
                                  "--device", "cpu", "--codes", codes])
        assert res.exit_code == 0, (res.output, res.exception)
        outs[codes] = np.asarray(Image.open(ao / "face.png")).astype(int)
    rec = InversionRecord.load(inv / "face.safetensors")
    m = ck.load_style_encoder(s["p_rs"])
    G_src = load_hyperstyle(s["p_hs"]).G
    codes = encode_restyle(m, pil_to_tensor(load_image(s["img"]), 64), G_src, iters=2).codes
    import dataclasses

    want, applied = adapt_render(target, dataclasses.replace(rec, latent=codes[0]))
    assert applied and np.abs(outs[str(s["p_rs"])] - np.asarray(tensor_to_pil(want[0])).astype(int)).max() <= 1
    assert np.abs(outs[str(s["p_rs"])] - outs["record"]).max() > 2  # the ReStyle codes replaced the record's latent
    # a record whose photo has changed is refused
    s["img"].rename(s["tmp"] / "moved.png")
    try:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(s["img"])
        res = runner.invoke(app, ["adapt", str(inv / "face.safetensors"), "--target", str(p_toon), "-o",
                                  str(s["tmp"] / "adapted_bad"), "--device", "cpu", "--codes", str(s["p_rs"])])
        entry = json.loads((s["tmp"] / "adapted_bad" / "manifest.jsonl").read_text().splitlines()[0])
        assert res.exit_code == 1 and entry["status"] == "failed" and "changed since the inversion" in entry["error"]
    finally:
        (s["tmp"] / "moved.png").replace(s["img"])


@pytest.mark.parametrize("method", ["e4e", "restyle-e4e"])
def test_python_api_gives_the_commands_results(setup, method):
    """gantune.invert with method e4e / restyle-e4e runs the registry's method as `gantune invert --method` does:
    the same latent and image, bit for bit; gantune.interpolate gives the command's frames."""
    import gantune
    from gantune.io.images import tensor_to_pil

    s = setup
    out = s["tmp"] / f"api_{method}"
    enc = s["p_e4e"] if method == "e4e" else s["p_rs"]
    extra = {"iters": 2} if method == "restyle-e4e" else {}
    args = ["invert", str(s["img"]), "--method", method, "--encoder", str(enc), "--weights", str(s["p_gen"]),
            "-o", str(out), "--device", "cpu"] + (["--iters", "2"] if extra else [])
    assert runner.invoke(app, args).exit_code == 0
    rec = InversionRecord.load(out / "face.safetensors")
    [res] = gantune.invert(s["img"], method=method, encoder=str(enc), weights=str(s["p_gen"]), device="cpu", **extra)
    assert torch.equal(res.latent, rec.latent) and res.method == rec.method
    assert np.array_equal(np.asarray(tensor_to_pil(res.image)), np.asarray(Image.open(out / "face.png")))
    # interpolation from the API and from the command line, between this record and itself moved
    moved = InversionRecord(latent=rec.latent + 0.5, latent_kind=rec.latent_kind, method=rec.method, meta=rec.meta)
    moved.save(out / "moved.safetensors")
    lerp = out / "lerp"
    r = runner.invoke(app, ["interpolate", str(out / "face.safetensors"), str(out / "moved.safetensors"), "-n", "3",
                            "-w", str(s["p_gen"]), "-o", str(lerp), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    frames = gantune.interpolate(out / "face.safetensors", out / "moved.safetensors", steps=3,
                                 generator=str(s["p_gen"]))
    assert frames.shape[0] == 3
    for i, f in enumerate(frames):
        png = next(lerp.glob(f"*/{i:03d}.png"))
        assert np.array_equal(np.asarray(tensor_to_pil(f)), np.asarray(Image.open(png)))
