"""invert-hyper / invert --method hyperstyle / edit / adapt end to end on tiny official-layout files, and the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gantune.cli.app import app
from gantune.core import Generator
from gantune.io import InversionRecord, load_image, pil_to_tensor, tensor_to_pil
from gantune.methods.hyper.hypernet import HyperNetwork
from gantune.methods.hyper.inference import render
from gantune.methods.hyper.wencoder import WEncoder
from support import TINY64, tiny_generator, write_tiny_official_files

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hyper_cli")
    G = tiny_generator(11, perturb=True, **TINY64)
    hn = HyperNetwork.from_specs(G.specs).eval()
    with torch.no_grad():
        for lyr in hn.layers:
            if lyr.head != "shared":
                hn.heads[lyr.name.replace(".", "_")].output[-1].weight.mul_(20)
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1)).eval()
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone()
    p_hs, p_enc = write_tiny_official_files(tmp, G, hn, enc, la)
    imgs = tmp / "imgs"
    (imgs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["a.png", "sub/a.png"]:
        Image.fromarray(rng.integers(0, 255, (80, 72, 3), dtype=np.uint8)).save(imgs / name)
    (imgs / "broken.png").write_bytes(b"not an image at all")
    out = tmp / "out"
    res = runner.invoke(app, ["invert-hyper", str(imgs / "a.png"), str(imgs / "broken.png"), str(imgs / "sub" / "a.png"),
                              "-o", str(out), "--weights", str(p_hs), "--encoder", str(p_enc), "--iters", "1",
                              "--batch-size", "2", "--device", "cpu", "--save-intermediate", "--fp16-deltas"])
    return dict(tmp=tmp, G=G, hn=hn, enc=enc, la=la, p_hs=p_hs, p_enc=p_enc, imgs=imgs, out=out, res=res)


def test_invert_hyper_outputs_and_manifest(setup):
    res, out = setup["res"], setup["out"]
    assert res.exit_code == 1, res.output  # one input failed
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(e["name"], e["status"]) for e in lines] == [("a", "ok"), ("broken", "failed"), ("a_2", "ok")] or \
        sorted((e["name"], e["status"]) for e in lines) == [("a", "ok"), ("a_2", "ok"), ("broken", "failed")]
    bad = next(e for e in lines if e["status"] == "failed")
    assert "broken.png" in bad["error"] and "not a readable image" in bad["error"]
    for stem in ("a", "a_2"):
        assert Image.open(out / f"{stem}.png").size == (64, 64)
        assert sorted(p.parent.name for p in (out / "intermediate").glob(f"*/{stem}.png")) == ["0", "1"]  # y_0, y_1
    rec = InversionRecord.load(out / "a.safetensors")
    assert rec.method == "hyperstyle" and rec.latent_kind == "w+" and rec.latent.shape == (10, 32)
    assert rec.meta["params"]["iters"] == 1 and rec.meta["params"]["noise_mode"] == "const"
    assert rec.meta["layers"]["b64.conv0"] == {"rosinality": "convs.6", "hyperstyle_index": 11, "head": "channel"}
    assert rec.meta["generator"]["sha256"] and rec.meta["source"]["sha256"]
    assert "delta_taps" not in rec.meta
    assert rec.deltas["b64.conv0"].shape == (16, 32) and rec.deltas["b64.conv0"].dtype == torch.float16
    assert rec.deltas["b16.conv0"].shape == (32, 32, 3, 3)  # shared heads: per-tap offsets
    assert "invert" in rec.meta["timings"]


def test_record_roundtrips_to_the_same_image(setup):
    from gantune.editing import render_record
    from gantune.weights import load_generator

    out = setup["out"]
    rec = InversionRecord.load(out / "a_2.safetensors")
    G, _ = load_generator(str(setup["p_hs"]))  # the generator inside the HyperStyle file
    img = render_record(G, rec)
    png = np.asarray(load_image(out / "a_2.png"))
    # fp16 offsets: at most one 8-bit level off on a few pixels
    diff = np.abs(np.asarray(tensor_to_pil(img[0])).astype(int) - png.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # and the latent is the W-encoder output + latent_avg of the input
    from gantune.methods.pipeline import make_square

    x = pil_to_tensor(make_square(load_image(setup["imgs"] / "sub" / "a.png"), "crop")[0], 256)  # 72x80: centre crop
    with torch.no_grad():
        torch.testing.assert_close(rec.latent, (setup["enc"](x) + setup["la"])[0], atol=1e-5, rtol=1e-5)


def test_invert_method_dispatch_and_shard(setup):
    out = setup["tmp"] / "out_shard"
    imgs = setup["imgs"]
    # shard 1/3 of [a, broken, sub/a] is only the broken file: the method loads, nothing is inverted
    res = runner.invoke(app, ["invert", str(imgs / "a.png"), str(imgs / "broken.png"), str(imgs / "sub" / "a.png"),
                              "--method", "hyperstyle", "--shard", "1/3", "-o", str(out), "--weights",
                              str(setup["p_hs"]), "--encoder", str(setup["p_enc"]), "--device", "cpu"])
    assert res.exit_code == 1
    lines = [json.loads(ln) for ln in (out / "manifest.shard1of3.jsonl").read_text().splitlines()]
    assert [e["name"] for e in lines] == ["broken"]
    res = runner.invoke(app, ["invert", str(imgs / "a.png"), "--method", "nope", "-o", str(out)])
    assert res.exit_code == 2 and "'nope' is not one of" in res.output
    res = runner.invoke(app, ["invert-hyper", str(imgs / "a.png"), "-o", str(out), "--weights", str(setup["p_enc"]),
                              "--encoder", str(setup["p_enc"]), "--device", "cpu"])
    from gantune.errors import WeightsError

    assert isinstance(res.exception, WeightsError) and "W-encoder checkpoint" in str(res.exception)
    assert "not a HyperStyle checkpoint" in str(res.exception)


def test_edit_strip_and_sheet(setup):
    out, tmp, G = setup["out"], setup["tmp"], setup["G"]
    n = torch.randn(G.cfg.w_dim)
    np.save(tmp / "dir.npy", n.numpy())
    torch.save(n[None, None].expand(1, G.num_ws, -1).clone(), tmp / "pose_like.pt")  # (1, L, w) like pose.pt
    eo = tmp / "edits"
    res = runner.invoke(app, ["edit", str(out / "a.safetensors"), "--direction", str(tmp / "dir.npy"), "--direction",
                              str(tmp / "pose_like.pt"), "--strength", "-1:1:3", "-o", str(eo), "--weights",
                              str(setup["p_hs"]), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in eo.glob("a_*.png"))
    assert files == ["a_dir_0.png", "a_dir_m1.png", "a_dir_p1.png", "a_pose_like_0.png", "a_pose_like_m1.png",
                     "a_pose_like_p1.png", "a_sheet.png"]
    assert Image.open(eo / "a_sheet.png").size == (3 * 64, 2 * 64)
    # strength 0 is the reconstruction; +1 is w + n with the same offsets; both directions are the same n
    # (the PNG was rendered with fp32 offsets before they were stored as fp16: at most one level off)
    diff = np.abs(np.asarray(Image.open(eo / "a_dir_0.png")).astype(int) - np.asarray(Image.open(out / "a.png")))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert np.array_equal(np.asarray(Image.open(eo / "a_dir_p1.png")), np.asarray(Image.open(eo / "a_pose_like_p1.png")))
    assert not np.array_equal(np.asarray(Image.open(eo / "a_dir_p1.png")), np.asarray(Image.open(out / "a.png")))


def test_adapt_applies_fine_offsets_to_target(setup):
    from gantune.io.render import record_deltas
    from gantune.weights.rosinality import save_rosinality

    out, tmp, G = setup["out"], setup["tmp"], setup["G"]
    target = Generator(G.cfg).eval()
    target.load_state_dict(G.state_dict())
    with torch.no_grad():
        for p in target.synthesis.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_rosinality(target, tmp / "toon.pt")
    ao = tmp / "adapted"
    res = runner.invoke(app, ["adapt", str(out / "a.safetensors"), "--target", str(tmp / "toon.pt"), "-o", str(ao),
                              "--device", "cpu", "--compare"])
    assert res.exit_code == 0, res.output
    entry = json.loads((ao / "manifest.jsonl").read_text().splitlines()[0])
    assert entry["info"]["layers"] == ["b64.conv0", "b64.conv1"]  # a 64 px generator: the fine level
    rec = InversionRecord.load(out / "a.safetensors")
    d = record_deltas(rec)
    with torch.no_grad():
        want = render(target, rec.latent[None].float(), {k: d[k][None] for k in entry["info"]["layers"]})
        plain = target.synthesis(rec.latent[None].float())
    got = np.asarray(Image.open(ao / "a.png")).astype(int)
    assert np.abs(got - np.asarray(tensor_to_pil(want[0])).astype(int)).max() <= 1
    assert np.abs(got - np.asarray(tensor_to_pil(plain[0])).astype(int)).max() > 2  # the offsets matter
    left = np.asarray(Image.open(ao / "a_compare.png"))[:, :64]
    assert np.abs(left.astype(int) - np.asarray(tensor_to_pil(plain[0])).astype(int)).max() <= 1


def test_python_api(setup):
    import gantune
    from gantune.methods.hyper.method import HyperStyle

    G = setup["G"]
    hs = HyperStyle(G, setup["hn"], setup["enc"], setup["la"], iters=1, keep_intermediates=True)
    x = pil_to_tensor(load_image(setup["imgs"] / "a.png"), 256)
    (r,) = gantune.invert([setup["imgs"] / "a.png"], inverter=hs)
    assert r.name == "a" and r.image.shape == (3, 64, 64) and len(r.intermediates) == 2
    assert r.meta["layers"]["b16.conv0"]["head"] == "shared" and r.shared.expand("b16.conv0").shape == (32, 32, 3, 3)
    png = np.asarray(Image.open(setup["out"] / "a.png"))
    # same input file, same models: the API result equals the CLI's PNG except fp16 offset rounding
    assert np.abs(np.asarray(tensor_to_pil(r.image)).astype(int) - png.astype(int)).max() <= 1
    strip = gantune.edit(r, torch.zeros(G.cfg.w_dim), strength=[0.0, 1.0], generator=G)
    torch.testing.assert_close(strip[0], strip[1])  # a zero direction changes nothing
    torch.testing.assert_close(strip[0], r.image, atol=1e-5, rtol=0)
    assert x.shape == (1, 3, 256, 256)


def test_compiled_batch_pads_the_last_batch_and_keeps_each_images_result(setup):
    """With the synthesis compiled for batches of 3 (``--compile``), a batch of 2 is padded with copies of its last
    image, whose results are dropped: each image gets what an unpadded run gives it (the padding itself runs here on
    the CPU, without compiling)."""
    from gantune.methods.hyper.method import HyperStyle

    hs = HyperStyle(setup["G"], setup["hn"], setup["enc"], setup["la"], iters=2)
    x = torch.cat([pil_to_tensor(load_image(setup["imgs"] / n), 256) for n in ("a.png", "sub/a.png")])
    plain = hs(x, ["a", "b"])
    seen = []
    real = setup["G"].synthesis.forward
    hs.compiled_batch = 3
    try:
        setup["G"].synthesis.forward = lambda ws, *a, **k: seen.append(ws.shape[0]) or real(ws, *a, **k)
        padded = hs(x, ["a", "b"])
    finally:
        del setup["G"].synthesis.forward
    assert seen and set(seen) == {3}
    assert [r.name for r in padded] == ["a", "b"]
    for p, q in zip(plain, padded):
        torch.testing.assert_close(p.image, q.image, atol=1e-5, rtol=0)
        assert p.deltas.keys() == q.deltas.keys()
