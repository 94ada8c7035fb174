"""HyperStyle model: official layouts load strictly (1024 layout on the meta device, tiny layout with numbers),
offsets have the right shapes, per-tap rendering is exact, the refinement loop follows Eq. 6 and the official loop."""

from __future__ import annotations

import pytest
import torch

from conftest import read_keys
from gantune.core import Generator, GeneratorConfig
from gantune.errors import WeightsError
from gantune.methods.hyper import checkpoint as ck
from gantune.methods.hyper.hypernet import HyperNetwork
from gantune.methods.hyper.inference import face_pool, refine, render
from gantune.methods.hyper.wencoder import WEncoder
from gantune.weights.formats import identify
from support import (CLAIMED14, DEFAULT17, TINY64, RecordingHypernet, official_meta_state, tiny_generator,
                     write_tiny_official_files)


@pytest.fixture(scope="module")
def meta_G1024():
    with torch.device("meta"):
        return Generator(GeneratorConfig())


@pytest.mark.parametrize("listing,indices,n_shared,params", [
    ("keys_hypernet_claimed14.tsv", CLAIMED14, 6, 327.0),
    ("keys_hypernet_default17.tsv", DEFAULT17, 9, 332.7),
])
def test_official_1024_hypernet_layout_loads_strictly(meta_G1024, listing, indices, n_shared, params):
    sd = official_meta_state(listing)
    hn, warnings = ck.hypernet_from_official(sd, meta_G1024.specs, device="meta",
                                             opts={"layers_to_tune": ",".join(map(str, indices))})
    assert warnings == []
    assert [lyr.hyperstyle_index for lyr in hn.layers] == indices
    by_index = {s.hyperstyle_index: s.name for s in meta_G1024.specs}
    assert hn.names == [by_index[j] for j in indices]
    assert hn.names[-1] == "b1024.conv1" and "b128.conv0" in hn.names  # 23/24 = convs.14/15, 14 = convs.8
    assert sum(lyr.head == "shared" for lyr in hn.layers) == n_shared
    assert all(lyr.head == "shared" for lyr in hn.layers if lyr.hyperstyle_index <= 12)
    assert round(sum(p.numel() for p in hn.parameters()) / 1e6, 1) == params  # paper/doc counts
    # exporting gives exactly the official keys back, in the official order (aliases included, as the same tensors)
    out = ck.hypernet_to_official(hn)
    assert list(out) == [k for k, _, _ in read_keys(listing)]
    assert all(out[k] is out["shared_weight_hypernet." + k.split(".hypernet.")[1]] for k in out if ".hypernet." in k)


def test_official_layout_errors_name_keys(meta_G1024):
    sd = official_meta_state("keys_hypernet_claimed14.tsv")
    bad = dict(sd)
    bad.pop("refinement_blocks.14.convs.2.bias")
    with pytest.raises(WeightsError, match=r"missing key\(s\): refinement_blocks\.14\.convs\.2\.bias"):
        ck.hypernet_from_official(bad, meta_G1024.specs, device="meta")
    extra = dict(sd, **{"fc.weight": torch.empty(3, device="meta")})
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): fc\.weight"):
        ck.hypernet_from_official(extra, meta_G1024.specs, device="meta")
    wrong = dict(sd)
    wrong["refinement_blocks.14.output.1.weight"] = torch.empty(1000, 512, 1, 1, device="meta")
    with pytest.raises(WeightsError, match=r"refinement_blocks\.14\.output\.1\.weight has shape \(1000, 512, 1, 1\)"):
        ck.hypernet_from_official(wrong, meta_G1024.specs, device="meta")
    sep = {k: v for k, v in sd.items() if not k.startswith("refinement_blocks.14.output")}
    sep["refinement_blocks.14.output.0.make_kernel_in.weight"] = torch.empty(1, device="meta")
    with pytest.raises(WeightsError, match="separable"):
        ck.hypernet_from_official(sep, meta_G1024.specs, device="meta")
    _, warnings = ck.hypernet_from_official(sd, meta_G1024.specs, device="meta", opts={"layers_to_tune": "0,2,3,5"})
    assert warnings and "layers_to_tune" in warnings[0]


def test_official_w_encoder_layout_loads_strictly():
    rows = read_keys("keys_wencoder.tsv")
    sd = {k: torch.empty(s, dtype=getattr(torch, dt), device="meta") for k, s, dt in rows}
    enc = ck.w_encoder_from_official(sd, num_ws=18, device="meta")
    assert enc.units == (3, 4, 14, 3) and enc.w_dim == 512
    assert set(enc.state_dict()) == set(sd)
    sd.pop("body.21.shortcut_layer.0.weight")
    with pytest.raises(WeightsError, match=r"missing key\(s\): body\.21\.shortcut_layer\.0\.weight"):
        ck.w_encoder_from_official(sd, num_ws=18, device="meta")


def test_identify_wrong_files():
    def enc_state(listing, prefix="encoder."):
        return {prefix + k: torch.zeros(s if len(s) == 0 else (1,) * len(s)) if "input_layer.0" not in k else torch.zeros(s)
                for k, s, _ in read_keys(listing)}

    restyle = {"state_dict": enc_state("keys_restyle_e4e.tsv"), "opts": {}, "latent_avg": torch.zeros(18, 512)}
    assert identify(restyle)[0] == "restyle-e4e"
    e4e_sd = {k: v for k, v in enc_state("keys_wencoder.tsv").items() if "linear" not in k}
    e4e_sd.update({"encoder.styles.0.convs.0.weight": torch.zeros(1), "encoder.latlayer1.weight": torch.zeros(1)})
    kind, desc = identify({"state_dict": e4e_sd, "opts": {"encoder_type": "Encoder4Editing"}})
    assert kind == "e4e" and "Encoder4Editing" in desc
    with pytest.raises(WeightsError, match="e4e/pSp feature-pyramid.*not a W-encoder"):
        ck.w_encoder_from_checkpoint({"state_dict": e4e_sd}, num_ws=18)
    training = {"g": {}, "d": {}, "g_ema": {"style.1.weight": torch.zeros(1)}, "args": None}
    assert identify(training)[0] == "rosinality-train"
    with pytest.raises(WeightsError, match="rosinality StyleGAN2 training checkpoint"):
        ck.w_encoder_from_checkpoint(training, num_ws=18)
    assert identify({"state_dict": enc_state("keys_wencoder.tsv")})[0] == "w-encoder"
    with pytest.raises(WeightsError, match="not a HyperStyle checkpoint"):
        ck.hyperstyle_from_checkpoint({"state_dict": enc_state("keys_wencoder.tsv")})


# --- tiny models with numbers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models():
    G = tiny_generator(3, perturb=True, **TINY64)
    hn = HyperNetwork.from_specs(G.specs).eval()
    with torch.no_grad():  # make offsets O(0.1) so they visibly change images
        hn.shared_fc.w1.mul_(0.5)
        for lyr in hn.layers:
            if lyr.head != "shared":
                hn.heads[lyr.name.replace(".", "_")].output[-1].weight.mul_(20)
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1)).eval()
    return G, hn, enc


def test_tiny_hypernet_offsets_shapes(tiny_models):
    G, hn, _ = tiny_models
    assert [(lyr.name, lyr.head) for lyr in hn.layers] == [
        ("b16.conv0", "shared"), ("b16.conv1", "shared"), ("b32.conv0", "shared"), ("b32.conv1", "shared"),
        ("b64.conv0", "channel"), ("b64.conv1", "channel")]
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        out = hn(x, x.flip(0))
    assert out["b16.conv0"].shape == (2, 32, 32, 3, 3)  # shared heads: one offset per tap
    assert out["b64.conv0"].shape == (2, 16, 32)  # per-channel heads: (out, in)
    assert out["b64.conv1"].shape == (2, 16, 16)
    assert not torch.allclose(out["b64.conv0"][0], out["b64.conv0"][1])  # depends on the sample
    assert not torch.allclose(out["b16.conv0"][0, :, :, 0, 0], out["b16.conv0"][0, :, :, 1, 1])  # taps differ
    assert out["b16.conv0"].abs().mean() > 1e-3


def test_render_per_tap_is_exact(tiny_models):
    G = tiny_models[0]
    torch.manual_seed(0)
    ws = torch.randn(2, G.num_ws, G.cfg.w_dim)
    d = torch.randn(2, 32, 32) * 0.3
    chan = {"b16.conv1": d, "b64.conv0": torch.randn(2, 16, 32) * 0.3}
    tap_const = {"b16.conv1": d[..., None, None].expand(-1, -1, -1, 3, 3), "b64.conv0": chan["b64.conv0"]}
    with torch.no_grad():
        a = render(G, ws, chan)
        b = render(G, ws, tap_const)
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)  # constant over taps == the core's (out, in) path
        # a per-tap offset equals a generator whose stored weight is θ ⊙ (1 + Δ) (official: weight * (1 + delta))
        tap = torch.randn(1, 32, 32, 3, 3) * 0.3
        c = render(G, ws, {"b16.conv1": tap})
        layer = G.synthesis.layer("b16.conv1")
        saved = layer.weight.detach().clone()
        layer.weight.data.mul_(1 + tap[0])
        ref = G.synthesis(ws)
        layer.weight.data.copy_(saved)
        torch.testing.assert_close(c, ref, atol=2e-5, rtol=1e-4)
        assert (c - G.synthesis(ws)).abs().max() > 1e-3


def test_zero_offsets_one_iteration_equals_plain_generator(tiny_models):
    G, hn, enc = tiny_models
    zero = RecordingHypernet([{lyr.name: torch.zeros(1, lyr.out_ch, lyr.in_ch, *((3, 3) if lyr.head == "shared" else ()))
                               for lyr in hn.layers}])
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    la = torch.randn(G.cfg.w_dim)
    out = refine(x, G=G, hypernet=zero, w_encoder=enc, latent_avg=la, iters=1)
    with torch.no_grad():
        codes = enc(x) + la  # W-encoder output + latent_avg, as the official forward
        plain = G.synthesis(out.codes)  # (refine runs the encoder channels-last on CPU: the codes agree to rounding)
    torch.testing.assert_close(out.codes, codes)
    torch.testing.assert_close(out.images, plain, atol=1e-6, rtol=0)
    assert set(out.deltas) == set(hn.names) and all(float(d.abs().max()) == 0 for d in out.deltas.values())


def test_refinement_accumulates_offsets_eq6(tiny_models):
    G = tiny_models[0]
    torch.manual_seed(5)
    codes = torch.randn(1, G.num_ws, G.cfg.w_dim)
    T = 3
    offsets = [{"b16.conv0": torch.randn(1, 32, 32, 3, 3) * 0.2, "b64.conv1": torch.randn(1, 16, 16) * 0.2}
               for _ in range(T)]
    hn = RecordingHypernet(offsets)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    out = refine(x, G=G, hypernet=hn, codes=codes, iters=T, keep_intermediates=True)
    assert len(hn.inputs) == T and len(out.intermediates) == T + 1
    acc = {}
    y = render(G, codes, None)
    for t in range(T):
        torch.testing.assert_close(hn.inputs[t][0], x)  # the target never changes
        torch.testing.assert_close(hn.inputs[t][1], face_pool(y))  # previous reconstruction pooled to 256, unclamped
        acc = {k: acc.get(k, 0) + v for k, v in offsets[t].items()}  # θ·(1 + Σ_i Δ_i)
        y = render(G, codes, acc)
        torch.testing.assert_close(out.intermediates[t + 1], y)
    for k in acc:
        torch.testing.assert_close(out.deltas[k], acc[k])
    torch.testing.assert_close(out.images, y)
    torch.testing.assert_close(out.codes, codes)  # the latent stays fixed
    assert (out.intermediates[-1] - out.intermediates[0]).abs().max() > 1e-3


def test_tiny_official_files_roundtrip(tmp_path, tiny_models):
    G, hn, enc = tiny_models
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone()
    p_hs, p_enc = write_tiny_official_files(tmp_path, G, hn, enc, la, legacy=True)
    raw = torch.load(p_hs, weights_only=True)
    a = raw["state_dict"]["hypernet.refinement_blocks.5.hypernet.w1"]
    b = raw["state_dict"]["hypernet.shared_weight_hypernet.w1"]
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # aliased on disk as in the real file
    model = ck.load_hyperstyle(p_hs)
    enc2, info = ck.load_w_encoder(p_enc, num_ws=G.num_ws)
    assert model.info["tuned_layers"] == hn.names and model.info["warnings"] == []
    assert len(model.info["sha256"]) == 64 and len(info["sha256"]) == 64
    torch.testing.assert_close(model.latent_avg, la)
    for mine, theirs in [(hn, model.hypernet), (enc, enc2)]:
        a, b = mine.state_dict(), theirs.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert model.hypernet.shared_fc.w1.data_ptr() != 0 and model.hypernet.layers == hn.layers
    ws = torch.randn(2, G.num_ws, G.cfg.w_dim)
    with torch.no_grad():
        torch.testing.assert_close(model.G.synthesis(ws), G.synthesis(ws))
    with pytest.raises(WeightsError, match="HyperStyle checkpoint.*not a W-encoder"):
        ck.load_w_encoder(p_hs, num_ws=G.num_ws)
    for la_shape in [(G.cfg.w_dim,), (1, G.cfg.w_dim)]:
        obj = torch.load(p_hs, weights_only=True)
        obj["latent_avg"] = la[0].reshape(la_shape)
        torch.testing.assert_close(ck.hyperstyle_from_checkpoint(obj).latent_avg, la)


def test_official_1024_file_layout_end_to_end():
    """A whole hyperstyle_ffhq.pt layout at 1024 px: decoder (171 keys, cheap zeros + the fixed FIR buffers),
    hypernetwork (meta tensors, 14 layers), (18, 512) latent_avg and opts, through the same code as real files."""
    from gantune.core import make_kernel

    dec = {}
    for k, s, dt in read_keys("keys_rosinality_G1024.tsv"):
        dec["decoder." + k] = make_kernel() * 4 if k.endswith("kernel") else torch.zeros(s, dtype=getattr(torch, dt))
    hyp = {"hypernet." + k: v for k, v in official_meta_state("keys_hypernet_claimed14.tsv").items()}
    obj = {"state_dict": {**hyp, **dec}, "latent_avg": torch.ones(18, 512), "global_step": 1, "best_val_loss": None,
           "opts": {"layers_to_tune": ",".join(map(str, CLAIMED14)), "encoder_type": "SharedWeightsHyperNetResNet",
                    "output_size": 1024, "device": "cuda:0"}}
    assert identify(obj)[0] == "hyperstyle"
    model = ck.hyperstyle_from_checkpoint(obj, device="meta")
    assert model.G.cfg.resolution == 1024 and model.G.num_ws == 18
    assert model.info["tuned_layers"][0] == "b16.conv0" and len(model.info["tuned_layers"]) == 14
    assert model.info["warnings"] == [] and model.latent_avg.shape == (18, 512)
    obj["opts"]["encoder_type"] = "SharedWeightsHyperNetResNetSeparable"
    assert "Separable" in ck.hyperstyle_from_checkpoint(obj, device="meta").info["warnings"][0]
    obj["state_dict"]["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError):
        ck.hyperstyle_from_checkpoint(obj, device="meta")
