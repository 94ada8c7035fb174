"""The StyleGAN2 core: modulated conv paths agree, deltas, overparameterized latent, specs, resampling."""

from __future__ import annotations


import pytest
import torch

from conftest import tiny_config
from support import reference_modconv
from gantune.core import (
    Generator,
    GeneratorConfig,
    layer_specs,
    make_kernel,
    modulated_conv2d,
    select_layers,
    upfirdn2d,
)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demod", [True, False])
def test_modconv_paths_agree_with_reference(up, demod):
    torch.manual_seed(0)
    B, cin, cout, k = 3, 6, 5, 3
    x = torch.randn(B, cin, 8, 8)
    w = torch.randn(cout, cin, k, k)
    s = torch.randn(B, cin)
    kern = make_kernel()
    ref = reference_modconv(x, w, s[:, None, :].expand(B, cout, cin), demod, up, kern)
    fast = modulated_conv2d(x, w, s, demodulate=demod, up=up, kernel=kern, fused=False)
    grouped = modulated_conv2d(x, w, s, demodulate=demod, up=up, kernel=kern, fused=True)
    assert fast.shape == ref.shape == (B, cout, 8 * up, 8 * up)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grouped, ref, atol=1e-5, rtol=1e-4)


def test_modconv_full_modulation_and_delta():
    torch.manual_seed(1)
    B, cin, cout = 2, 4, 7
    x = torch.randn(B, cin, 6, 6)
    w = torch.randn(cout, cin, 3, 3)
    s = torch.randn(B, cin)
    delta = 0.3 * torch.randn(B, cout, cin)
    kern = make_kernel()
    ref = reference_modconv(x, w, s[:, None, :] * (1 + delta), True, 1, kern)
    got = modulated_conv2d(x, w, s, delta=delta)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    # the same thing expressed as a full modulation matrix
    got2 = modulated_conv2d(x, w, modulation=s[:, None, :] * (1 + delta))
    torch.testing.assert_close(got2, ref, atol=1e-5, rtol=1e-4)
    # a delta shared by the batch takes the rank-1 path and matches the grouped one
    d1 = delta[:1]
    a = modulated_conv2d(x, w, s, delta=d1, fused=False)
    b = modulated_conv2d(x, w, s, delta=d1, fused=True)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        modulated_conv2d(x, w, s, delta=delta, fused=False)


def test_modconv_shape_errors():
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(3, 4, 3, 3)
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(x, w, torch.randn(2, 5))
    with pytest.raises(ValueError, match="exactly one"):
        modulated_conv2d(x, w)
    with pytest.raises(ValueError, match="delta"):
        modulated_conv2d(x, w, torch.randn(2, 4), delta=torch.randn(2, 4, 3))


def test_zero_delta_changes_nothing(tiny_G):
    ws = tiny_G.map(torch.randn(2, 32, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        plain = tiny_G.synthesis(ws)
        zero = {s.name: torch.zeros(1, s.out_ch, s.in_ch) for s in tiny_G.specs}
        assert torch.equal(tiny_G.synthesis(ws, deltas=zero), plain)
        zero_b = {s.name: torch.zeros(2, s.out_ch, s.in_ch) for s in tiny_G.specs}
        torch.testing.assert_close(tiny_G.synthesis(ws, deltas=zero_b), plain, atol=2e-5, rtol=1e-4)
        # a uniform delta is undone by demodulation; a non-uniform one changes the image
        uniform = {"b16.conv1": torch.full((1, 16, 16), 0.5)}
        torch.testing.assert_close(tiny_G.synthesis(ws, deltas=uniform), plain, atol=1e-5, rtol=1e-4)
        one = {"b16.conv1": 0.5 * torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))}
        assert (tiny_G.synthesis(ws, deltas=one) - plain).abs().max() > 1e-3


def test_fused_and_rank1_generator_agree(tiny_G):
    ws = tiny_G.map(torch.randn(3, 32, generator=torch.Generator().manual_seed(4)))
    with torch.no_grad():
        a = tiny_G.synthesis(ws, fused=False)
        b = tiny_G.synthesis(ws, fused=True)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_overparam_equal_rows_match_standard(tiny_G):
    """With every latent row equal to w, the overparameterized generator is the standard one."""
    cfg = tiny_G.cfg.replace(latent_rows=32)
    Gop = Generator(cfg).eval()
    Gop.load_state_dict(tiny_G.state_dict())
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ws = tiny_G.map(z)  # (B, num_ws, w)
        ref = tiny_G.synthesis(ws)
        zmat = z[:, None, :].expand(2, cfg.latent_rows, 32)
        wmat = Gop.map(zmat)  # rows mapped one by one
        torch.testing.assert_close(wmat, ws[:, :1].expand_as(wmat), atol=1e-6, rtol=1e-6)
        got = Gop.synthesis(wmat=wmat)
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
        # per-layer matrices (W+) with equal rows too
        wplus = ws[:, :, None, :].expand(2, cfg.num_ws, cfg.latent_rows, 32)
        torch.testing.assert_close(Gop.synthesis(wmat=wplus), ref, atol=2e-5, rtol=1e-4)
        # different rows give a different image: rows really modulate output rows separately
        wmat2 = wmat.clone()
        wmat2[:, 1] += 1.0
        assert (Gop.synthesis(wmat=wmat2) - ref).abs().max() > 1e-3


def test_overparam_row_dropping_uses_first_rows(tiny_G):
    """Layers with fewer output channels than rows use rows 0..out-1 only; later rows have no effect there."""
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(6)))
    wmat = ws[:, :1].expand(1, 40, 32).clone()
    with torch.no_grad():
        base = tiny_G.synthesis(wmat=wmat)
        wmat[:, 32:] = torch.randn(1, 8, 32)  # beyond the widest layer (32 channels): dropped everywhere
        assert torch.equal(tiny_G.synthesis(wmat=wmat), base)


def test_overparam_sampling_statistics():
    cfg = tiny_config(latent_rows=32)
    G = Generator(cfg)
    z = G.sample_z(4000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4000, 32, 32)
    assert abs(z.std().item() - 1.0) < 0.02
    assert abs(z.mean().item()) < 0.02
    a, b = z[:, 0, :].flatten(), z[:, 1, :].flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr - 0.5) < 0.03


def test_specs_1024_match_official_tables():
    cfg = GeneratorConfig(resolution=1024)
    specs = layer_specs(cfg)
    assert len(specs) == 26 and cfg.num_ws == 18
    by_hs = {s.hyperstyle_index: s for s in specs}
    # HyperStyle Table 8 / PARAMETERS: 14 = convs.8 (512->256 at 128 px), 23 = convs.14 (64->32)
    assert by_hs[14].rosinality == "convs.8" and (by_hs[14].in_ch, by_hs[14].out_ch) == (512, 256)
    assert by_hs[23].rosinality == "convs.14" and (by_hs[23].in_ch, by_hs[23].out_ch) == (64, 32)
    assert by_hs[1].rosinality == "to_rgb1" and by_hs[25].rosinality == "to_rgbs.7"
    # W+ indices (rosinality model.py): to_rgbs.7 uses 17, convs.15 uses 16
    assert {s.rosinality: s.ws_index for s in specs}["to_rgbs.7"] == 17
    assert {s.rosinality: s.ws_index for s in specs}["convs.15"] == 16
    # the paper's final configuration: medium + fine non-toRGB convs = the 14 layers of the published FFHQ file
    chosen = select_layers(specs)
    assert [s.hyperstyle_index for s in chosen] == [5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24]
    assert [s.name for s in select_layers(specs, names=["convs.8"])] == ["b128.conv0"]
    assert cfg.channels(1024) == 32 and cfg.channels(64) == 512


def test_upfirdn2d_upsample_of_constant_is_constant():
    x = torch.ones(1, 2, 6, 6)
    y = upfirdn2d(x, make_kernel() * 4, up=2, pad=(2, 1))
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.ones(1, 2, 8, 8))


def test_truncation_and_mixing(tiny_G):
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(7))
    ws = tiny_G.map(z)
    wt = tiny_G.map(z, truncation=0.5)
    torch.testing.assert_close(wt, tiny_G.w_avg + 0.5 * (ws - tiny_G.w_avg))
    assert torch.equal(tiny_G.map(z, truncation=0.0)[0, 0], tiny_G.w_avg)
    wc = tiny_G.map(z, truncation=0.5, truncation_cutoff=3)
    torch.testing.assert_close(wc[:, :3], wt[:, :3])
    torch.testing.assert_close(wc[:, 3:], ws[:, 3:])
    z2 = torch.randn(2, 32, generator=torch.Generator().manual_seed(8))
    mixed = tiny_G.map(z, mix_z=z2, mix_index=4)
    torch.testing.assert_close(mixed[:, :4], ws[:, :4])
    torch.testing.assert_close(mixed[:, 4:], tiny_G.map(z2)[:, 4:])


def test_noise_modes(tiny_G):
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        a = tiny_G.synthesis(ws, noise_mode="const")
        assert torch.equal(a, tiny_G.synthesis(ws, noise_mode="const"))
        torch.manual_seed(0)
        r1 = tiny_G.synthesis(ws, noise_mode="random")
        torch.manual_seed(1)
        r2 = tiny_G.synthesis(ws, noise_mode="random")
        assert (r1 - r2).abs().max() > 1e-4
        n = tiny_G.synthesis(ws, noise_mode="none")
        assert (n - a).abs().max() > 1e-4
    with pytest.raises(ValueError):
        tiny_G.synthesis(ws, noise_mode="bogus")


@pytest.mark.parametrize("res", [8, 64])
def test_any_resolution_and_mapping_depth(res):
    cfg = GeneratorConfig(resolution=res, z_dim=16, w_dim=16, mapping_layers=1, channel_base=128, channel_max=16,
                          use_noise=False)
    G = Generator(cfg)
    with torch.no_grad():
        img = G(torch.randn(2, 16))
    assert img.shape == (2, 3, res, res)
    assert not any("noise" in k for k in G.state_dict())


def test_bf16_close_to_fp32(tiny_G):
    ws = tiny_G.map(torch.randn(2, 32, generator=torch.Generator().manual_seed(10)))
    with torch.no_grad():
        ref = tiny_G.synthesis(ws)
        tiny_G.set_precision(torch.bfloat16, channels_last=True)
        got = tiny_G.synthesis(ws)
        tiny_G.set_precision(torch.float32)
    assert got.dtype == torch.float32
    err = (got - ref).abs().max().item()
    assert 0 < err < 0.1 * ref.abs().max().item()


def test_config_roundtrip_and_validation():
    cfg = tiny_config(latent_rows=32)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        GeneratorConfig(resolution=48)
    with pytest.raises(ValueError):
        tiny_config(latent_rows=8)  # fewer rows than the widest layer
    with pytest.raises(ValueError):
        GeneratorConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_per_tap_delta_matches_folded_weight():
    """A full-kernel offset (B, out, in, k, k) equals rendering with θ ⊙ (1 + Δ) folded into the weight."""
    torch.manual_seed(2)
    B, cin, cout = 2, 4, 5
    x = torch.randn(B, cin, 6, 6)
    w = torch.randn(cout, cin, 3, 3)
    s = torch.randn(B, cin)
    d = 0.3 * torch.randn(B, cout, cin, 3, 3)
    kern = make_kernel()
    for up in (1, 2):
        got = modulated_conv2d(x, w, s, delta=d, up=up, kernel=kern)
        ref = torch.cat([modulated_conv2d(x[b : b + 1], w * (1 + d[b]), s[b : b + 1], up=up, kernel=kern) for b in range(B)])
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
        shared = modulated_conv2d(x, w, s, delta=d[:1], up=up, kernel=kern, fused=False)
        torch.testing.assert_close(shared, modulated_conv2d(x, w * (1 + d[0]), s, up=up, kernel=kern), atol=1e-5, rtol=1e-4)
        with torch.no_grad():  # θ̂ written straight in bf16 (no float32 copy): the float32 result to bf16 rounding
            half = modulated_conv2d(x.bfloat16(), w, s, delta=d, up=up, kernel=kern)
        assert half.dtype == torch.bfloat16 and (half.float() - got).abs().max() <= 0.03 * got.abs().max()


def test_meta_skeleton_draws_nothing_and_real_init_keeps_its_draws():
    """Importers build the generator on the meta device and assign loaded tensors: there init_normal hands out bare
    storage (no Python-level random ops); on a real device it is randn / divisor, the draws seeded models had."""
    from gantune.core.layers import init_normal

    cfg = GeneratorConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=16)
    with torch.device("meta"):
        skel = Generator(cfg)
    real = Generator(cfg)
    assert all(p.is_meta for p in skel.parameters())
    assert {k: tuple(v.shape) for k, v in skel.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in real.state_dict().items()}
    torch.manual_seed(5)
    a = init_normal(7, 9, divisor=0.01)
    torch.manual_seed(5)
    assert torch.equal(a, torch.randn(7, 9) / 0.01)
