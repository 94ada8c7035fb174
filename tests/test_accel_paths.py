"""gantune.accel: every accelerated path gives the reference core's images (per path, pinned by Settings), and the
choices of settings_for."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import tiny_config
from support import reference_modconv, tiny_generator
from gantune.accel import AcceleratedOps, Settings, accelerate, settings_for
from gantune.accel import ops as accel_ops
from gantune.accel import winograd
from gantune.accel.upsample import use_phases
from gantune.core import Generator, make_kernel, modulated_conv2d
from gantune.core.ops import Ops

# the rules, whatever was measured here, with whole batches per pass (the batch paths under test)
CPU = replace(settings_for("cpu"), winograd_tiles=(), upconv_forms=(), images_per_pass=0)
PHASES = replace(CPU, upsample="phases")


def _inputs(G, batch=2, seed=4):
    g = torch.Generator().manual_seed(seed)
    ws = G.map(torch.randn(batch, G.cfg.z_dim, generator=g))
    deltas = {s.name: 0.2 * torch.randn(batch, s.out_ch, s.in_ch, generator=g) for s in G.specs if s.kind == "conv"}
    return ws, deltas


SPIED = {"folded": (accel_ops, "modulated_conv2d_folded"), "winograd-into": (winograd, "conv3x3_into"),
         "winograd": (winograd, "conv3x3"), "phases": (accel_ops, "upconv_phases"),
         "loop": (accel_ops, "conv_per_image"), "noise-foreach": (accel_ops, "add_noise_foreach_"),
         "separable": (accel_ops, "upsample2x_binomial")}


@pytest.mark.parametrize("settings,taken", [
    (Settings(), set()),
    (replace(CPU, winograd=False), {"folded", "separable"}),
    # the 64 px generator's 32-channel layers on 64² maps by Winograd
    (replace(CPU, winograd_min_channels=16), {"folded", "winograd-into", "separable"}),
    (replace(CPU, folded=False, winograd_min_channels=16), {"winograd", "separable"}),  # the frozen rank-1 path
    (replace(CPU, folded=False, upsample="phases", per_image_conv="loop"), {"phases", "loop", "separable"}),
    (replace(CPU, folded=False, layout="nchw", noise_foreach=True), {"noise-foreach", "separable"}),
    (replace(CPU, separable_upsample=False), {"folded"}),
], ids=["reference", "folded", "folded+winograd", "rank1+winograd", "phases+loop", "noise-foreach", "upfirdn-skip"])
def test_every_path_gives_the_reference_images(monkeypatch, settings, taken):
    """Renders with per-image offsets, a shared W, and the overparameterized matrix: each set of paths within float
    rounding of the reference core (a generator never given to accelerate), and each path really taken (a 64 px
    generator with 32 channels: its large maps are the folded path's Winograd ones)."""
    config = dict(resolution=64, channel_base=2048)
    reference = tiny_generator(0, perturb=True, **config)
    assert type(reference.synthesis.ops) is Ops
    fast = accelerate(tiny_generator(0, perturb=True, **config), settings)
    calls: set[str] = set()
    for name, (module, attr) in SPIED.items():
        real = getattr(module, attr)
        monkeypatch.setattr(module, attr, lambda *a, _n=name, _f=real, **k: calls.add(_n) or _f(*a, **k))
    ws, deltas = _inputs(fast)
    wmat = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for kw in ({"ws": ws}, {"ws": ws, "deltas": deltas}, {"wmat": wmat}):
            ref = reference.synthesis(**kw)
            got = fast.synthesis(**kw)
            assert (got - ref).abs().max() <= 2e-5 * ref.abs().max(), kw.keys()
    assert calls == taken


def test_loaded_generators_compute_with_the_measured_paths(tiny_G):
    """Generators built from a state dict (every importer) get the accelerated operations; a core Generator keeps
    the reference."""
    from gantune.weights.keymap import generator_from_state

    G = generator_from_state(tiny_G.cfg, tiny_G.state_dict())
    assert isinstance(G.synthesis.ops, AcceleratedOps) and G.synthesis.ops.settings is None
    assert type(Generator(tiny_config()).synthesis.ops) is Ops
    pinned = accelerate(G, Settings())
    assert pinned.synthesis.ops.settings == Settings()


def test_settings_refuse_unknown_modes():
    with pytest.raises(ValueError, match="per_image_conv"):
        Settings(per_image_conv="fast")


@pytest.fixture
def phases_spy(monkeypatch):
    """Counts the calls of the phase convolution (one per upsampling layer that takes it)."""
    calls = []
    real = accel_ops.upconv_phases

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(accel_ops, "upconv_phases", spy)
    return calls


@pytest.mark.parametrize("fused", [True, False])
def test_phase_upsampling_equals_transposed_conv_and_blur(phases_spy, fused):
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
        n = len(phases_spy)
        out = modulated_conv2d(x, w, s, delta=delta, up=2, kernel=kern, fused=fused, bias=bias,
                               ops=AcceleratedOps(PHASES))
        assert len(phases_spy) == n + 1
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_phase_upsampling_generator_matches_and_skips_small_maps(tiny_G, phases_spy):
    """A whole render with per-image offsets in bf16 (the in-place, non-folded path) and fp32 (grouped): the same
    image with phases as with the transposed conv; per-image weights switch to phases only on maps ≥ 9·in pixels."""
    G = tiny_G
    ws, deltas = _inputs(G)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.08)):
        G.set_precision(dtype)
        with torch.no_grad():
            accelerate(G, PHASES)
            a = G.synthesis(ws, deltas=deltas, noise_mode="const", fused=True).float()
            b_plain = G.synthesis(ws, noise_mode="const", fused=False).float()
            accelerate(G, CPU)
            ref = G.synthesis(ws, deltas=deltas, noise_mode="const", fused=True).float()
            ref_plain = G.synthesis(ws, noise_mode="const", fused=False).float()
        assert (a - ref).abs().max() <= tol * ref.abs().max()
        assert (b_plain - ref_plain).abs().max() <= tol * ref_plain.abs().max()
    G.set_precision(torch.float32)
    ups = [s for s in G.specs if s.up == 2]
    # rank-1 calls: every upsampling layer; grouped: only those whose input map has ≥ 9·in pixels
    grouped_ok = [s for s in ups if (s.res // 2) ** 2 >= 9 * s.in_ch]
    assert grouped_ok and len(grouped_ok) < len(ups)
    assert len(phases_spy) == 2 * (len(grouped_ok) + len(ups))  # two dtypes


@pytest.mark.parametrize("channels_last", [False, True])
def test_noise_added_per_image_equals_broadcast_add(tiny_G, monkeypatch, channels_last):
    """The multi-tensor noise add (CUDA's eager path, run here on the CPU) gives the broadcast add's render, bit for
    bit, on NCHW maps and on channels-last ones (``--channels-last``: each image's (H, W, C) block gets the map
    repeated over the channels)."""
    # bf16 on the generic layers with their in-place ops, as on CUDA (not the folded CPU path)
    plain = replace(CPU, folded=False)
    G = accelerate(tiny_G, plain).set_precision(torch.bfloat16, channels_last=channels_last)
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=torch.Generator().manual_seed(6)))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const")
        accelerate(G, replace(plain, noise_foreach=True))
        calls = []
        real = torch._foreach_add_
        monkeypatch.setattr(torch, "_foreach_add_", lambda *a: calls.append(1) or real(*a))
        out = G.synthesis(ws, noise_mode="const")
    assert len(calls) == sum(s.kind == "conv" for s in G.specs)
    assert torch.equal(out, ref)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.randn(2, 5, 4, 6).contiguous(memory_format=layout)
    n = torch.randn(1, 1, 4, 6)
    assert torch.equal(accel_ops.add_noise_foreach_(y.clone(), n), y + n)


def test_auto_upsampling_rule(monkeypatch):
    """The "auto" upsampling rule keeps float32 and small batches on the transposed convolution."""
    x = torch.zeros(8, 16, 32, 32, dtype=torch.bfloat16)
    auto = Settings(upsample="auto")
    k = make_kernel()
    assert use_phases(x, 16, 3, k, True, auto)
    assert use_phases(x[:4], 16, 3, k, True, auto)
    assert not use_phases(x[:2], 16, 3, k, True, auto)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert use_phases(x.float(), 16, 3, k, True, auto)
    assert not use_phases(x[:4].float(), 16, 3, k, True, auto)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # strict float32: cuDNN's phase conv was slower
    assert not use_phases(x.float(), 16, 3, k, True, auto)
    assert not use_phases(x, 128, 3, k, True, auto)  # 32·32 < 9·128
    assert use_phases(x, 128, 3, k, False, auto)
    assert not use_phases(x, 16, 3, k, True, Settings())


@pytest.mark.parametrize("phases", [False, True])
def test_per_image_loop_equals_grouped_convolution(tiny_G, monkeypatch, phases):
    """Per-image weights convolved one image at a time on channels-last maps (CUDA's path for maps ≥ 32², run here
    on the CPU) give the grouped convolution's render: HyperStyle offsets on every layer, both upsampling forms."""
    base = replace(CPU, upsample="phases" if phases else "transposed")
    G = accelerate(tiny_G, base).set_precision(torch.bfloat16, channels_last=False)
    g = torch.Generator().manual_seed(9)
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=g))
    deltas = {s.name: 0.1 * torch.randn(3, s.out_ch, s.in_ch, generator=g) for s in G.specs}
    calls = []
    real = accel_ops.conv_per_image
    monkeypatch.setattr(accel_ops, "conv_per_image", lambda *a: calls.append(a[0].shape) or real(*a))
    with torch.no_grad():
        ref = G.synthesis(ws, deltas=deltas, fused=True).float()
        assert not calls
        out = accelerate(G, replace(base, per_image_conv="loop")).synthesis(ws, deltas=deltas, fused=True).float()
        calls.clear()
        accelerate(G, replace(base, per_image_conv="auto", per_image_loop_min_hw=16 * 16))
        auto = G.synthesis(ws, deltas=deltas, fused=True).float()
    assert torch.allclose(out, ref, atol=0.02), (out - ref).abs().max()  # bf16: a different summation order
    assert (out - ref).abs().mean() < 2e-3
    assert calls and all(s[2] * s[3] >= 16 * 16 for s in calls)
    assert len(calls) < sum(s.kind == "conv" for s in G.specs)  # the small maps stay grouped
    assert torch.allclose(auto, ref, atol=0.02)


def test_cuda_paths_switch_only_under_the_compiler(monkeypatch):
    """CUDA's defaults: per-image weights loop over images (maps ≥ 32², batch > 1) and the synthesis maps are
    channels-last only under torch.compile (``--compile``); eager CUDA keeps the grouped NCHW path, as measured.
    The CPU's: channels-last always; the reference: never."""
    x, w = torch.zeros(4, 8, 32, 32), torch.zeros(4, 8, 8, 3, 3)
    cuda_settings = settings_for("cuda")
    cuda, ops = torch.device("cuda"), AcceleratedOps()
    assert not accel_ops.per_image_loop(x, w, cuda_settings) and not ops.channels_last(cuda)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert accel_ops.per_image_loop(x, w, cuda_settings) and ops.channels_last(cuda)
    assert not accel_ops.per_image_loop(x[:, :, :16, :16], w, cuda_settings)  # small maps stay grouped
    assert not accel_ops.per_image_loop(x[:1], w[:1], cuda_settings)
    assert ops.channels_last(torch.device("cpu"))
    assert not Generator(tiny_config()).synthesis.ops.channels_last(torch.device("cpu"))
