"""W-encoder / hypernetwork training: Lookahead maths, MS-SSIM, generator conversion, losses falling on a fixed
batch, bit-exact resume, and trained files loading into ``gantune invert --method hyperstyle``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from conftest import tiny_config
from gantune.cli.app import app
from gantune.metrics.msssim import ms_ssim, ms_ssim_scales
from gantune.train.encoders import (EncoderTrainOptions, GeneratorSamples, hyperstyle_generator, train_hypernet,
                                    train_w_encoder)
from gantune.train.ranger import Lookahead, ranger
from gantune.train.substitutes import Term
from support import tiny_generator

runner = CliRunner()
MSSSIM = Term("ms-ssim", lambda a, b: 1.0 - ms_ssim(a, b), "test")


class FixedBatch:
    """A data source that always returns the same images (to see the loss fall)."""

    def __init__(self, x):
        self.x = x

    def sample(self, batch, generator):
        return self.x

    def describe(self):
        return {"data": "fixed"}


@pytest.fixture(scope="module")
def G():
    g = tiny_generator(0).requires_grad_(False)
    g.mapping.w_avg.copy_(g.compute_w_avg(500, seed=0))
    return g


# --- optimizer ---------------------------------------------------------------------------------------------------------
def test_lookahead_interpolates_slow_weights_every_k_steps():
    p = nn.Parameter(torch.tensor([1.0]))
    opt = Lookahead(torch.optim.SGD([p], lr=0.1), k=2, alpha=0.5)
    seen = []
    for _ in range(4):
        opt.zero_grad()
        (p**2).sum().backward()  # grad 2p
        opt.step()
        seen.append(float(p.detach()))
    # by hand: 1 -> 0.8 -> 0.64, sync: slow = 1 + 0.5 (0.64 - 1) = 0.82 = fast; -> 0.656 -> 0.5248, slow 0.6724
    assert seen == pytest.approx([0.8, 0.82, 0.656, 0.6724], abs=1e-6)
    # the state round-trips: a copy continues exactly like the original
    q = nn.Parameter(p.detach().clone())
    opt2 = Lookahead(torch.optim.SGD([q], lr=0.1), k=2, alpha=0.5)
    opt2.load_state_dict(opt.state_dict())
    for o, t in ((opt, p), (opt2, q)):
        o.zero_grad()
        (t**2).sum().backward()
        o.step()
    assert float(p.detach()) == float(q.detach()) == pytest.approx(0.6724 * 0.8, abs=1e-6)


def test_ranger_reference_settings_and_gradient_centralization():
    w = nn.Parameter(torch.zeros(2, 3))
    opt = ranger([w], lr=0.1)
    assert (opt.k, opt.alpha) == (6, 0.5)
    inner = opt.inner
    assert isinstance(inner, torch.optim.RAdam)
    assert inner.defaults["betas"] == (0.95, 0.999) and inner.defaults["eps"] == 1e-5
    w.grad = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    opt.step()
    # centralized gradient has zero mean per output row, so the (linear in grad, first RAdam step) update does too
    assert w.detach().sum(1).abs().max() < 1e-6 and w.detach().abs().sum() > 0


# --- losses ------------------------------------------------------------------------------------------------------------
def test_ms_ssim_identical_noisy_and_small_images():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert ms_ssim_scales(32) == (2, 11) and ms_ssim_scales(256) == (5, 11) and ms_ssim_scales(8) == (1, 8)
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(2))
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    z = x + 0.05 * torch.randn_like(x)
    s_far, s_near = ms_ssim(x, y), ms_ssim(x, z)
    assert (s_far < s_near).all() and (s_near < 1).all()
    s_far.sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_generator_conversion_for_the_hyperstyle_layout_is_exact():
    G = tiny_generator(1, perturb=True, use_noise=False, mapping_lr_mul=0.05)  # no noise: the biases perturbed
    G2, notes = hyperstyle_generator(G)
    assert G2.cfg.use_noise and G2.cfg.mapping_lr_mul == 0.01 and len(notes) == 2
    z = torch.randn(3, G.cfg.z_dim)
    with torch.no_grad():
        ws = G.map(z)
        torch.testing.assert_close(G2.map(z), ws, atol=1e-5, rtol=1e-5)
        torch.manual_seed(3)
        ref = G.synthesis(ws, noise_mode="random")
        torch.manual_seed(3)
        torch.testing.assert_close(G2.synthesis(ws, noise_mode="random"), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="conv_clamp"):
        hyperstyle_generator(tiny_generator(conv_clamp=256.0))


# --- training ----------------------------------------------------------------------------------------------------------
def test_w_encoder_loss_falls_and_resume_is_bit_exact(G, tmp_path):
    x, _ = GeneratorSamples(G).sample_with_w(1, torch.Generator().manual_seed(5))
    kw = dict(units=(1, 1, 1, 1), perceptual=MSSSIM)
    opts = EncoderTrainOptions(steps=3, batch_size=1, lr=1e-2, save_every=2, latent_lambda=0.0)
    import shutil

    def keep_step2_state(step, row):  # the state written at step 2 is copied away before step 3 overwrites it
        if step == 3:
            (tmp_path / "b").mkdir()
            shutil.copy(tmp_path / "a" / "train_state.pt", tmp_path / "b" / "train_state.pt")

    full = train_w_encoder(G, FixedBatch(x), tmp_path / "a", opts=opts, on_step=keep_step2_state, **kw)
    losses = [r["loss"] for r in full.losses]
    assert losses[-1] < losses[0] - 0.005, losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert {"l2", "ms-ssim"} <= set(full.losses[0])
    # interrupted after 2 steps, resumed to 3: identical weights and losses
    rest = train_w_encoder(G, FixedBatch(x), tmp_path / "b", opts=opts, resume=True, **kw)
    assert rest.step == 3 and [r["loss"] for r in rest.losses] == losses[2:]
    a = torch.load(full.model_path, weights_only=True)["state_dict"]
    b = torch.load(rest.model_path, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the file is the official W-encoder layout: it loads with HyperStyle's loader
    from gantune.methods.hyper.checkpoint import load_w_encoder

    enc, _ = load_w_encoder(full.model_path, num_ws=G.num_ws)
    assert enc.units == (1, 1, 1, 1)
    assert [json.loads(ln)["step"] for ln in (tmp_path / "a" / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_w_encoder_latent_loss_on_generator_samples(G, tmp_path):
    opts = EncoderTrainOptions(steps=1, batch_size=1, lr=1e-3, latent_lambda=1.0)
    res = train_w_encoder(G, GeneratorSamples(G), tmp_path, opts=opts, units=(1, 1, 1, 1), perceptual=MSSSIM)
    row = res.losses[0]
    assert row["latent"] > 0
    assert row["loss"] == pytest.approx(row["l2"] + 0.8 * row["ms-ssim"] + row["latent"], rel=1e-5)


class CheapEncoder(nn.Module):
    """Stands in for the (frozen) W-encoder: pooled image -> w offset, repeated over the W+ rows."""

    def __init__(self, num_ws, w_dim):
        super().__init__()
        self.num_ws, self.w_dim, self.input_size = num_ws, w_dim, 256
        self.fc = nn.Linear(3, w_dim)

    def forward(self, x):
        return (0.1 * self.fc(x.mean(dim=(2, 3))))[:, None].expand(-1, self.num_ws, -1)


class CheapBackbone(nn.Module):
    """Stands in for ResNet34 (same output shape, a fraction of the cost) so that several steps fit in a test."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(16), nn.Conv2d(6, 512, 1))

    def forward(self, x):
        return self.net(x)


def test_hypernet_loss_falls_with_a_loss_at_every_pass(G, tmp_path):
    from gantune.methods.hyper import HyperNetwork

    torch.manual_seed(0)
    enc = CheapEncoder(G.num_ws, G.cfg.w_dim)
    H = HyperNetwork.from_specs(G.specs, ["b8.conv1", "b16.conv1", "b32.conv0"])
    assert [lyr.head for lyr in H.layers] == ["shared", "channel", "channel"]
    H.backbone = CheapBackbone()
    x, _ = GeneratorSamples(G).sample_with_w(1, torch.Generator().manual_seed(7))
    opts = EncoderTrainOptions(steps=4, batch_size=1, lr=3e-2, save_every=100)
    res = train_hypernet(G, enc, FixedBatch(x), tmp_path, opts=opts, iters=2, init=H, perceptual=MSSSIM)
    first, last = res.losses[0], res.losses[-1]
    assert {"loss_t1", "loss_t2", "l2", "ms-ssim"} <= set(first)
    assert last["loss_t1"] < first["loss_t1"] - 0.005, [r["loss_t1"] for r in res.losses]


def test_trained_files_load_into_invert_hyperstyle(G, tmp_path):
    """CLI: train compact w-encoder and hypernet (1 step each, width 16, 64 px input), then invert with them: the
    width comes back from the weights and the input size from the files' opts."""
    from gantune.io.images import save_image
    from gantune.io.record import InversionRecord
    from gantune.weights.native import save_native

    gpath = save_native(G, tmp_path / "g.safetensors")
    res = runner.invoke(app, ["train", "w-encoder", "-g", str(gpath), "-o", str(tmp_path / "enc"), "--depth", "1,1,1,1",
                              "--width", "16", "--input-size", "64", "--steps", "1", "-b", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    # default --identity-loss auto: dlib's network where a face is found, announced in one line with its weight
    assert "SUBSTITUTE 1 − MS-SSIM" in res.output and "identity term (λ 0.1): 1 − cos of dlib's face-recognition ResNet" in res.output
    enc = tmp_path / "enc" / "w_encoder.pt"
    assert torch.load(enc, weights_only=False)["opts"]["id_lambda"] == 0.1
    res = runner.invoke(app, ["train", "hypernet", "-g", str(gpath), "-e", str(enc), "-o", str(tmp_path / "hyp"),
                              "--layers", "b16.conv1,b32.conv1", "--steps", "1", "--iters", "1", "-b", "1",
                              "--width", "16", "--input-size", "64", "--identity-loss", "off", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "identity loss OFF: no face-recognition network (--identity-loss off)" in res.output
    hyp = tmp_path / "hyp" / "hypernet.pt"
    assert torch.load(hyp, weights_only=False)["opts"]["id_lambda"] == 0.0
    from gantune.methods.hyper.checkpoint import load_hyperstyle, load_w_encoder

    model = load_hyperstyle(hyp)
    assert (model.hypernet.width, model.hypernet.input_size) == (16, 64)
    assert model.hypernet.backbone.body[-1].conv2.weight.shape[0] == 128  # 16·8 features
    enc_m, _ = load_w_encoder(enc, num_ws=G.num_ws)
    assert (enc_m.width, enc_m.input_size, enc_m.units) == (16, 64, (1, 1, 1, 1))
    with torch.no_grad():
        img = G.synthesis(G.map(torch.randn(1, G.cfg.z_dim)), noise_mode="const")[0]
    save_image(img, tmp_path / "face.png")
    res = runner.invoke(app, ["invert", str(tmp_path / "face.png"), "--method", "hyperstyle", "--weights", str(hyp),
                              "--encoder", str(enc), "--iters", "1", "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rec = InversionRecord.load(tmp_path / "out" / "face.safetensors")
    assert set(rec.deltas) == {"b16.conv1", "b32.conv1"}
    assert all(d.abs().sum() > 0 for d in rec.deltas.values())
    # a bad level is a one-line user error
    res = runner.invoke(app, ["train", "hypernet", "-g", str(gpath), "-e", str(enc), "-o", str(tmp_path / "h2"),
                              "--levels", "huge", "--steps", "1", "--device", "cpu"])
    assert res.exit_code != 0
    # a bad --identity-loss is a one-line user error; --id-lambda is --sim-lambda's other name
    res = runner.invoke(app, ["train", "w-encoder", "-g", str(gpath), "-o", str(tmp_path / "e2"), "--depth", "1,1,1,1",
                              "--identity-loss", "arcface", "--id-lambda", "0.5", "--steps", "1", "--device", "cpu"])
    from gantune.errors import InputError

    assert isinstance(res.exception, InputError)
    assert res.exception.one_line() == "--identity-loss 'arcface': one of auto, dlib, off"


def test_discriminator_feature_similarity_substitute(tmp_path):
    from gantune.core import GeneratorConfig
    from gantune.train.checkpoint import save_state
    from gantune.train.discriminator import Discriminator
    from gantune.train.substitutes import load_discriminator, similarity_term

    torch.manual_seed(0)
    cfg = tiny_config()
    D = Discriminator(cfg)
    save_state(tmp_path / "training-state-000000100.pt",
               {"kind": "gantune-train-generator", "gen_config": cfg.to_dict(), "D": D.state_dict()})
    D2 = load_discriminator(tmp_path / "training-state-000000100.pt")
    assert isinstance(GeneratorConfig.from_dict(cfg.to_dict()), GeneratorConfig)
    term = similarity_term(D2)
    assert term.name == "disc-feat" and "SUBSTITUTE" in term.description
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = torch.rand(3, 3, 32, 32) * 2 - 1
    same, diff = term.fn(x, x), term.fn(x, y)
    assert same.shape == (3,) and same.abs().max() < 1e-5 and (diff > 1e-4).all()
    # per-image: a sample's score does not depend on its batch-mates (minibatch-stddev switched off)
    torch.testing.assert_close(term.fn(x[:1], y[:1]), diff[:1], atol=1e-5, rtol=1e-4)


# --- identity loss: dlib's face-recognition ResNet where the target has a face ----------------------------------------
def _lfw32(i: int) -> torch.Tensor:
    """An LFW face (skimage, 25×25 grey) at 32 px in [-1, 1]: dlib's HOG detector finds it after the 256 px upscale."""
    import numpy as np
    from PIL import Image
    from skimage import data

    arr = (data.lfw_subset()[i] * 255).round().astype(np.uint8)
    img = Image.fromarray(arr, "L").convert("RGB").resize((32, 32), Image.LANCZOS)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1


def test_identity_term_per_image_fallback_and_detection_cache(monkeypatch):
    pytest.importorskip("dlib")
    import gantune.metrics.identity as identity
    from gantune.train.substitutes import IdentityLoss, dlib_identity_network, identity_term

    face, other_person = _lfw32(0), _lfw32(1)
    no_face = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.stack([face, no_face])
    y_hat = torch.stack([other_person, no_face.flip(-1)])
    calls = []
    real = identity.face_found
    monkeypatch.setattr(identity, "face_found", lambda im: calls.append(1) or real(im))
    marker = IdentityLoss(dlib_identity_network(), lambda a, b: torch.full((a.shape[0],), 7.0))
    got = marker(y_hat, y)
    assert marker.last_face_share == 0.5 and len(calls) == 2
    assert 0.01 < got[0] < 1.0  # 1 − cos of two people's embeddings
    assert got[1] == 7.0  # no face in the target: the fallback, for that image only
    marker(y_hat, y)
    assert len(calls) == 2  # targets seen before are not detected again
    same = marker(y, y)
    assert same[0].abs() < 1e-5 and same[1] == 7.0
    # with the real substitute: trained-discriminator features on the faceless image, nothing without a discriminator
    from gantune.train.discriminator import Discriminator
    from gantune.train.substitutes import similarity_term

    torch.manual_seed(0)
    D = Discriminator(tiny_config())
    term, note = identity_term("dlib", D)
    assert term.name == "id-dlib" and "other targets: SUBSTITUTE 1 − cos of the trained discriminator" in note
    torch.testing.assert_close(term.fn(y_hat, y)[1], similarity_term(D).fn(y_hat[1:], y[1:])[0])
    torch.testing.assert_close(term.fn(y_hat, y)[0], got[0])
    bare, note = identity_term("auto", None)
    assert bare.fn(y_hat, y)[1] == 0 and "no identity term" in note
    off, note = identity_term("off", D)
    assert off.name == "disc-feat" and "(--identity-loss off)" in note


def test_identity_loss_gives_a_gradient_and_falls_in_training(G, tmp_path):
    """W-encoder training with only the identity term on a face target: gradients reach the encoder and the term
    falls over a few steps; the file records the id_lambda used."""
    pytest.importorskip("dlib")
    x = _lfw32(3)[None]
    opts = EncoderTrainOptions(steps=5, batch_size=1, lr=3e-2, save_every=100, latent_lambda=0.0, l2_lambda=0.0,
                               perceptual_lambda=0.0, sim_lambda=1.0, identity="dlib", width=16, input_size=64)
    grads = []
    from gantune.methods.hyper import wencoder

    orig = wencoder.WEncoder.forward

    def spy(self, img):
        out = orig(self, img)
        out.register_hook(lambda g: grads.append(float(g.abs().sum())))
        return out

    import unittest.mock as mock

    with mock.patch.object(wencoder.WEncoder, "forward", spy):
        res = train_w_encoder(G, FixedBatch(x), tmp_path, opts=opts, units=(1, 1, 1, 1), perceptual=MSSSIM)
    ids = [r["id-dlib"] for r in res.losses]
    assert all(r["id_faces"] == 1.0 for r in res.losses)
    assert len(grads) == 5 and all(g > 0 for g in grads)
    assert all(b < a for a, b in zip(ids, ids[1:])) and ids[-1] < ids[0] - 0.001, ids
    assert any("identity term (λ 1): 1 − cos of dlib's face-recognition ResNet" in n for n in res.notes)
    assert torch.load(res.model_path, weights_only=False)["opts"]["id_lambda"] == 1.0
