"""The StyleGAN2 core: modulated conv paths agree, deltas, overparameterized latent, specs, resampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from gantune.core import (
    Generator,
    GeneratorConfig,
    layer_specs,
    make_kernel,
    modulated_conv2d,
    select_layers,
    upfirdn2d,
)


def reference_modconv(x, weight, mod, demod, up, kernel):
    """Straightforward per-sample loop with an explicit (out, in) modulation matrix (independent of the fast code)."""
    outs = []
    out_ch, in_ch, k, _ = weight.shape
    for b in range(x.shape[0]):
        w = weight * mod[b][:, :, None, None] / math.sqrt(in_ch * k * k)
        if demod:
            w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b : b + 1]
        if up == 2:
            y = F.conv_transpose2d(xb, w.transpose(0, 1), stride=2)
            y = upfirdn2d(y, kernel * 4, pad=(1, 1))
        else:
            y = F.conv2d(xb, w, padding=k // 2)
        outs.append(y)
    return torch.cat(outs)


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


@pytest.fixture
def phases_on_cpu(monkeypatch):
    """Run upsampling layers as four phase kernels + pixel_shuffle on the CPU (CUDA's default), counting the calls."""
    from gantune.core import modconv, resample

    calls = []
    real = resample.upconv_phases

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setitem(resample.UPSAMPLE_IMPL, "cpu", "phases")
    monkeypatch.setattr(modconv, "upconv_phases", spy)
    return calls


@pytest.mark.parametrize("fused", [True, False])
def test_phase_upsampling_equals_transposed_conv_and_blur(phases_on_cpu, fused):
    """The blur folded into four phase kernels gives the reference's transposed conv + blur, with per-channel and
    per-tap offsets, on both modconv paths (the grouped one with its map-size rule: 8×8 ≥ 9·in for in = 6)."""
    torch.manual_seed(3)
    B, cin, cout = 3, 6, 5
    x = torch.randn(B, cin, 8, 8)
    w = torch.randn(cout, cin, 3, 3)
    s = torch.randn(B, cin)
    kern = make_kernel()
    bias = torch.randn(cout)
    d = 0.3 * torch.randn(1 if not fused else B, cout, cin)
    dk = 0.3 * torch.randn(B, cout, cin, 3, 3)
    mod = s[:, None, :].expand(B, cout, cin)

    def offset_weight(delta, b):  # θ ⊙ (1 + Δ) of image b (a delta of batch 1 is shared)
        if delta is None:
            return w
        d_b = delta[b if delta.shape[0] > 1 else 0]
        return w * (1 + (d_b if d_b.ndim == 4 else d_b[..., None, None]))

    for delta in (None, d) + ((dk,) if fused else ()):
        ref = torch.cat([reference_modconv(x[b:b + 1], offset_weight(delta, b), mod[b:b + 1], True, 2, kern)
                         for b in range(B)])
        ref = ref + bias[None, :, None, None]
        n = len(phases_on_cpu)
        out = modulated_conv2d(x, w, s, delta=delta, up=2, kernel=kern, fused=fused, bias=bias)
        assert len(phases_on_cpu) == n + 1
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_phase_upsampling_generator_matches_and_skips_small_maps(tiny_G, phases_on_cpu, monkeypatch):
    """A whole render with per-image offsets in bf16 (the in-place, non-folded path) and fp32 (grouped): the same
    image with phases as with the transposed conv; per-image weights switch to phases only on maps ≥ 9·in pixels."""
    from gantune.core import resample

    G = tiny_G
    g = torch.Generator().manual_seed(4)
    ws = G.map(torch.randn(2, G.cfg.z_dim, generator=g))
    deltas = {s.name: 0.2 * torch.randn(2, s.out_ch, s.in_ch, generator=g) for s in G.specs if s.kind == "conv"}
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.08)):
        G.set_precision(dtype)
        with torch.no_grad():
            a = G.synthesis(ws, deltas=deltas, noise_mode="const", fused=True).float()
            b_plain = G.synthesis(ws, noise_mode="const", fused=False).float()
            monkeypatch.setitem(resample.UPSAMPLE_IMPL, "cpu", "transposed")
            ref = G.synthesis(ws, deltas=deltas, noise_mode="const", fused=True).float()
            ref_plain = G.synthesis(ws, noise_mode="const", fused=False).float()
            monkeypatch.setitem(resample.UPSAMPLE_IMPL, "cpu", "phases")
        assert (a - ref).abs().max() <= tol * ref.abs().max()
        assert (b_plain - ref_plain).abs().max() <= tol * ref_plain.abs().max()
    G.set_precision(torch.float32)
    ups = [s for s in G.specs if s.up == 2]
    # rank-1 calls: every upsampling layer; grouped: only those whose input map has ≥ 9·in pixels
    grouped_ok = [s for s in ups if (s.res // 2) ** 2 >= 9 * s.in_ch]
    assert grouped_ok and len(grouped_ok) < len(ups)
    assert len(phases_on_cpu) == 2 * (len(grouped_ok) + len(ups))  # two dtypes


@pytest.mark.parametrize("channels_last", [False, True])
def test_noise_added_per_image_equals_broadcast_add(tiny_G, monkeypatch, channels_last):
    """The multi-tensor noise add (CUDA's eager path, run here on the CPU) gives the broadcast add's render, bit for
    bit, on NCHW maps and on channels-last ones (``--channels-last``: each image's (H, W, C) block gets the map
    repeated over the channels)."""
    from gantune.core import layers

    # bf16 on the generic layers with their in-place ops, as on CUDA (not the folded CPU path, which bf16 takes on
    # CPUs with bf16 in hardware)
    monkeypatch.setattr(layers, "folded_path_applies", lambda x: False)
    G = tiny_G.set_precision(torch.bfloat16, channels_last=channels_last)
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=torch.Generator().manual_seed(6)))
    try:
        with torch.no_grad():
            ref = G.synthesis(ws, noise_mode="const")
            monkeypatch.setattr(layers, "NOISE_FOREACH_DEVICES", {"cpu"})
            calls = []
            real = torch._foreach_add_
            monkeypatch.setattr(torch, "_foreach_add_", lambda *a: calls.append(1) or real(*a))
            out = G.synthesis(ws, noise_mode="const")
    finally:
        G.set_precision(torch.float32)
    assert len(calls) == sum(s.kind == "conv" for s in G.specs)
    assert torch.equal(out, ref)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.randn(2, 5, 4, 6).contiguous(memory_format=layout)
    n = torch.randn(1, 1, 4, 6)
    assert torch.equal(layers.add_noise_(y.clone(), n), y + n)


def test_auto_upsampling_rule(monkeypatch):
    """The "auto" upsampling rule keeps float32 and small batches on the transposed convolution."""
    from gantune.core import resample

    x = torch.zeros(8, 16, 32, 32, dtype=torch.bfloat16)
    monkeypatch.setitem(resample.UPSAMPLE_IMPL, "cpu", "auto")
    k = make_kernel()
    assert resample.use_phases(x, 16, 3, k, per_image_weight=True)
    assert resample.use_phases(x[:4], 16, 3, k, per_image_weight=True)
    assert not resample.use_phases(x[:2], 16, 3, k, per_image_weight=True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert resample.use_phases(x.float(), 16, 3, k, per_image_weight=True)
    assert not resample.use_phases(x[:4].float(), 16, 3, k, per_image_weight=True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # strict float32: cuDNN's phase conv was slower
    assert not resample.use_phases(x.float(), 16, 3, k, per_image_weight=True)
    assert not resample.use_phases(x, 128, 3, k, per_image_weight=True)  # 32·32 < 9·128
    assert resample.use_phases(x, 128, 3, k, per_image_weight=False)


@pytest.mark.parametrize("phases", [False, True])
def test_per_image_loop_equals_grouped_convolution(tiny_G, monkeypatch, phases):
    """Per-image weights convolved one image at a time on channels-last maps (CUDA's path for maps ≥ 32², run here
    on the CPU) give the grouped convolution's render: HyperStyle offsets on every layer, both upsampling forms."""
    from gantune.core import modconv, resample

    G = tiny_G.set_precision(torch.bfloat16, channels_last=False)
    g = torch.Generator().manual_seed(9)
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=g))
    deltas = {s.name: 0.1 * torch.randn(3, s.out_ch, s.in_ch, generator=g) for s in G.specs}
    monkeypatch.setitem(resample.UPSAMPLE_IMPL, "cpu", "phases" if phases else "transposed")
    calls = []
    real = modconv.conv_per_image
    monkeypatch.setattr(modconv, "conv_per_image", lambda *a: calls.append(a[0].shape) or real(*a))
    try:
        with torch.no_grad():
            ref = G.synthesis(ws, deltas=deltas, fused=True).float()
            assert not calls
            monkeypatch.setitem(modconv.PER_IMAGE_CONV, "cpu", "loop")
            out = G.synthesis(ws, deltas=deltas, fused=True).float()
            monkeypatch.setitem(modconv.PER_IMAGE_CONV, "cpu", "auto")
            monkeypatch.setattr(modconv, "PER_IMAGE_LOOP_MIN_HW", 16 * 16)
            calls.clear()
            auto = G.synthesis(ws, deltas=deltas, fused=True).float()
    finally:
        G.set_precision(torch.float32)
    assert torch.allclose(out, ref, atol=0.02), (out - ref).abs().max()  # bf16: a different summation order
    assert (out - ref).abs().mean() < 2e-3
    assert calls and all(s[2] * s[3] >= 16 * 16 for s in calls)
    assert len(calls) < sum(s.kind == "conv" for s in G.specs)  # the small maps stay grouped
    assert torch.allclose(auto, ref, atol=0.02)


def test_cuda_paths_switch_only_under_the_compiler(monkeypatch):
    """CUDA's defaults: per-image weights loop over images (maps ≥ 32², batch > 1) and the synthesis maps are
    channels-last only under torch.compile (``--compile``); eager CUDA keeps the grouped NCHW path, as measured."""
    from gantune.core import generator, modconv

    x, w = torch.zeros(4, 8, 32, 32), torch.zeros(4, 8, 8, 3, 3)
    monkeypatch.setitem(modconv.PER_IMAGE_CONV, "cpu", modconv.PER_IMAGE_CONV["cuda"])
    cuda = torch.device("cuda")
    assert not modconv.per_image_loop(x, w) and not generator._channels_last_default(cuda)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert modconv.per_image_loop(x, w) and generator._channels_last_default(cuda)
    assert not modconv.per_image_loop(x[:, :, :16, :16], w)  # small maps stay grouped
    assert not modconv.per_image_loop(x[:1], w[:1])
    assert generator._channels_last_default(torch.device("cpu"))


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
