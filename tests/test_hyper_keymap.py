"""The HyperStyle and W-encoder importers go through the keymap table: every key of an official-layout file is
accounted for (unknown, missing, mistyped and broken-alias keys are errors that name them) and export walks the same
table back to the official layout, value for value and in the official order."""

from __future__ import annotations

import pytest
import torch

from conftest import read_keys
from gantune.core import make_kernel
from gantune.errors import WeightsError
from gantune.methods.hyper import checkpoint as ck
from gantune.methods.hyper.hypernet import HyperNetwork
from gantune.methods.hyper.wencoder import WEncoder
from gantune.weights.formats import hypernet_heads, identify
from support import TINY64, tiny_generator

LAYERS = ["b8.conv1", "b16.conv0", "b64.conv0", "b64.torgb"]  # shared, shared, channel, torgb heads


@pytest.fixture(scope="module")
def tiny():
    """A 64 px generator, a compact hypernetwork with every head kind and a compact W-encoder, all with non-trivial
    numbers everywhere (BN counters included), so a dropped or swapped tensor shows up."""
    G = tiny_generator(11, **TINY64)
    hn = HyperNetwork.from_specs(G.specs, names=LAYERS, width=16, input_size=64).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    with torch.no_grad():
        for m in (G, hn, enc):
            for name, t in m.state_dict().items():
                if t.is_floating_point():
                    t.copy_(torch.randn_like(t))
                else:
                    t.fill_(int(torch.randint(1, 10_000, ())))
    return G, hn, enc


def official_file(G, hn, *, opts=None) -> dict:
    la = G.mapping.w_avg[None].repeat(G.num_ws, 1)
    return {"state_dict": ck.hyperstyle_to_official(G, hn), "latent_avg": la, "global_step": 1, "best_val_loss": None,
            "opts": opts or {"input_size": hn.input_size}}


def test_heads_from_keys(tiny):
    _, hn, _ = tiny
    sd = ck.hypernet_to_official(hn)
    assert hypernet_heads(sd) == {lyr.hyperstyle_index: lyr.head for lyr in hn.layers}
    assert sorted(set(hypernet_heads(sd).values())) == ["channel", "shared", "torgb"]
    assert hypernet_heads({"hypernet." + k: v for k, v in sd.items()}, "hypernet.") == hypernet_heads(sd)


def test_hyperstyle_roundtrip_is_exact(tiny, tmp_path):
    G, hn, _ = tiny
    obj = official_file(G, hn)
    sd = obj["state_dict"]
    assert identify(obj)[0] == "hyperstyle"
    assert all(k.startswith(("decoder.", "hypernet.")) for k in sd)
    assert sd["hypernet.refinement_blocks.5.hypernet.w2"] is sd["hypernet.shared_weight_hypernet.w2"]
    assert sd["hypernet.body.0.bn1.num_batches_tracked"].dtype == torch.int64
    path = tmp_path / "hyperstyle_tiny.pt"
    torch.save(obj, path)
    model = ck.load_hyperstyle(path, hash_file=False)
    again = ck.hyperstyle_to_official(model.G, model.hypernet)
    assert list(again) == list(sd)  # same keys, same (official) order
    for k in sd:
        assert again[k].dtype == sd[k].dtype and torch.equal(again[k], sd[k]), k
    a, b = hn.state_dict(), model.hypernet.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(model.G.mapping.w_avg, G.mapping.w_avg)


@pytest.mark.parametrize("key", [
    "hypernet.refinement_blocks.5.linear.weight",  # a shared head's own layer
    "hypernet.refinement_blocks.11.output.1.bias",  # the channel head of b64.conv0
    "hypernet.body.3.downsample.1.num_batches_tracked",
    "decoder.convs.2.conv.modulation.bias",
    "decoder.noises.noise_3",
])
def test_missing_key_is_named(tiny, key):
    G, hn, _ = tiny
    obj = official_file(G, hn)
    del obj["state_dict"][key]
    with pytest.raises(WeightsError, match=rf"missing key\(s\): {key.replace('.', '[.]')}") as e:
        ck.hyperstyle_from_checkpoint(obj, source="hyperstyle_tiny.pt")
    assert "\n" not in e.value.one_line() and e.value.hint


@pytest.mark.parametrize("key", ["hypernet.refinement_blocks.5.extra.weight", "hypernet.fc.weight",
                                 "decoder.extra.weight", "w_encoder.linear.weight"])
def test_unknown_key_is_named(tiny, key):
    G, hn, _ = tiny
    obj = official_file(G, hn)
    obj["state_dict"][key] = torch.zeros(3)
    with pytest.raises(WeightsError, match=rf"unexpected key\(s\): {key.replace('.', '[.]')}"):
        ck.hyperstyle_from_checkpoint(obj)


def test_alias_dtype_and_shape_errors_name_the_key(tiny):
    G, hn, _ = tiny
    obj = official_file(G, hn)
    sd = obj["state_dict"]
    sd["hypernet.refinement_blocks.3.hypernet.b1"] = sd["hypernet.shared_weight_hypernet.b1"] + 1
    with pytest.raises(WeightsError, match=r"refinement_blocks\.3\.hypernet\.b1 differs from "
                                           r"hypernet\.shared_weight_hypernet\.b1"):
        ck.hyperstyle_from_checkpoint(obj)
    sd["hypernet.refinement_blocks.3.hypernet.b1"] = sd["hypernet.shared_weight_hypernet.b1"].clone()  # equal: fine
    ck.hyperstyle_from_checkpoint(obj, device="meta")
    sd["hypernet.bn1.num_batches_tracked"] = torch.tensor(3.0)
    with pytest.raises(WeightsError, match=r"hypernet\.bn1\.num_batches_tracked has dtype torch\.float32, expected "
                                           r"an integer"):
        ck.hyperstyle_from_checkpoint(obj)
    sd["hypernet.bn1.num_batches_tracked"] = torch.tensor(3)
    sd["hypernet.refinement_blocks.13.output.0.bias"] = torch.zeros(7)
    with pytest.raises(WeightsError, match=r"refinement_blocks\.13\.output\.0\.bias has shape \(7,\)"):
        ck.hyperstyle_from_checkpoint(obj)


def test_official_1024_layout_errors_name_keys():
    """The real hyperstyle_ffhq.pt layout (official key listings; hypernetwork as meta tensors): it loads, exports
    back to exactly the listed keys in order, and an unknown or missing key anywhere is named."""
    dec = {"decoder." + k: make_kernel() * 4 if k.endswith("kernel") else torch.zeros(s, dtype=getattr(torch, dt))
           for k, s, dt in read_keys("keys_rosinality_G1024.tsv")}
    rows = read_keys("keys_hypernet_claimed14.tsv")
    hyp = {"hypernet." + k: torch.empty(s, dtype=getattr(torch, dt), device="meta") for k, s, dt in rows
           if ".hypernet." not in k}
    for k, _, _ in rows:
        if ".hypernet." in k:
            hyp["hypernet." + k] = hyp["hypernet.shared_weight_hypernet." + k.split(".hypernet.")[1]]
    obj = {"state_dict": {**dec, **hyp}, "latent_avg": torch.ones(18, 512), "opts": {}}
    model = ck.hyperstyle_from_checkpoint(obj, device="meta")
    listed = ["decoder." + k for k, _, _ in read_keys("keys_rosinality_G1024.tsv")] + ["hypernet." + k for k, _, _ in rows]
    assert list(ck.hyperstyle_to_official(model.G, model.hypernet)) == listed
    for key in ("hypernet.refinement_blocks.23.convs.4.bias", "hypernet.shared_weight_hypernet.b2",
                "decoder.to_rgbs.7.upsample.kernel", "decoder.style.8.bias"):
        broken = dict(obj, state_dict={k: v for k, v in obj["state_dict"].items() if k != key})
        with pytest.raises(WeightsError, match=rf"missing key\(s\): {key.replace('.', '[.]')}"):
            ck.hyperstyle_from_checkpoint(broken, device="meta")
    for key in ("hypernet.refinement_blocks.14.output.1.scale", "decoder.convs.16.conv.weight"):
        broken = dict(obj, state_dict={**obj["state_dict"], key: torch.zeros(1)})
        with pytest.raises(WeightsError, match=rf"unexpected key\(s\): {key.replace('.', '[.]')}"):
            ck.hyperstyle_from_checkpoint(broken, device="meta")


def test_w_encoder_through_the_table(tiny):
    G, _, enc = tiny
    from gantune.weights.rosinality import to_rosinality_state_dict

    sd = {**{"encoder." + k: v for k, v in ck.w_encoder_to_official(enc).items()},
          **{"decoder." + k: v for k, v in to_rosinality_state_dict(G).items()}}
    obj = {"state_dict": sd, "opts": {"input_size": 64}, "latent_avg": G.mapping.w_avg.clone()}
    back = ck.w_encoder_from_checkpoint(obj, num_ws=G.num_ws)
    out, ref = ck.w_encoder_to_official(back), enc.state_dict()
    assert list(out) == [k for k in out if k.startswith("input_layer.")] + ["linear.weight", "linear.bias"] + \
        [k for k in out if k.startswith("body.")]  # the official order
    assert set(out) == set(ref) and all(out[k].dtype == ref[k].dtype and torch.equal(out[k], ref[k]) for k in ref)
    for key in ("encoder.body.2.res_layer.4.num_batches_tracked", "decoder.conv1.noise.weight"):
        broken = dict(obj, state_dict={k: v for k, v in sd.items() if k != key})
        with pytest.raises(WeightsError, match=rf"missing key\(s\): {key.replace('.', '[.]')}"):
            ck.w_encoder_from_checkpoint(broken, num_ws=G.num_ws)
    broken = dict(obj, state_dict={**sd, "decoder.blur.kernel": torch.zeros(4, 4)})
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): decoder\.blur\.kernel"):
        ck.w_encoder_from_checkpoint(broken, num_ws=G.num_ws)
    bad_fir = dict(obj, state_dict={**sd, "decoder.convs.0.conv.blur.kernel": torch.ones(4, 4)})
    with pytest.raises(WeightsError, match=r"decoder\.convs\.0\.conv\.blur\.kernel is .*expected the StyleGAN2"):
        ck.w_encoder_from_checkpoint(bad_fir, num_ws=G.num_ws)


def test_official_w_encoder_listing_exports_in_order():
    rows = read_keys("keys_wencoder.tsv")
    sd = {k: torch.empty(s, dtype=getattr(torch, dt), device="meta") for k, s, dt in rows}
    enc = ck.w_encoder_from_official(sd, num_ws=18, device="meta")
    assert list(ck.w_encoder_to_official(enc)) == [k for k, _, _ in rows]
