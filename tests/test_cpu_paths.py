"""CPU paths chosen for speed give the reference results: the separable 2x upsampling of the RGB skip, the folded
path in bfloat16, the heads' output product, and Winograd stepping aside under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dataclasses import replace

from gantune.accel import AcceleratedOps, Conv2d, accelerate, settings_for
from gantune.accel import ops as accel_ops
from gantune.accel.upsample import upsample2x_binomial
from gantune.core.resample import make_kernel, upfirdn2d, upsample2x
from gantune.methods.hyper.hypernet import _pointwise
from support import TINY64, tiny_generator


def test_separable_upsampling_is_the_fir_upsampling():
    k = make_kernel()
    for shape in ((1, 3, 8, 8), (2, 3, 33, 20)):
        x = torch.randn(*shape, dtype=torch.float64)
        ref = upfirdn2d(x, k.double() * 4, up=2, pad=(2, 1))
        assert torch.allclose(upsample2x_binomial(x), ref, atol=1e-12, rtol=0)
        assert torch.allclose(upsample2x(x.float(), k), ref.float(), atol=1e-6, rtol=0)
        fast = AcceleratedOps(settings_for("cpu")).upsample2x(x.float(), k)
        assert torch.allclose(fast, ref.float(), atol=1e-6, rtol=0) and not torch.equal(fast, upsample2x(x.float(), k))
    x = torch.randn(2, 3, 16, 16)
    g = x.clone().requires_grad_()
    y = upsample2x_binomial(g)
    assert torch.equal(y.detach(), upsample2x_binomial(x))  # the same bits with and without autograd
    y.square().sum().backward()
    ref = x.clone().requires_grad_()
    upfirdn2d(ref, k * 4, up=2, pad=(2, 1)).square().sum().backward()
    assert torch.allclose(g.grad, ref.grad, atol=1e-5)


def test_folded_bf16_render_is_close_to_float32(monkeypatch):
    """The folded CPU path in bf16 (taken where the CPU has bf16 in hardware; forced here so that any CPU runs it):
    offsets, a clamp and the RGB skip sum, against the float32 render."""
    G = accelerate(tiny_generator(0, conv_clamp=2.0), replace(settings_for("cpu"), folded=True))
    ws = G.map(torch.randn(2, 32))
    deltas = {s.name: torch.randn(2, s.out_ch, s.in_ch) * 0.05 for s in G.specs if s.kind == "conv"}
    with torch.no_grad():
        ref = G.synthesis(ws, deltas=deltas)
        calls = []
        real = accel_ops.modulated_conv2d_folded
        monkeypatch.setattr(accel_ops, "modulated_conv2d_folded", lambda *a, **k: calls.append(1) or real(*a, **k))
        out = G.set_precision(torch.bfloat16).synthesis(ws, deltas=deltas)
    assert calls and out.dtype == torch.float32
    err = (out - ref).abs()
    assert err.max() <= 0.05 * ref.abs().max() and err.mean() <= 0.01 * ref.abs().mean() + 1e-3


def test_heads_output_product_equals_the_1x1_convolution():
    h, w, b = torch.randn(3, 64, 1, 1), torch.randn(40, 64, 1, 1), torch.randn(40)
    assert torch.allclose(_pointwise(h, w, b), F.conv2d(h, w, b), atol=1e-5)
    h2 = torch.randn(3, 64, 2, 2)
    assert torch.equal(_pointwise(h2, w, b), F.conv2d(h2, w, b))


def test_winograd_steps_aside_under_bf16_autocast():
    conv = Conv2d(128, 128, 3, padding=1).eval()
    x = torch.randn(1, 128, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        ref = F.conv2d(x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16(), padding=1)
    assert y.dtype == torch.bfloat16 and torch.equal(y, ref)  # oneDNN's direct bf16 convolution


def test_hyperstyle_in_bf16_holds_bf16_weights_and_stays_close(monkeypatch):
    """bf16 on a CPU with bf16 in hardware (forced here): the inverter's own hypernetwork and W-encoder hold bf16
    weights; the inversion stays close to float32 and its record keeps the shared weights it expanded with."""
    import copy

    from gantune.methods.hyper import method as hyper_method
    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.method import HyperStyle
    from gantune.methods.hyper.wencoder import WEncoder
    from gantune.io.render import record_deltas

    G = tiny_generator(3, **TINY64)
    hn = HyperNetwork.from_specs(G.specs, width=8, input_size=64).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    la = torch.zeros(G.num_ws, G.cfg.w_dim)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    ref = HyperStyle(G, copy.deepcopy(hn), copy.deepcopy(enc), la, iters=2)(x, ["a"])[0]
    monkeypatch.setattr(hyper_method, "native_bf16_cpu", lambda: True)
    hs = HyperStyle(G, hn, enc, la, iters=2, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in [*hs.hypernet.parameters(), *hs.w_encoder.parameters()])
    res = hs(x, ["a"])[0]
    assert (res.image - ref.image).abs().max() <= 0.1 * ref.image.abs().max()
    rec = res.to_record()
    # the record keeps the shared weights the inversion expanded its offsets with (bf16 values, stored in float32)
    assert rec.shared is not None and torch.equal(rec.shared.w1, hs.hypernet.shared_fc.w1.float().cpu())
    assert set(record_deltas(rec, G.specs)) == set(hn.names)


def test_refine_leaves_the_callers_modules_alone_unless_handed_over():
    """refine changes nothing in the networks it is given (no re-laid weights, no attributes); with
    ``own_modules=True`` (the HyperStyle inverter) it re-lays them once (other oneDNN kernels: float rounding)."""
    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.inference import refine
    from gantune.methods.hyper.wencoder import WEncoder

    G = tiny_generator(5, **TINY64)
    hn = HyperNetwork.from_specs(G.specs, width=8, input_size=64).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    before = {k: (v.data_ptr(), v.stride()) for k, v in hn.state_dict().items()}
    attrs = set(vars(hn))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    kw = dict(G=G, hypernet=hn, w_encoder=enc, latent_avg=torch.zeros(G.num_ws, G.cfg.w_dim), iters=2)
    a = refine(x, **kw)
    assert {k: (v.data_ptr(), v.stride()) for k, v in hn.state_dict().items()} == before and set(vars(hn)) == attrs
    b = refine(x, **kw, own_modules=True)
    assert {k: (v.data_ptr(), v.stride()) for k, v in hn.state_dict().items()} != before
    assert torch.allclose(a.images, b.images, atol=1e-5, rtol=0)


def test_dtype_auto_and_the_note_for_bf16_without_hardware(monkeypatch):
    import logging

    from gantune import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: True)
    assert runtime.resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: False)
    monkeypatch.setattr(runtime, "_noted", set())
    assert runtime.resolve_dtype("auto", cpu) == torch.float32
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("gantune")
    log.addHandler(handler)
    try:
        assert runtime.resolve_dtype("bfloat16", cpu) == torch.bfloat16
        assert runtime.resolve_dtype("bfloat16", cpu) == torch.bfloat16
        assert runtime.resolve_dtype("float32", cpu) == torch.float32
    finally:
        log.removeHandler(handler)
    notes = [r.getMessage() for r in records if "10x slower" in r.getMessage()]
    assert len(notes) == 1 and "bfloat16" in notes[0]  # said once


def test_on_cpu_a_batch_renders_each_image_as_alone(monkeypatch):
    """On CPU the generator renders a batch one image a pass (gantune.accel Settings.images_per_pass): each image
    gets the bits it gets alone (per-image and shared offsets, from a cached prefix too), and the whole-batch pass's
    images to float rounding; so does HyperStyle's refinement."""
    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.inference import refine, render, untuned_prefix
    from gantune.methods.hyper.wencoder import WEncoder

    G = accelerate(tiny_generator(5, **TINY64))
    g = torch.Generator().manual_seed(2)
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=g))
    tuned = [s for s in G.specs if s.kind == "conv" and s.res >= 16]
    deltas = {s.name: 0.1 * torch.randn(3 if i % 2 else 1, s.out_ch, s.in_ch, generator=g) for i, s in enumerate(tuned)}
    prefix = untuned_prefix(G, ws, {s.name for s in tuned}, "const")
    calls = []
    real = G.synthesis._run
    monkeypatch.setattr(G.synthesis, "_run", lambda latents, *a, **k: calls.append(latents[0].shape[0]) or real(
        latents, *a, **k))
    with torch.no_grad():
        batch = render(G, ws, deltas)
        assert calls == [1, 1, 1]
        alone = [render(G, ws[i:i + 1], {k: v[i:i + 1] if v.shape[0] > 1 else v for k, v in deltas.items()})
                 for i in range(3)]
        cached = render(G, ws, deltas, prefix=prefix)
        monkeypatch.undo()
        whole = accelerate(tiny_generator(5, **TINY64), replace(settings_for("cpu"), images_per_pass=0)).synthesis(
            ws, deltas=deltas)
    assert all(torch.equal(batch[i:i + 1], a) for i, a in enumerate(alone)) and torch.equal(cached, batch)
    assert torch.allclose(batch, whole, atol=1e-5, rtol=0)
    hn = HyperNetwork.from_specs(G.specs, width=8, input_size=64).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    kw = dict(G=G, hypernet=hn, w_encoder=enc, latent_avg=torch.zeros(G.num_ws, G.cfg.w_dim), iters=2)
    per_image = refine(x, **kw).images
    accelerate(G, replace(settings_for("cpu"), images_per_pass=0))
    assert torch.allclose(refine(x, **kw).images, per_image, atol=1e-4, rtol=0)


def test_a_split_batch_keeps_shared_offsets_whole_and_refuses_a_wrong_batch():
    """Offsets without a batch axis ((out, in) or (out, in, k, k)) are one set for the whole batch, also when the
    batch is rendered one image a pass; offsets whose batch is neither 1 nor the batch's are refused."""
    G = accelerate(tiny_generator(5, **TINY64))
    g = torch.Generator().manual_seed(3)
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=g))
    s = next(s for s in G.specs if s.kind == "conv" and s.res == 32)
    for shared in (0.2 * torch.randn(s.out_ch, s.in_ch, generator=g),
                   0.2 * torch.randn(s.out_ch, s.in_ch, 3, 3, generator=g)):
        with torch.no_grad():
            batch = G.synthesis(ws, deltas={s.name: shared})
            alone = [G.synthesis(ws[i:i + 1], deltas={s.name: shared}) for i in range(3)]
            plain = G.synthesis(ws)
        assert all(torch.equal(batch[i:i + 1], a) for i, a in enumerate(alone))
        assert not torch.allclose(batch, plain)
    with torch.no_grad(), pytest.raises(ValueError, match="batch of 1 or 3"):
        G.synthesis(ws, deltas={s.name: torch.zeros(2, s.out_ch, s.in_ch)})


def test_a_batch_in_passes_computes_weight_only_values_once(monkeypatch):
    """One image a pass, a batch still transforms each Winograd layer's weight (and sums its squares) once, not once
    per image; the values are dropped when the batch is done."""
    import gantune.accel.folded as folded

    G = accelerate(tiny_generator(0, perturb=True, resolution=64, channel_base=2048),
                   replace(settings_for("cpu"), winograd_tiles=(), winograd_min_channels=16))
    ws = G.map(torch.randn(3, G.cfg.z_dim, generator=torch.Generator().manual_seed(1)))
    counts = {"transform": 0, "squares": 0}
    real_t, real_s = folded.winograd.transform_weight, folded._tap_square_sum
    monkeypatch.setattr(folded.winograd, "transform_weight",
                        lambda *a: counts.__setitem__("transform", counts["transform"] + 1) or real_t(*a))
    monkeypatch.setattr(folded, "_tap_square_sum",
                        lambda t: counts.__setitem__("squares", counts["squares"] + 1) or real_s(t))
    with torch.no_grad():
        G.synthesis(ws[:1])
        one = dict(counts)
        counts.update(transform=0, squares=0)
        G.synthesis(ws)
    assert one["transform"] > 0 and counts == one
    assert G.synthesis.ops.kept is None
