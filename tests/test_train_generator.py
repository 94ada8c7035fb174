"""Generator training: loss directions, bit-exact resume, DDP equivalence, overparam sampling, synthetic faces, CLI."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from conftest import tiny_config


class ConstantData:
    """A trivially learnable target: every image is the same colour field, plus a little noise from the loop's RNG."""

    name = "constant"

    def __init__(self, resolution: int) -> None:
        self.img = torch.tensor([0.8, -0.6, 0.2])[:, None, None].expand(3, resolution, resolution)

    def sample(self, batch, generator, *, rank=0, world=1):
        from gantune.train.data import slice_for_rank

        noise = 0.05 * torch.randn(batch, *self.img.shape, generator=generator)
        return slice_for_rank(self.img[None] + noise, rank, world)

    def describe(self):
        return {"data": self.name}


def cfg16(**kw):
    return tiny_config(**dict(dict(resolution=16, channel_base=128, channel_max=16, z_dim=16, w_dim=16), **kw))


def make_trainer(cfg=None, **opts):
    from gantune.train import GeneratorTrainer, TrainOptions

    cfg = cfg or cfg16()
    return GeneratorTrainer(cfg, TrainOptions(**dict(dict(batch=4, seed=3), **opts)), ConstantData(cfg.resolution))


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- losses move the right way ------------------------------------------------------------------------------------
def _eval_losses(tr, z, real):
    from gantune.train.losses import d_logistic, g_nonsaturating

    with torch.no_grad():
        fake = tr.synthesize(tr.G, tr.G.mapping(z)[:, None].expand(-1, tr.cfg.num_ws, -1))
        return float(d_logistic(tr.D(real), tr.D(fake))), float(g_nonsaturating(tr.D(fake)))


def test_d_steps_lower_d_loss_and_g_steps_lower_g_loss():
    tr = make_trainer(pl_weight=0, r1_interval=0, style_mixing=0.0, lr=0.01)
    z = torch.randn(8, tr.cfg.z_dim, generator=torch.Generator().manual_seed(1))
    real = ConstantData(16).sample(8, torch.Generator().manual_seed(2))
    # G frozen (lr 0): D alone must learn to tell the constant target from the fakes
    g0 = _params(tr.G)
    for grp in tr.opt_G.param_groups:
        grp["lr"] = 0.0
    d_before, _ = _eval_losses(tr, z, real)
    for _ in range(4):
        tr.step()
    d_after, g_mid = _eval_losses(tr, z, real)
    assert all(torch.equal(v, _params(tr.G)[k]) for k, v in g0.items() if "w_avg" not in k)
    assert d_after < d_before - 0.3, (d_before, d_after)
    # D frozen: G alone must fool the now-trained D
    for grp in tr.opt_G.param_groups:
        grp["lr"] = 0.01
    for grp in tr.opt_D.param_groups:
        grp["lr"] = 0.0
    for _ in range(4):
        tr.step()
    d_end, g_end = _eval_losses(tr, z, real)
    assert g_end < g_mid - 0.3, (g_mid, g_end)
    assert d_end > d_after  # the frozen D is fooled more than before


def test_r1_and_path_length_are_gradients_of_the_right_things():
    from gantune.train.losses import path_lengths, r1_penalty

    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    logits = (x * 2.0).flatten(1).sum(1, keepdim=True)  # gradient 2 everywhere -> |grad|² = 4·32
    assert float(r1_penalty(logits, x)) == pytest.approx(4.0 * 32)
    w = torch.randn(2, 5, 6, requires_grad=True)
    img = 3.0 * w[:, :1, :4].reshape(2, 1, 2, 2)  # only layer 0, 4 coords influence the image
    noise = torch.ones(2, 1, 2, 2)
    # d/dw sum(img·noise/√4) = 1.5 on 4 coordinates of layer 0 -> sum over w_dim 9, mean over 5 layers 1.8
    assert torch.allclose(path_lengths(img, w, noise), torch.full((2,), 1.8**0.5))


# --- resume -------------------------------------------------------------------------------------------------------
def test_resume_is_bit_exact(tmp_path):
    from gantune.train import train
    from gantune.train.checkpoint import latest_state, load_state

    opts = dict(pl_interval=2, r1_interval=2, style_mixing=0.9)
    kimg2, kimg4 = 2 * 4 / 1000, 4 * 4 / 1000
    a = make_trainer(**opts)
    train(a, run_dir=tmp_path / "a", kimg=kimg4, snap_kimg=1.0, grid_size=4)
    b = make_trainer(**opts)
    train(b, run_dir=tmp_path / "b", kimg=kimg2, snap_kimg=1.0, grid_size=4)
    torch.manual_seed(999)  # the resumed process starts with unrelated global RNG state
    c = make_trainer(**dict(opts, seed=3))
    c.load_state_dict(load_state(latest_state(tmp_path / "b")))
    assert c.step_count == 2 and c.nimg == 8
    train(c, run_dir=tmp_path / "b", kimg=kimg4, snap_kimg=1.0, grid_size=4)
    for name in ("G", "D", "G_ema"):
        pa, pc = _params(getattr(a, name)), _params(getattr(c, name))
        for k in pa:
            assert torch.equal(pa[k], pc[k]), f"{name}.{k} differs after resume"
    assert torch.equal(a.pl_mean, c.pl_mean)
    # the run folder holds a native generator that loads on its own, with the training provenance
    from gantune.weights.native import load_native

    net = sorted((tmp_path / "b").glob("network-*.safetensors"))[-1]
    G, meta = load_native(net)
    assert meta["kimg"] == pytest.approx(kimg4) and meta["ema"] is True
    assert torch.equal(G.synthesis.const, c.G_ema.synthesis.const)
    assert list((tmp_path / "b").glob("fakes-*.png"))


def test_resume_rejects_other_architecture(tmp_path):
    from gantune.errors import InputError
    from gantune.train import train
    from gantune.train.checkpoint import latest_state, load_state

    a = make_trainer(pl_weight=0)
    train(a, run_dir=tmp_path, kimg=0.004, grid_size=1)
    other = make_trainer(cfg=cfg16(mapping_layers=3), pl_weight=0)
    with pytest.raises(InputError, match="architecture"):
        other.load_state_dict(load_state(latest_state(tmp_path)))


# --- DDP ----------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_OPTS = dict(batch=4, seed=3, mbstd_group=2, r1_interval=1, pl_interval=1)  # every phase in the first step


def _ddp_worker(rank, world, port, out):
    import torch.distributed as dist

    from gantune.train import GeneratorTrainer, TrainOptions, ddp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {}
        for rows in (0, 16):  # standard, then overparameterized
            tr = GeneratorTrainer(cfg16(use_noise=False, latent_rows=rows), TrainOptions(**DDP_OPTS), ConstantData(16),
                                  dist=ddp.DistInfo(rank=rank, world=world))
            tr.step()
            results[str(rows)] = {"G": tr.G.state_dict(), "D": tr.D.state_dict(), "stats": tr.stats}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    from gantune.train import GeneratorTrainer, TrainOptions

    out = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    results = torch.load(out, weights_only=True)
    for rows in (0, 16):
        two = results[str(rows)]
        one = GeneratorTrainer(cfg16(use_noise=False, latent_rows=rows), TrainOptions(**DDP_OPTS), ConstantData(16))
        init = _params(one.G)
        one.step()
        for name in ("G", "D"):
            for k, v in getattr(one, name).state_dict().items():
                assert torch.allclose(v, two[name][k], atol=1e-5, rtol=1e-4), f"rows={rows}: {name}.{k}"
        assert any(not torch.equal(init[k], v) for k, v in one.G.state_dict().items())  # the step did change G
        for k in ("loss_G", "loss_D", "pl_penalty", "r1"):
            assert two["stats"][k] == pytest.approx(one.stats[k], rel=1e-4, abs=1e-6), (rows, k)


# --- overparameterized latents ------------------------------------------------------------------------------------
def test_overparam_sampling_correlation_and_whole_matrix_mixing():
    tr = make_trainer(cfg=cfg16(latent_rows=16, use_noise=False), style_mixing=0.5)
    z, z2, cut = tr.sample_latents(4000)
    assert z.shape == (4000, 16, 16)
    x = z[:, :, 0]  # (samples, rows) of one coordinate
    c = torch.corrcoef(x.T)
    off = c[~torch.eye(16, dtype=torch.bool)]
    assert abs(float(off.mean()) - 0.5) < 0.02 and float(off.std()) < 0.05
    assert abs(float(z.var()) - 1.0) < 0.02 and abs(float(z.mean())) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([z[:, 0, 0], z2[:, 0, 0]]))[0, 1])) < 0.05  # mixing latents independent
    mixed = (cut < tr.cfg.num_ws).float().mean()
    assert abs(float(mixed) - 0.5) < 0.05
    with torch.no_grad():
        lat = tr.latents(tr.G, z[:6], z2[:6], torch.tensor([1, 3, 6, 6, 2, 5]))
        w1, w2 = tr.G.mapping(z[:6]), tr.G.mapping(z2[:6])
    assert lat.shape == (6, tr.cfg.num_ws, 16, 16)
    for i, k in enumerate([1, 3, 6, 6, 2, 5]):
        assert torch.equal(lat[i, :k], w1[i, None].expand(k, -1, -1))
        assert torch.equal(lat[i, k:], w2[i, None].expand(6 - k, -1, -1))


def test_overparam_training_step_runs_and_tracks_w_avg():
    tr = make_trainer(cfg=cfg16(latent_rows=16, use_noise=False, mapping_layers=2), pl_interval=1, r1_interval=1)
    before = tr.G.mapping.w_avg.clone()
    stats = tr.step()
    assert {"loss_G", "loss_D", "pl_penalty", "r1"} <= set(stats) and all(np.isfinite(list(stats.values())))
    assert not torch.equal(before, tr.G.mapping.w_avg)
    img = tr.sample_grid(2)
    assert img.shape == (2, 3, 16, 16)


# --- synthetic faces ----------------------------------------------------------------------------------------------
def test_synthetic_faces_are_faces_and_deterministic():
    dlib = pytest.importorskip("dlib")
    from gantune.io.images import tensor_to_pil
    from PIL import Image

    from gantune.train.data import LICENSE_NOTE, SyntheticFaces

    src = SyntheticFaces(64)
    x = src.sample(6, torch.Generator().manual_seed(5))
    assert x.shape == (6, 3, 64, 64) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.2
    assert torch.equal(x, src.sample(6, torch.Generator().manual_seed(5)))
    assert not torch.equal(x, src.sample(6, torch.Generator().manual_seed(6)))
    # rank slices of a global batch are the single-process batch, split
    halves = [src.sample(6, torch.Generator().manual_seed(5), rank=r, world=2) for r in (0, 1)]
    assert torch.allclose(torch.cat(halves), x, atol=1e-6)
    det = dlib.get_frontal_face_detector()
    found = sum(len(det(np.asarray(im.resize((256, 256), Image.BICUBIC)), 1)) > 0 for im in tensor_to_pil(x))
    assert found >= 4, f"dlib found faces in only {found}/6 samples"
    small = SyntheticFaces(32).sample(2, torch.Generator().manual_seed(5))
    assert small.shape == (2, 3, 32, 32)
    big = src.sample(2, torch.Generator().manual_seed(5))
    assert torch.allclose(small, torch.nn.functional.avg_pool2d(big, 2), atol=1e-5)  # area resize
    assert "non-commercial" in LICENSE_NOTE.lower() or "NON-COMMERCIAL" in LICENSE_NOTE


# --- CLI ----------------------------------------------------------------------------------------------------------
def _folder(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (d / "broken.png").write_bytes(b"not a png")
    return d


def _main_fails(argv, capsys) -> str:
    from gantune.cli.app import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code not in (0, None)
    return " ".join(capsys.readouterr().err.split())  # rich wraps long paths at the console width


def test_cli_trains_resumes_and_marks_licence(tmp_path, capsys):
    from typer.testing import CliRunner

    from gantune.cli.app import app
    from gantune.weights.native import load_native

    data = _folder(tmp_path)
    out = tmp_path / "run"
    args = ["train", "generator", "--data", str(data), "-r", "16", "--channel-base", "128", "--channel-max", "16",
            "--z-dim", "16", "--mapping-layers", "2", "--batch", "4", "--snap", "0.004", "--device", "cpu", "-o", str(out)]
    r = CliRunner().invoke(app, args + ["--kimg", "0.008"])
    assert r.exit_code == 0, r.output
    assert "from scratch" in r.output
    assert len(list(out.glob("network-*.safetensors"))) == 2
    r = CliRunner().invoke(app, args + ["--kimg", "0.012"])
    assert r.exit_code == 0, r.output
    assert "resumed from training-state-000000008.pt" in r.output
    G, meta = load_native(out / "network-000000012.safetensors")
    assert G.cfg.resolution == 16 and meta["step"] == 3 and meta["data"]["images"] == 3
    assert "license" not in meta
    err = _main_fails(args + ["--kimg", "0.016", "--mapping-layers", "3"], capsys)
    assert "architecture differs" in err and "--resume none" in err
    assert "not a folder" in _main_fails(["train", "generator", "--data", str(tmp_path / "nope"), "-o", str(out)], capsys)
    assert "--latent-rows needs --overparam" in _main_fails(args + ["--latent-rows", "64"], capsys)


def test_cli_synthetic_faces_overparam_metadata(tmp_path):
    from typer.testing import CliRunner

    from gantune.cli.app import app
    from gantune.weights.native import load_native

    out = tmp_path / "op"
    r = CliRunner().invoke(app, ["train", "generator", "--data", "synthetic-faces", "--overparam", "-r", "16",
                                 "--channel-base", "128", "--channel-max", "16", "--z-dim", "16", "--batch", "4",
                                 "--kimg", "0.004", "--device", "cpu", "-o", str(out)])
    assert r.exit_code == 0, r.output
    G, meta = load_native(next(out.glob("network-*.safetensors")))
    assert G.cfg.latent_rows == 16 and G.cfg.mapping_layers == 2 and not G.cfg.use_noise
    assert "non-commercial" in meta["license"] and meta["data"]["data"] == "synthetic-faces"


# --- growing from half the resolution ------------------------------------------------------------------------------
@pytest.mark.parametrize("overparam", [False, True])
def test_grow_from_half_resolution_starts_from_the_small_generators_images(overparam):
    from gantune.core import Generator
    from gantune.core.resample import make_kernel, upsample2x

    cfg = cfg16()
    if overparam:
        cfg = cfg.replace(use_noise=False, latent_rows=16)
    torch.manual_seed(5)
    small = Generator(cfg.replace(resolution=8)).eval()
    with torch.no_grad():  # a trained-looking small generator: nonzero toRGB everywhere
        for p in small.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tr = make_trainer(cfg)
    fresh = tr.grow_from(small)
    assert fresh and all(n.startswith("synthesis.layers.b16.") for n in fresh)
    z = small.sample_z(3, generator=torch.Generator().manual_seed(0))
    mode = "none" if overparam else "const"
    with torch.no_grad():
        want = upsample2x(small(z, noise_mode=mode), make_kernel())
        for net in (tr.G, tr.G_ema):
            got = net(z, noise_mode=mode)
            assert got.shape[-1] == 16
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the new block trains: one step moves its toRGB away from zero
    tr.step()
    assert float(tr.G.synthesis.layers["b16"]["torgb"].weight.detach().abs().sum()) > 0


def test_grow_from_refuses_other_options():
    from gantune.core import Generator

    tr = make_trainer()
    with pytest.raises(ValueError, match="same options"):
        tr.grow_from(Generator(cfg16(resolution=8, z_dim=8, w_dim=8)))
    with pytest.raises(ValueError, match="same options"):
        tr.grow_from(Generator(cfg16()))


def test_d_warmup_freezes_g_until_its_images_are_shown():
    tr = make_trainer(d_warmup_kimg=0.008)  # 8 images = 2 steps of 4
    g0, d0 = _params(tr.G), _params(tr.D)
    tr.step()
    tr.step()
    assert all(torch.equal(v, _params(tr.G)[k]) for k, v in g0.items())
    assert any(not torch.equal(v, _params(tr.D)[k]) for k, v in d0.items())
    assert "loss_G" not in tr.stats
    tr.step()
    assert any(not torch.equal(v, _params(tr.G)[k]) for k, v in g0.items() if v.is_floating_point())


def test_freeze_below_top_trains_only_the_new_block():
    tr = make_trainer(freeze_below_top_kimg=0.008)  # 2 steps of 4 with only the b16 block training
    g0 = _params(tr.G)
    tr.step()
    tr.step()
    changed = {k for k, v in _params(tr.G).items() if v.is_floating_point() and not torch.equal(v, g0[k])}
    assert changed and all(k.startswith("synthesis.layers.b16.") for k in changed - {"mapping.w_avg"})
    tr.step()
    changed = {k for k, v in _params(tr.G).items() if v.is_floating_point() and not torch.equal(v, g0[k])}
    assert any(k.startswith("synthesis.layers.b8.") for k in changed)


def test_cli_freeze_grown_without_grow_from_is_one_line_and_writes_nothing(tmp_path, capsys):
    from support import run_cli

    out = tmp_path / "g"
    code, lines = run_cli(["train", "generator", "--data", "synthetic-faces", "-r", "16", "--channel-base", "128",
                           "--channel-max", "16", "--z-dim", "16", "--batch", "4", "--kimg", "0.004",
                           "--freeze-grown", "2", "--device", "cpu", "-o", out], capsys)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code != 0 and len(errors) == 1
    assert "--freeze-grown" in errors[0] and any("--grow-from" in ln for ln in lines)
    assert not out.exists() or not any(out.iterdir())


# --- distillation from a generator-type data source ---------------------------------------------------------------
class TeacherData(ConstantData):
    """A source that is itself a generator: a fixed smooth function of an 8-d latent (what SyntheticFaces is)."""

    name = "teacher"
    teacher_dim = 8

    def __init__(self, resolution: int) -> None:
        super().__init__(resolution)
        g = torch.Generator().manual_seed(11)
        self.proj = torch.randn(8, 3 * 4 * 4, generator=g) / 8**0.5
        self.resolution = resolution

    def teacher(self, z):
        small = torch.tanh(z @ self.proj).reshape(-1, 3, 4, 4)
        return torch.nn.functional.interpolate(small, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)

    def sample(self, batch, generator, *, rank=0, world=1):
        from gantune.train.data import slice_for_rank

        return slice_for_rank(self.teacher(torch.randn(batch, 8, generator=generator)), rank, world)


def _distill_trainer(cfg=None, **opts):
    from gantune.train import GeneratorTrainer, TrainOptions

    cfg = cfg or cfg16()
    o = dict(dict(batch=8, seed=3, distill=10.0), **opts)
    return GeneratorTrainer(cfg, TrainOptions(**o), TeacherData(cfg.resolution))


def _teacher_l1(tr, n=64):
    g = torch.Generator().manual_seed(99)
    z = tr.G.sample_z(n, generator=g)
    with torch.no_grad():
        img = tr.synthesize(tr.G, tr.G.mapping(z)[:, None].expand(-1, tr.cfg.num_ws, -1))
        return float((img - tr.data.teacher(tr.teacher_z(z))).abs().mean())


def test_distill_only_phase_fits_the_teacher_and_leaves_d_alone():
    tr = _distill_trainer(cfg16(use_noise=False), distill_only_kimg=0.24, lr=0.01)  # 30 steps of 8
    d0 = _params(tr.D)
    before = _teacher_l1(tr)
    for _ in range(30):
        stats = tr.step()
        assert set(stats) == {"distill_L1"}
    mapping, rest = tr.opt_G.param_groups
    assert rest["lr"] == tr.opts.distill_lr and rest["betas"][0] == 0.9
    assert mapping["lr"] == pytest.approx(tr.opts.distill_lr / tr.cfg.mapping_lr_mul)  # the mapping at full rate
    assert all(n.startswith("mapping.") for n, p in tr.G.named_parameters() if any(p is q for q in mapping["params"]))
    after = _teacher_l1(tr)
    assert after < 0.6 * before, (before, after)
    assert all(torch.equal(v, _params(tr.D)[k]) for k, v in d0.items())
    stats = tr.step()  # the phase is over: adversarial training with the teacher term added
    assert {"loss_G", "loss_D", "distill_L1"} <= set(stats)
    assert all(g["lr"] == pytest.approx(0.01 * 4 / 5) and g["betas"][0] == 0.0 for g in tr.opt_G.param_groups)
    assert any(not torch.equal(v, _params(tr.D)[k]) for k, v in d0.items())


def test_teacher_latent_is_the_normalised_z_or_the_shared_row_and_draws_stay_the_same():
    tr = _distill_trainer(cfg16())
    plain = _distill_trainer(cfg16(), distill=0.0)
    z, z2, cut, tz = tr.sample_latents(500, with_teacher=True)
    z_, z2_, cut_ = plain.sample_latents(500)
    assert torch.equal(z, z_) and torch.equal(z2, z2_) and torch.equal(cut, cut_)  # the loop's streams do not move
    assert tz.shape == (500, 8)
    assert torch.allclose(tz, z[:, :8] / z[:, :8].square().mean(1, keepdim=True).sqrt(), atol=1e-5)
    over = _distill_trainer(cfg16(latent_rows=16, use_noise=False))
    plain_over = make_trainer(cfg=cfg16(latent_rows=16, use_noise=False))
    plain_over.opts = over.opts
    Z, _, _, tz = over.sample_latents(500, with_teacher=True)
    Z_, _, _ = plain_over.sample_latents(500)
    assert torch.equal(Z, Z_)  # the same draws as G.sample_z
    shared_est = (Z[:, :, :8].mean(1) * 2**0.5)  # rows' mean = (mean of row noise + shared)/√2
    corr = torch.corrcoef(torch.stack([shared_est.flatten(), tz.flatten()]))[0, 1]
    assert corr > 0.9  # (a single row would give about 0.7)


def test_distill_needs_a_generator_source_and_a_weight(tmp_path, capsys):
    from support import run_cli

    from gantune.train import TrainOptions

    with pytest.raises(ValueError, match="distillation weight"):
        TrainOptions(distill_only_kimg=1.0)
    out = tmp_path / "g"
    base = ["train", "generator", "-r", "16", "--channel-base", "128", "--channel-max", "16", "--z-dim", "16",
            "--batch", "4", "--kimg", "0.004", "--device", "cpu", "-o", out]
    code, lines = run_cli(base + ["--data", _folder(tmp_path), "--distill", "5"], capsys)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "distill" in errors[0]
    assert any("synthetic-faces" in ln for ln in lines)
    code, lines = run_cli(base + ["--data", "synthetic-faces", "--distill-only", "2"], capsys)
    assert code != 0 and sum(ln.startswith("error:") for ln in lines) == 1
    assert not out.exists() or not any(out.iterdir())


def test_cli_grow_from_other_options_fails_before_the_data_is_opened(tmp_path, capsys, monkeypatch):
    from support import run_cli

    from gantune.core import Generator
    from gantune.train import data as data_mod
    from gantune.weights.native import save_native

    small = tmp_path / "small.safetensors"
    save_native(Generator(cfg16(resolution=8, z_dim=8, w_dim=8)), small)  # z 8: not the requested 16
    opened = []
    monkeypatch.setattr(data_mod, "open_source", lambda *a, **k: opened.append(a) or None)
    out = tmp_path / "g"
    code, lines = run_cli(["train", "generator", "--data", "synthetic-faces", "-r", "16", "--channel-base", "128",
                           "--channel-max", "16", "--z-dim", "16", "--batch", "4", "--kimg", "0.004", "--device", "cpu",
                           "--grow-from", small, "-o", out], capsys)
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "--grow-from needs" in errors[0]
    assert not opened and (not out.exists() or not any(out.iterdir()))


def test_resume_reads_a_state_written_with_one_optimizer_group():
    """Training states from before the mapping had its own optimizer group resume with the same moments."""
    tr = make_trainer()
    tr.step()
    state = tr.state_dict()
    opt = state["opt_G"]
    ids = [i for g in opt["param_groups"] for i in g["params"]]
    opt["param_groups"] = [dict(opt["param_groups"][1], params=ids)]  # as written before: one group, same indices
    again = make_trainer()
    again.load_state_dict(state)
    assert [len(g["params"]) for g in again.opt_G.param_groups] == [len(g["params"]) for g in tr.opt_G.param_groups]
    for a, b in zip(again.opt_G.param_groups, tr.opt_G.param_groups):
        for p, q in zip(a["params"], b["params"]):
            assert torch.equal(again.opt_G.state[p]["exp_avg_sq"], tr.opt_G.state[q]["exp_avg_sq"])
