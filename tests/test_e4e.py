"""e4e and ReStyle-e4e: the official key layouts import exactly, and the forward passes match a reference written
here directly on the official state dict (functional ops, no gantune module)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import read_keys
from gantune.errors import WeightsError
from gantune.methods.e4e import checkpoint as ck
from gantune.methods.e4e.method import encode_e4e, encode_restyle
from support import E4E_TINY, _tiny_file, official_encoder_state, tiny_generator


# --- an official-layout state dict, from the reference architecture's rules -----------------------------------------


@pytest.mark.parametrize("listing,fpn", [("keys_restyle_e4e.tsv", False), ("keys_e4e.tsv", True)])
def test_rules_reproduce_the_official_listings(listing, fpn):
    rows = read_keys(listing)
    sd = official_encoder_state(fpn=fpn)
    assert [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()] == rows


@pytest.mark.parametrize("listing,kind", [("keys_restyle_e4e.tsv", "restyle-e4e"), ("keys_e4e.tsv", "e4e")])
def test_official_layout_loads_strictly_and_names_bad_keys(listing, kind):
    enc_sd = {"encoder." + k: torch.empty(s, dtype=getattr(torch, dt), device="meta") for k, s, dt in read_keys(listing)}
    obj = {"state_dict": enc_sd, "opts": {"encoder_type": "x"}, "latent_avg": torch.zeros(18, 512)}
    m = ck.style_encoder_from_checkpoint(obj, device="meta", kind=kind)
    enc = m.encoder
    assert m.kind == kind and enc.num_ws == 18 and enc.w_dim == 512 and enc.units == (3, 4, 14, 3)
    assert enc.fpn == (kind == "e4e") and enc.in_channels == (3 if kind == "e4e" else 6)
    assert enc.head_convs == ((4,) * 3 + (5,) * 4 + (6,) * 11 if kind == "e4e" else (4,) * 18)
    assert set(enc.state_dict()) == {k[len("encoder."):] for k in enc_sd}
    missing = dict(enc_sd)
    missing.pop("encoder.styles.17.linear.bias")
    with pytest.raises(WeightsError, match=r"missing key\(s\): encoder\.styles\.17\.linear\.bias"):
        ck.style_encoder_from_checkpoint(dict(obj, state_dict=missing), device="meta")
    extra = dict(enc_sd, **{"encoder.output_pool.weight": torch.empty(3, device="meta")})
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): encoder\.output_pool\.weight"):
        ck.style_encoder_from_checkpoint(dict(obj, state_dict=extra), device="meta")
    wrong = dict(enc_sd)
    wrong["encoder.styles.3.linear.weight"] = torch.empty(512, 256, device="meta")
    with pytest.raises(WeightsError, match=r"styles\.3\.linear\.weight has shape \(512, 256\)"):
        ck.style_encoder_from_checkpoint(dict(obj, state_dict=wrong), device="meta")
    other = "e4e" if kind == "restyle-e4e" else "restyle-e4e"
    with pytest.raises(WeightsError, match="not a"):
        ck.style_encoder_from_checkpoint(obj, device="meta", kind=other)


def test_wrong_files_are_named():
    w_enc = {"state_dict": {"encoder." + k: torch.empty(s, device="meta") for k, s, _ in read_keys("keys_wencoder.tsv")}}
    with pytest.raises(WeightsError, match="W-encoder checkpoint.*not an e4e or ReStyle-e4e encoder"):
        ck.style_encoder_from_checkpoint(w_enc)
    with pytest.raises(WeightsError, match="not an e4e"):
        ck.style_encoder_from_checkpoint({"g_ema": {"style.1.weight": torch.zeros(1)}})


# --- numbers: an independent functional reference on the official state dict ------------------------------------------
def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)


def _unit(x, sd, i, stride):
    p = f"body.{i}."
    if p + "shortcut_layer.0.weight" in sd:
        sc = _bn(F.conv2d(x, sd[p + "shortcut_layer.0.weight"], stride=stride), sd, p + "shortcut_layer.1")
    else:
        sc = x[:, :, ::stride, ::stride]
    r = _bn(x, sd, p + "res_layer.0")
    r = F.prelu(F.conv2d(r, sd[p + "res_layer.1.weight"], padding=1), sd[p + "res_layer.2.weight"])
    r = _bn(F.conv2d(r, sd[p + "res_layer.3.weight"], stride=stride, padding=1), sd, p + "res_layer.4")
    s = r.mean((2, 3), keepdim=True)
    s = torch.sigmoid(F.conv2d(F.relu(F.conv2d(s, sd[p + "res_layer.5.fc1.weight"])), sd[p + "res_layer.5.fc2.weight"]))
    return r * s + sc


def _head(x, sd, s):
    c = 0
    while f"styles.{s}.convs.{c}.weight" in sd:
        x = F.leaky_relu(F.conv2d(x, sd[f"styles.{s}.convs.{c}.weight"], sd[f"styles.{s}.convs.{c}.bias"], stride=2,
                                  padding=1), 0.01)
        c += 2
    x = x.reshape(x.shape[0], -1)
    wgt = sd[f"styles.{s}.linear.weight"]
    return F.linear(x, wgt / math.sqrt(wgt.shape[1]), sd[f"styles.{s}.linear.bias"])


def reference_forward(sd, x, *, units, fpn):
    x = F.prelu(_bn(F.conv2d(x, sd["input_layer.0.weight"], padding=1), sd, "input_layer.1"), sd["input_layer.2.weight"])
    feats, i = [], 0
    for n in units:
        for j in range(n):
            x = _unit(x, sd, i, 2 if j == 0 else 1)
            i += 1
        feats.append(x)
    c1, c2, c3 = feats[1], feats[2], feats[3]
    n_ws = len({k.split(".")[1] for k in sd if k.startswith("styles.")})
    w0 = _head(c3, sd, 0)
    rows = [w0]
    up = lambda a, b: F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=True) + b  # noqa: E731
    p2 = up(c3, F.conv2d(c2, sd["latlayer1.weight"], sd["latlayer1.bias"])) if fpn else c3
    p1 = up(p2, F.conv2d(c1, sd["latlayer2.weight"], sd["latlayer2.bias"])) if fpn else c3
    for s in range(1, n_ws):
        feat = c3 if (not fpn or s < 3) else p2 if s < 7 else p1
        rows.append(w0 + _head(feat, sd, s))
    return torch.stack(rows, 1)


TINY = E4E_TINY


@pytest.mark.parametrize("fpn", [True, False])
def test_forward_matches_reference(tmp_path, tiny_G, fpn):
    p, sd, la = _tiny_file(tmp_path, tiny_G, fpn=fpn)
    m = ck.load_style_encoder(p)
    assert m.kind == ("e4e" if fpn else "restyle-e4e") and len(m.info["sha256"]) == 64
    x = torch.randn(2, 3 if fpn else 6, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = m.encoder(x)
        want = reference_forward(sd, x, units=TINY["units"], fpn=fpn)
    assert got.shape == (2, tiny_G.num_ws, tiny_G.cfg.w_dim)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got[:, 1] - got[:, 0]).abs().max() > 1e-3  # the row heads matter
    torch.testing.assert_close(m.latent_avg, la)


def test_e4e_codes_add_latent_avg_as_opts_say(tmp_path, tiny_G):
    p, sd, la = _tiny_file(tmp_path, tiny_G, fpn=True)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    want = reference_forward(sd, x, units=TINY["units"], fpn=True)
    torch.testing.assert_close(encode_e4e(ck.load_style_encoder(p), x, tiny_G), want + la[None], atol=1e-4, rtol=1e-4)
    p2, _, _ = _tiny_file(tmp_path, tiny_G, fpn=True, opts={"start_from_latent_avg": False})
    torch.testing.assert_close(encode_e4e(ck.load_style_encoder(p2), x, tiny_G), want, atol=1e-4, rtol=1e-4)


def test_restyle_iterations_follow_the_official_loop(tmp_path, tiny_G):
    p, sd, la = _tiny_file(tmp_path, tiny_G, fpn=False)
    m = ck.load_style_encoder(p, kind="restyle-e4e")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = encode_restyle(m, x, tiny_G, iters=3, keep_intermediates=True)
    pool = lambda y: F.adaptive_avg_pool2d(y, (64, 64))  # noqa: E731  (face_pool at the encoder's 64 px)
    with torch.no_grad():
        y_hat = pool(tiny_G.synthesis(la[None], noise_mode="const")).expand(2, -1, -1, -1)
        codes = la[None]
        for _ in range(3):
            codes = reference_forward(sd, torch.cat([x, y_hat], 1), units=TINY["units"], fpn=False) + codes
            y = tiny_G.synthesis(codes, noise_mode="const")
            y_hat = pool(y)
    torch.testing.assert_close(out.codes, codes, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.images, y, atol=1e-4, rtol=1e-4)
    assert len(out.intermediates) == 3
    one = encode_restyle(m, x, tiny_G, iters=1)
    assert (one.codes - out.codes).abs().max() > 1e-3  # later iterations refine the codes


def test_mismatched_generator_is_refused(tmp_path, tiny_G):
    from gantune.methods.e4e.method import check_pair

    p, _, _ = _tiny_file(tmp_path, tiny_G, fpn=True)
    G64 = tiny_generator(resolution=64)
    with pytest.raises(WeightsError, match=r"predicts \(8, 32\) codes; the generator needs \(10, 32\)"):
        check_pair(ck.load_style_encoder(p), G64)
