"""rosinality StyleGAN2 import: the official 1024 layout round-trips exactly, every key is accounted for, and the
imported generator renders what rosinality's own maths renders (an independent reference forward below)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from conftest import read_keys
from gantune.core import GeneratorConfig
from gantune.errors import WeightsError
from gantune.weights.rosinality import (
    from_rosinality_state_dict,
    load_rosinality,
    read_rosinality_file,
    to_rosinality_state_dict,
)
from support import TINY, assert_close, random_rosinality, ref_mapping, reference_forward, rosinality_layout


# ---------------------------------------------------------------------------------------------------------------------
# test-side model of the rosinality format (written from rosinality's published model, independent of gantune's tables)
# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# independent reference forward (rosinality semantics; plain loops, no gantune code)
# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# full-size official layout
# ---------------------------------------------------------------------------------------------------------------------
OFFICIAL_CH = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}


@pytest.fixture(scope="module")
def official_sd():
    rows = read_keys("keys_rosinality_G1024.tsv")
    layout = [(k, s) for k, s, _ in rows]
    assert layout == rosinality_layout(1024, 512, 8, OFFICIAL_CH)  # the test-side model matches the listing
    return random_rosinality(layout, seed=1)


def assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("avg_shape", [(512,), (18, 512)])
def test_official_1024_file_round_trips(official_sd, tmp_path, legacy, avg_shape):
    avg = torch.randn(512)
    latent_avg = avg if avg_shape == (512,) else avg[None].repeat(18, 1)
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": official_sd, "latent_avg": latent_avg}, path, _use_new_zipfile_serialization=not legacy)
    G, info = load_rosinality(path)
    assert G.cfg == GeneratorConfig(resolution=1024, mapping_layers=8, channel_base=32768, channel_max=512)
    assert G.cfg.channel_multiplier == 2
    assert info["source_format"] == "rosinality" and not info["w_avg_computed"]
    assert torch.equal(G.mapping.w_avg, avg)
    assert_same_state(to_rosinality_state_dict(G), official_sd)  # every key, official order, bit-exact
    # the mapping lands where it should: rosinality conv1 -> b4.conv1, convs.14 -> b1024.conv0, noise_16 -> b1024.conv1
    assert torch.equal(G.synthesis.layer("b1024.conv0").weight, official_sd["convs.14.conv.weight"][0])
    assert torch.equal(G.synthesis.layer("b1024.conv1").noise_const, official_sd["noises.noise_16"][0, 0])
    assert torch.equal(G.synthesis.layer("b512.torgb").bias, official_sd["to_rgbs.6.bias"].flatten())


def test_training_checkpoint_without_latent_avg(official_sd, tmp_path):
    """rosinality train.py layout: g, d, g_ema, optimizer states, args (Namespace, with numpy scalars), legacy file."""
    args = argparse.Namespace(size=1024, n_mlp=8, channel_multiplier=2, lr=np.float64(0.002), r1=10.0)
    ckpt = {
        "g": official_sd,
        "d": {"convs.0.0.weight": torch.randn(32, 3, 1, 1)},
        "g_ema": official_sd,
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
        "d_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
        "args": args,
        "ada_aug_p": np.float32(0.25),
    }
    path = tmp_path / "010000.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    top = read_rosinality_file(path)
    assert {"g", "d", "g_ema", "args"} <= set(top) and top["args"].size == 1024
    G, info = load_rosinality(path, w_avg_samples=1000, w_avg_seed=3)
    assert info["source_format"] == "rosinality-train" and info["w_avg_computed"]
    assert info["training_args"]["size"] == 1024 and info["training_args"]["lr"] == pytest.approx(0.002)
    assert G.cfg.extra["w_avg_samples"] == 1000
    expected = G.compute_w_avg(1000, seed=3)
    assert torch.allclose(G.mapping.w_avg, expected) and expected.abs().sum() > 0
    assert_same_state(to_rosinality_state_dict(G), official_sd)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda sd: sd.pop("convs.5.noise.weight"), "convs.5.noise.weight"),
        (lambda sd: sd.pop("noises.noise_16"), "noises.noise_16"),
        (lambda sd: sd.__setitem__("convs.3.conv.extra", torch.zeros(1)), "convs.3.conv.extra"),
        (lambda sd: sd.__setitem__("style.9.bias", torch.zeros(512)), "style.9"),
        (lambda sd: sd.__setitem__("convs.2.conv.blur.kernel", torch.ones(4, 4) / 4), "convs.2.conv.blur.kernel"),
        (lambda sd: sd.__setitem__("convs.9.activate.bias", torch.zeros(7)), "convs.9.activate.bias"),
    ],
    ids=["missing", "missing-noise", "extra", "extra-style", "wrong-blur", "wrong-shape"],
)
def test_bad_state_dict_names_the_key(official_sd, edit, needle):
    sd = dict(official_sd)
    edit(sd)
    with pytest.raises(WeightsError, match=needle.replace(".", r"\.")):
        from_rosinality_state_dict(sd, latent_avg=torch.zeros(512))


def test_latent_avg_forms():
    tiny = random_rosinality(rosinality_layout(**TINY))
    avg = torch.randn(16)
    for form in (avg, avg[None], avg[None].repeat(10, 1)):
        G = from_rosinality_state_dict(tiny, latent_avg=form)
        assert torch.equal(G.mapping.w_avg, avg)
    with pytest.raises(WeightsError, match="different rows"):
        from_rosinality_state_dict(tiny, latent_avg=torch.randn(10, 16))
    with pytest.raises(WeightsError, match="shape"):
        from_rosinality_state_dict(tiny, latent_avg=torch.randn(17))


def test_unsupported_channel_schedule_is_an_error():
    ch = dict(TINY["ch"])
    ch[16] = 12  # 4:16, 8:16, 16:12, 32:4 is not min(base // r, max) for any base
    sd = random_rosinality(rosinality_layout(32, 16, 3, ch))
    with pytest.raises(WeightsError, match="channel"):
        from_rosinality_state_dict(sd, latent_avg=torch.zeros(16))


# ---------------------------------------------------------------------------------------------------------------------
# numerical correctness against the reference forward
# ---------------------------------------------------------------------------------------------------------------------
def test_imported_generator_renders_like_rosinality():
    sd = random_rosinality(rosinality_layout(**TINY), seed=5)
    G = from_rosinality_state_dict(sd, latent_avg=torch.zeros(16))
    assert G.cfg.channel_base == 128 and G.cfg.channel_max == 16 and G.cfg.mapping_layers == 3
    assert {r: G.cfg.channels(r) for r in (4, 8, 16, 32)} == TINY["ch"]
    torch.manual_seed(0)
    z = torch.randn(2, 16)
    assert_close(G.mapping(z), ref_mapping(sd, z, 3))
    ws = torch.randn(2, G.num_ws, 16)  # a different w per layer catches a wrong W+ index
    ref = reference_forward(sd, ws)
    assert ref.shape == (2, 3, 32, 32) and ref.std() > 0.1
    with torch.no_grad():
        for fused in (False, True):
            img = G.synthesis(ws, noise_mode="const", fused=fused)
            assert_close(img, ref)
        # noise is really used: switching it off changes the picture
        assert (G.synthesis(ws, noise_mode="none") - ref).abs().max() > 1e-2
    # the exported dict renders the same in the reference (export is the inverse in meaning, not only in keys)
    assert torch.equal(reference_forward(to_rosinality_state_dict(G), ws), ref)
