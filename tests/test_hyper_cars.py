"""HyperStyle cars (4:3 content in a square generator) and AFHQ-wild (512 px) on tiny official-layout files: the
official crop/pool sequence, 12×16 feature maps through the refinement blocks, 4:3 photos in, cropped images out of
invert, edit and adapt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from gantune.cli.app import app
from gantune.io import InversionRecord
from gantune.methods.hyper.domain import CARS, crop_output, output_crop, pool_reconstruction
from gantune.methods.hyper.hypernet import ChannelHead, HyperNetwork, SharedHead, TunedLayer
from gantune.methods.hyper.inference import refine, render
from gantune.methods.hyper.wencoder import WEncoder
from gantune.methods.pipeline import fit_aspect, make_square
from support import TINY64, RecordingHypernet, tiny_generator, write_tiny_official_files

runner = CliRunner()


def test_official_512_crop_and_pool_numbers():
    y = torch.randn(2, 3, 512, 512)
    # first pass: face_pool (AdaptiveAvgPool2d((256, 256))) then [:, :, 32:224, :]
    want0 = torch.nn.AdaptiveAvgPool2d((256, 256))(y)[:, :, 32:224, :]
    torch.testing.assert_close(pool_reconstruction(y, 256, CARS, first=True), want0)
    # later passes: [:, :, 64:448, :] then AdaptiveAvgPool2d((192, 256))
    want = torch.nn.AdaptiveAvgPool2d((192, 256))(y[:, :, 64:448, :])
    torch.testing.assert_close(pool_reconstruction(y, 256, CARS, first=False), want)
    torch.testing.assert_close(crop_output(y, CARS), y[:, :, 64:448, :])  # the 512x384 output
    assert output_crop(512, CARS) == {"box": [0, 64, 512, 448], "size": [512, 512]}
    torch.testing.assert_close(pool_reconstruction(y, 256, "square", first=True), F.adaptive_avg_pool2d(y, 256))


def test_refinement_blocks_on_a_12x16_feature_map():
    """The official blocks keep their 16×16 conv counts for the cars' 12×16 map: shared 12×16 → 12×16, 6×8, 3×4, 2×2,
    1×1; per-channel 6×8, 3×4, 2×2 then the average pool; toRGB down to 1×1."""
    torch.manual_seed(0)
    feat = torch.randn(1, 512, 12, 16)
    sizes = []
    shared = SharedHead(512, spatial=16)
    for m in shared.convs[::2]:
        m.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        code = shared(feat)
    assert code.shape == (1, 512) and sizes == [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    chan = ChannelHead(TunedLayer("x", 8, 4, 3, "channel", 14), 512, spatial=16)
    rgb = ChannelHead(TunedLayer("y", 8, 3, 1, "torgb", 16), 512, spatial=16)
    with torch.no_grad():
        h = chan.convs(feat)
        assert h.shape[-2:] == (2, 2)
        want = chan.output[1](h.mean(dim=(2, 3), keepdim=True)).view(1, 4, 8)  # AdaptiveAvgPool2d(1), 1×1 conv
        torch.testing.assert_close(chan(feat), want)
        assert rgb.convs(feat).shape[-2:] == (1, 1) and rgb(feat).shape == (1, 3, 8)


def test_cars_refine_follows_the_official_sequence():
    G = tiny_generator(11, perturb=True, **TINY64)
    R = G.cfg.resolution  # 64: crops rows 8:56 as 64:448 at 512
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1)).eval()
    la = torch.randn(G.cfg.w_dim)
    T = 3
    offsets = [{"b16.conv0": torch.randn(1, 32, 32, 3, 3) * 0.2, "b64.conv1": torch.randn(1, 16, 16) * 0.2}
               for _ in range(T)]
    hn = RecordingHypernet(offsets)
    x = torch.rand(1, 3, 192, 256) * 2 - 1  # Resize((192, 256))
    out = refine(x, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=T, keep_intermediates=True, domain=CARS)
    with torch.no_grad():
        codes = enc(x) + la  # the W-encoder sees the 192×256 input as it is
    torch.testing.assert_close(out.codes, codes)
    y = render(G, codes, None)
    prev = F.adaptive_avg_pool2d(y, (256, 256))[:, :, 32:224, :]
    acc = {}
    for t in range(T):
        torch.testing.assert_close(hn.inputs[t][0], x)
        torch.testing.assert_close(hn.inputs[t][1], prev)
        assert hn.inputs[t][1].shape == (1, 3, 192, 256)
        acc = {k: acc.get(k, 0) + v for k, v in offsets[t].items()}
        y = render(G, codes, acc)
        torch.testing.assert_close(out.intermediates[t + 1], y)
        prev = F.adaptive_avg_pool2d(y[:, :, R // 8 : R - R // 8, :], (192, 256))
    torch.testing.assert_close(out.images, y)  # full output; the method crops it


def test_fit_aspect():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 100, 3), dtype=np.uint8))  # 100×90
    a, how = fit_aspect(img, "crop", (192, 256))
    assert a.size == (100, 75) and how == {"mode": "crop", "from": [100, 90], "box": [0, 7, 100, 82], "aspect": [4, 3]}
    b, how = fit_aspect(img, "pad", (192, 256))
    assert b.size == (120, 90) and how["offset"] == [10, 0]
    assert fit_aspect(a, "crop", (192, 256))[1] is None
    assert make_square(img, "crop")[0].size == (90, 90) and "aspect" not in make_square(img, "crop")[1]


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hyper_cars")
    G = tiny_generator(11, perturb=True, **TINY64)
    hn = HyperNetwork.from_specs(G.specs).eval()  # the official 256-side network: a 12×16 map for 192×256 inputs
    with torch.no_grad():
        for lyr in hn.layers:
            if lyr.head != "shared":
                hn.heads[lyr.name.replace(".", "_")].output[-1].weight.mul_(20)
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1)).eval()
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone()
    p_hs, p_enc = write_tiny_official_files(tmp, G, hn, enc, la)
    obj = torch.load(p_hs, weights_only=True)
    obj["opts"]["dataset_type"] = "cars_hypernet"
    p_cars = tmp / "hyperstyle_cars_tiny.pt"
    torch.save(obj, p_cars)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (75, 100, 3), dtype=np.uint8)).save(tmp / "car.png")  # 4:3
    Image.fromarray(rng.integers(0, 255, (90, 90, 3), dtype=np.uint8)).save(tmp / "sq.png")
    out = tmp / "inv"
    res = runner.invoke(app, ["invert", str(tmp / "car.png"), str(tmp / "sq.png"), "--method", "hyperstyle",
                              "--weights", str(p_cars), "--encoder", str(p_enc), "--iters", "2", "--device", "cpu",
                              "-o", str(out), "--save-intermediate"])
    return dict(tmp=tmp, G=G, hn=hn, enc=enc, la=la, p_hs=p_hs, p_cars=p_cars, p_enc=p_enc, out=out, res=res)


def test_cars_invert_gives_cropped_png_and_record(cars):
    res, out, G = cars["res"], cars["out"], cars["G"]
    assert res.exit_code == 0, (res.output, res.exception)
    for stem in ("car", "sq"):
        assert Image.open(out / f"{stem}.png").size == (64, 48)  # 512×384 scaled to the 64 px generator
        assert Image.open(out / "intermediate" / "2" / f"{stem}.png").size == (64, 48)
    lines = {e["name"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert not (lines["car"]["info"] or {}).get("fit")  # already 4:3
    assert lines["sq"]["info"]["fit"] == {"mode": "crop", "from": [90, 90], "box": [0, 11, 90, 78], "aspect": [4, 3]}
    rec = InversionRecord.load(out / "car.safetensors")
    assert rec.meta["output_crop"] == {"box": [0, 8, 64, 56], "size": [64, 64]}
    assert rec.meta["params"]["domain"] == "cars"
    # the PNG is the record rendered and cut to its crop; the latent is the W-encoder's of the 192×256 photo
    from gantune.editing import render_record
    from gantune.io import load_image, pil_to_tensor, tensor_to_pil

    img = render_record(G, rec)
    assert img.shape == (1, 3, 48, 64)
    diff = np.abs(np.asarray(tensor_to_pil(img[0])).astype(int) - np.asarray(Image.open(out / "car.png")).astype(int))
    assert diff.max() <= 1
    x = pil_to_tensor(load_image(cars["tmp"] / "car.png"), (192, 256))
    with torch.no_grad():
        torch.testing.assert_close(rec.latent, (cars["enc"](x) + cars["la"])[0], atol=1e-5, rtol=1e-5)


def test_cars_edit_and_adapt_keep_the_crop(cars):
    from gantune.weights.rosinality import save_rosinality

    tmp, out, G = cars["tmp"], cars["out"], cars["G"]
    np.save(tmp / "dir.npy", torch.randn(G.cfg.w_dim).numpy())
    eo = tmp / "edits"
    res = runner.invoke(app, ["edit", str(out / "car.safetensors"), "--direction", str(tmp / "dir.npy"),
                              "--strength", "0:1:2", "-o", str(eo), "--weights", str(cars["p_cars"]), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert Image.open(eo / "car_dir_0.png").size == (64, 48) and Image.open(eo / "car_dir_p1.png").size == (64, 48)
    diff = np.abs(np.asarray(Image.open(eo / "car_dir_0.png")).astype(int) - np.asarray(Image.open(out / "car.png")))
    assert diff.max() <= 1
    save_rosinality(G, tmp / "target.pt")
    ao = tmp / "adapted"
    res = runner.invoke(app, ["adapt", str(out / "car.safetensors"), "--target", str(tmp / "target.pt"), "-o", str(ao),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert Image.open(ao / "car.png").size == (64, 48)


def test_domain_detection_and_override(cars):
    from gantune.methods.hyper.method import HyperStyle

    assert HyperStyle.load(cars["p_cars"], cars["p_enc"], hash_files=False).domain == CARS
    square = HyperStyle.load(cars["p_hs"], cars["p_enc"], hash_files=False)  # no dataset_type: square
    assert square.domain == "square" and square.input_size == (256, 256)
    hs = HyperStyle.load(cars["p_hs"], cars["p_enc"], hash_files=False, domain="cars")
    assert hs.input_size == (192, 256)
    (r,) = hs(torch.rand(1, 3, 192, 256) * 2 - 1)
    assert r.image.shape == (3, 48, 64) and r.meta["output_crop"]["box"] == [0, 8, 64, 56]
    sq = torch.rand(1, 3, 256, 256) * 2 - 1  # a square input (the Python API's) is cut to its centre 4:3
    torch.testing.assert_close(hs(sq)[0].latent, hs(sq[:, :, 32:224, :])[0].latent)
    res = runner.invoke(app, ["invert", str(cars["tmp"] / "car.png"), "--method", "hyperstyle", "--weights",
                              str(cars["p_hs"]), "--encoder", str(cars["p_enc"]), "--iters", "1", "--device", "cpu",
                              "--param", "domain=cars", "--resize", "32", "-o", str(cars["tmp"] / "override")])
    assert res.exit_code == 0, res.output
    assert Image.open(cars["tmp"] / "override" / "car.png").size == (32, 24)  # --resize: the width, aspect kept
    res = runner.invoke(app, ["invert", str(cars["tmp"] / "car.png"), "--method", "hyperstyle", "--weights",
                              str(cars["p_cars"]), "--encoder", str(cars["p_enc"]), "--device", "cpu",
                              "--param", "domain=boats", "-o", str(cars["tmp"] / "bad")])
    assert res.exit_code != 0 and "domain='boats'" in res.output + str(res.exception)


def test_bad_output_crop_is_refused(cars):
    import dataclasses

    from gantune.editing import render_record
    from gantune.io.record import RecordError

    rec = InversionRecord.load(cars["out"] / "car.safetensors")
    for bad in ({"box": [0, 8, 64, float("nan")], "size": [64, 64]}, {"box": [0, 8, 80, 56], "size": [64, 64]},
                [0, 8, 64, 56]):
        with pytest.raises(RecordError, match="output_crop"):
            render_record(cars["G"], dataclasses.replace(rec, meta={**rec.meta, "output_crop": bad}))


def test_afhq_512_layout_inverts_at_512(tmp_path):
    """AFHQ wild: a 512 px generator (16 W+ rows, 23 official delta indices), the default square handling."""
    G = tiny_generator(3, perturb=True, resolution=512, channel_base=2048)
    hn = HyperNetwork.from_specs(G.specs, width=16, input_size=64).eval()
    assert max(lyr.hyperstyle_index for lyr in hn.layers) <= 22
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16).eval()
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone()
    p_hs, p_enc = write_tiny_official_files(tmp_path, G, hn, enc, la,
                                            opts=dict(dataset_type="afhq_wild_hypernet", output_size=512, input_size=64))
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    out = tmp_path / "inv"
    res = runner.invoke(app, ["invert", str(tmp_path / "cat.png"), "--method", "hyperstyle", "--weights", str(p_hs),
                              "--encoder", str(p_enc), "--iters", "1", "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert Image.open(out / "cat.png").size == (512, 512)
    rec = InversionRecord.load(out / "cat.safetensors")
    assert rec.latent.shape == (16, G.cfg.w_dim) and "output_crop" not in rec.meta


def test_official_afhq_512_layout_loads_strictly():
    """hyperstyle_afhq_wild.pt's layout: the rosinality 512 px, channel multiplier 2 decoder (the 1024 listing without
    convs.14-15, to_rgbs.7, noise_15-16) and the default blocks below index 23 (23 delta-list entries at 512 px)."""
    from conftest import read_keys
    from gantune.core import make_kernel
    from gantune.methods.hyper import checkpoint as ck
    from support import DEFAULT17, official_meta_state

    gone = ("convs.14.", "convs.15.", "to_rgbs.7.", "noises.noise_15", "noises.noise_16")
    dec = {"decoder." + k: make_kernel() * 4 if k.endswith("kernel") else torch.zeros(s, dtype=getattr(torch, dt))
           for k, s, dt in read_keys("keys_rosinality_G1024.tsv") if not k.startswith(gone)}
    assert len(dec) == 171 - 18 and dec["decoder.to_rgbs.6.conv.weight"].shape == (1, 3, 64, 1, 1)
    hyp = {"hypernet." + k: v for k, v in official_meta_state("keys_hypernet_default17.tsv").items()
           if not k.startswith(("refinement_blocks.23.", "refinement_blocks.24."))}
    kept = [i for i in DEFAULT17 if i < 23]
    obj = {"state_dict": {**hyp, **dec}, "latent_avg": torch.ones(16, 512), "global_step": 1, "best_val_loss": None,
           "opts": {"layers_to_tune": ",".join(map(str, kept)), "encoder_type": "SharedWeightsHyperNetResNet",
                    "output_size": 512, "dataset_type": "afhq_wild_hypernet", "device": "cuda:0"}}
    model = ck.hyperstyle_from_checkpoint(obj, device="meta")
    assert model.G.cfg.resolution == 512 and model.G.num_ws == 16 and model.latent_avg.shape == (16, 512)
    assert sorted(model.info["hyperstyle_indices"].values()) == kept and model.info["warnings"] == []
    assert model.info["dataset_type"] == "afhq_wild_hypernet"
    specs = {s.name: s for s in model.G.specs}
    assert [(specs[n].in_ch, specs[n].out_ch) for n in ("b128.conv0", "b512.conv1")] == [(512, 256), (64, 64)]


def test_cars_interpolate_frames_keep_the_crop(cars):
    io = cars["tmp"] / "interp"
    res = runner.invoke(app, ["interpolate", str(cars["out"] / "car.safetensors"), str(cars["out"] / "sq.safetensors"),
                              "--frames", "3", "-o", str(io), "--weights", str(cars["p_cars"]), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    frames = sorted((io / "car_to_sq").glob("*.png"))
    assert len(frames) == 3 and all(Image.open(f).size == (64, 48) for f in frames)
    diff = np.abs(np.asarray(Image.open(frames[0])).astype(int) - np.asarray(Image.open(cars["out"] / "car.png")))
    assert diff.max() <= 1


def test_python_api_fits_photos_to_the_car_aspect(cars):
    """gantune.invert crops a square photo to 4:3 (as the command does), not to a square and then again."""
    import gantune
    from gantune.methods.hyper.method import HyperStyle

    hs = HyperStyle.load(str(cars["p_cars"]), str(cars["p_enc"]), device="cpu", iters=2)
    (r,) = gantune.invert([cars["tmp"] / "sq.png"], inverter=hs)
    assert r.image.shape == (3, 48, 64)
    cli = np.asarray(Image.open(cars["out"] / "sq.png")).astype(int)
    from gantune.io import tensor_to_pil

    assert np.abs(np.asarray(tensor_to_pil(r.image)).astype(int) - cli).max() <= 1  # the same crop as gantune invert
