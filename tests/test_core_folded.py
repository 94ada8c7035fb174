"""The CPU folded path (one oneDNN convolution per image with the whole modulation in its weight) against the
rank-1 and grouped paths, with and without gradients, image by image."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from gantune.core import Generator, make_kernel, modulated_conv2d
from gantune.accel import settings_for, winograd
from gantune.accel.folded import modulated_conv2d_folded as _folded, transposed_conv_phases
from support import _generator

CPU = replace(settings_for("cpu"), winograd_tiles=(), upconv_forms=())  # the rules, whatever was measured here


def modulated_conv2d_folded(*args, **kw):
    """The folded path with this CPU's settings (Winograd where it pays)."""
    return _folded(*args, settings=CPU, **kw)


def _deltas(G: Generator, batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = {}
    for name in ("b16.conv1", "b32.conv0", "b64.conv1", "b64.torgb"):
        s = G.synthesis.spec(name)
        out[name] = 0.2 * torch.randn(batch, s.out_ch, s.in_ch, generator=g)
    s = G.synthesis.spec("b64.conv0")
    out["b64.conv0"] = 0.2 * torch.randn(batch, s.out_ch, s.in_ch, 3, 3, generator=g)  # per-tap (shared heads)
    return out


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_folded_generator_matches_grouped_path(channels_last, batch):
    G = _generator()
    G.set_precision(torch.float32, channels_last=channels_last)
    ws = G.map(torch.randn(batch, 32, generator=torch.Generator().manual_seed(1))).detach()
    ws = ws + 0.3 * torch.randn_like(ws)  # distinct rows of W+
    d = _deltas(G, batch)
    with torch.no_grad():
        for deltas in (None, d):
            got = G.synthesis(ws, deltas=deltas)
            want = G.synthesis(ws, deltas=deltas, fused=True)
            assert got.abs().max() > 0.5
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        if batch > 1:  # a batch is its images, each with its own offsets (styles may round differently in a batch)
            one = torch.cat([G.synthesis(ws[i : i + 1], deltas={k: v[i : i + 1] for k, v in d.items()})
                             for i in range(batch)])
            torch.testing.assert_close(G.synthesis(ws, deltas=d), one, atol=1e-5, rtol=1e-5)


def test_folded_random_noise_and_overparam():
    G = _generator()
    ws = G.map(torch.randn(2, 32, generator=torch.Generator().manual_seed(2))).detach()
    with torch.no_grad():
        torch.manual_seed(5)
        a = G.synthesis(ws, noise_mode="random")
        torch.manual_seed(5)
        b = G.synthesis(ws, noise_mode="random", fused=False)
        c = G.synthesis(ws, noise_mode="none")
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    assert (a - c).abs().max() > 1e-2
    Go = _generator(overparam=True)
    W = Go.map(Go.sample_z(2, generator=torch.Generator().manual_seed(4))).detach()
    with torch.no_grad():
        torch.testing.assert_close(Go.synthesis(wmat=W), Go.synthesis(wmat=W, fused=True), atol=2e-5, rtol=1e-4)


def test_same_bits_with_and_without_gradients():
    """Batch 1 under autograd (PTI) runs the folded path: the same bits as inference in the same layout. A batch under
    autograd (training) runs one batched convolution per layer instead: the same values to float tolerance."""
    G = _generator()
    G.set_precision(torch.float32, channels_last=True)  # the default switches to NCHW when the weights train
    ws = G.map(torch.randn(2, 32, generator=torch.Generator().manual_seed(6)))  # requires grad through the mapping
    d = _deltas(G, 2)
    with torch.no_grad():
        plain = G.synthesis(ws, deltas=d)
        one = G.synthesis(ws[:1], deltas={k: v[:1] for k, v in d.items()})
    img = G.synthesis(ws[:1], deltas={k: v[:1] for k, v in d.items()})
    assert img.requires_grad and torch.equal(img.detach(), one)
    img = G.synthesis(ws, deltas=d)
    assert img.requires_grad
    torch.testing.assert_close(img.detach(), plain, atol=5e-5, rtol=1e-4)
    G.set_precision(torch.float32)  # default layout: NCHW under autograd with trainable weights, same values
    torch.testing.assert_close(G.synthesis(ws, deltas=d).detach(), plain, atol=5e-5, rtol=1e-4)
    # and the gradient is the grouped path's
    w_a = ws.detach().clone().requires_grad_(True)
    w_b = ws.detach().clone().requires_grad_(True)
    G.synthesis(w_a, deltas=d).square().mean().backward()
    G.synthesis(w_b, deltas=d, fused=True).square().mean().backward()
    assert w_a.grad.abs().max() > 0
    torch.testing.assert_close(w_a.grad, w_b.grad, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("up,k,size", [(1, 3, 6), (1, 3, 48), (1, 1, 48), (2, 3, 6), (2, 3, 40)])
def test_folded_conv_unit(up, k, size):
    torch.manual_seed(0)
    B, cin, cout = 2, 16, 12
    x = torch.randn(B, cin, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, cin, k, k)
    s = torch.randn(B, cin)
    delta = 0.3 * torch.randn(B, cout, cin)
    bias = torch.randn(cout)
    noise = torch.randn(1, 1, size * up, size * up)
    skip = torch.randn(B, cout, size * up, size * up)
    kern = make_kernel()
    ref = modulated_conv2d(x, w, s, delta=delta, up=up, kernel=kern, fused=True, out_scale=1.5, bias=bias)
    want = F.leaky_relu(skip + noise + ref, 0.2)
    got = modulated_conv2d_folded(x, w, s, delta=delta, up=up, kernel=kern, out_scale=1.5, bias=bias, noise=noise,
                                  leaky_relu=True, add_to=skip.clone())
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        modulated_conv2d_folded(x, w, s[:, :3])


@pytest.mark.parametrize("channels_last", [True, False])
def test_transposed_conv_as_four_phases(channels_last):
    """The per-phase form of the stride-2 transposed convolution equals ATen's, on a non-square map, and keeps
    gradients (the projector and PTI differentiate through it)."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 5, 3, 3)  # (out, in, k, k)
    x.requires_grad_(True)
    got = transposed_conv_phases(x, w)
    want = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
    assert got.shape == (2, 4, 15, 19)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g1, = torch.autograd.grad(got.square().sum(), x)
    g2, = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-5)
    # a kernel that is not symmetric: a phase taking the taps unflipped would fail
    assert (w.flip(2, 3) - w).abs().max() > 0.1


def test_frozen_generator_gradients_take_the_rank1_form():
    """With the generator frozen and one latent per image (the W / W+ projector), autograd runs the rank-1 form
    (no weight gradient to compute): same image as the inference path, same latent gradient as the grouped path,
    and a gradient for a style offset shared by the batch too."""
    G = _generator().requires_grad_(False)
    ws = G.map(torch.randn(2, 32, generator=torch.Generator().manual_seed(7))).detach()
    ws = ws + 0.2 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(8))  # distinct W+ rows
    with torch.no_grad():
        plain = G.synthesis(ws)
    w_a = ws.clone().requires_grad_(True)
    w_b = ws.clone().requires_grad_(True)
    img = G.synthesis(w_a)
    torch.testing.assert_close(img.detach(), plain, atol=5e-5, rtol=1e-4)
    # no convolution in the graph differentiates its weight (the folded form would, for every layer)
    convs, seen, todo = [], set(), [img.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__.startswith("ConvolutionBackward"):
            convs.append(fn)
        todo += [nxt for nxt, _ in fn.next_functions]
    assert len(convs) >= len(G.specs)
    assert all(c.next_functions[1][0] is None for c in convs)
    img.square().mean().backward()
    G.synthesis(w_b, fused=True).square().mean().backward()
    assert w_a.grad.abs().max() > 0
    torch.testing.assert_close(w_a.grad, w_b.grad, atol=1e-6, rtol=1e-3)
    assert all(p.grad is None for p in G.parameters())


def test_training_batches_run_one_convolution_per_layer_not_per_image():
    """Under autograd a batch is one batched convolution per layer (the per-image folded path cost 2x a training
    step: each image's slice adds a zero-filled gradient in the backward pass); the call count must not grow with B."""
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    G = _generator()
    calls = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (F.conv2d, F.conv_transpose2d):
                calls.append(args[0].shape[0])
            return func(*args, **(kwargs or {}))

    counts = {}
    for b in (2, 6):
        calls.clear()
        z = torch.randn(b, 32, generator=torch.Generator().manual_seed(b))
        with Count():
            G(z, noise_mode="random").square().mean().backward()
        counts[b] = len(calls)
        assert max(calls) == b  # the whole batch in one call
    assert counts[2] == counts[6]


@pytest.mark.parametrize("per_tap", [False, True])
def test_winograd_weight_transformed_once_per_batch(monkeypatch, per_tap):
    """A batch's Winograd layer transforms θ once and scales it per image (styles, per-channel offsets,
    demodulation); per-tap offsets make each image's weight its own. Either way each image gets the bits it gets
    alone."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 128, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(128, 128, 3, 3, generator=g)
    styles = torch.randn(3, 128, generator=g)
    delta = 0.1 * torch.randn(*((3, 128, 128, 3, 3) if per_tap else (3, 128, 128)), generator=g)
    assert winograd.tile_size(x[:1], 128, 3, CPU, per_call_weight=True)  # the layer runs as Winograd
    calls = []
    real = winograd.transform_weight
    monkeypatch.setattr(winograd, "transform_weight", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        y = modulated_conv2d_folded(x, w, styles, delta=delta)
        assert len(calls) == (3 if per_tap else 1)
        for b in range(3):
            yb = modulated_conv2d_folded(x[b:b + 1], w, styles[b:b + 1], delta=delta[b:b + 1])
            assert torch.equal(y[b:b + 1], yb)


def test_upsampling_layer_bias_gradient_is_summed_apart_from_the_blur(monkeypatch):
    """With gradients, the blur's depthwise convolution gets the bias detached (its own bias gradient is slow on
    CPU) and the bias's gradient comes from a sum over the map: the same values forward, the same gradients."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 8, 8, generator=g).requires_grad_(True)
    wt = torch.randn(8, 16, 3, 3, generator=g).requires_grad_(True)
    bias = torch.randn(8, generator=g).requires_grad_(True)
    styles = torch.rand(1, 16, generator=g) + 0.5
    kw = dict(up=2, kernel=make_kernel(), noise=torch.randn(1, 1, 16, 16, generator=g), leaky_relu=True,
              out_scale=2**0.5)
    depthwise_bias = []
    real = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: (
        depthwise_bias.append(a[2]) if k.get("groups", 1) > 1 else None) or real(*a, **k))
    y = modulated_conv2d_folded(x, wt, styles, bias=bias, **kw)
    assert depthwise_bias and not any(b is not None and b.requires_grad for b in depthwise_bias)
    gy = torch.randn(y.shape, generator=g)
    (y * gy).sum().backward()
    with torch.no_grad():
        assert torch.equal(y.detach(), modulated_conv2d_folded(x, wt, styles, bias=bias, **kw))
    monkeypatch.setattr(F, "conv2d", real)
    xr, wr, br = (t.detach().double().requires_grad_(True) for t in (x, wt, bias))
    ref = modulated_conv2d(xr, wr, styles.double(), up=2, kernel=make_kernel().double(), out_scale=2**0.5,
                           bias=br)
    ref = F.leaky_relu(ref + kw["noise"].double(), 0.2)
    (ref * gy.double()).sum().backward()
    assert (y.detach().double() - ref.detach()).abs().max() <= 1e-5 * ref.abs().max()
    for got, want in ((bias.grad, br.grad), (wt.grad, wr.grad), (x.grad, xr.grad)):
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_torgb_on_nchw_maps_is_one_matrix_product_with_the_same_bits_both_ways(monkeypatch):
    """A 1×1 layer (toRGB, no demodulation) on an NCHW float32 map runs as a matrix product, not oneDNN's 1×1
    convolution: the same bits with and without gradients, the reference's values and gradients to float rounding."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 32, 16, 16, generator=g).requires_grad_(True)
    wt = torch.randn(3, 32, 1, 1, generator=g).requires_grad_(True)
    bias = torch.randn(3, generator=g).requires_grad_(True)
    styles = torch.rand(1, 32, generator=g) + 0.5
    skip = torch.randn(1, 3, 16, 16, generator=g)
    convs, real = [], F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *a, **k: convs.append(1) or real(*a, **k))
    y = modulated_conv2d_folded(x, wt, styles, bias=bias, demodulate=False, add_to=skip.clone())
    with torch.no_grad():
        y0 = modulated_conv2d_folded(x, wt, styles, bias=bias, demodulate=False, add_to=skip.clone())
    assert not convs and torch.equal(y.detach(), y0)
    gy = torch.randn(y.shape, generator=g)
    (y * gy).sum().backward()
    monkeypatch.setattr(F, "conv2d", real)
    xr, wr, br = (t.detach().double().requires_grad_(True) for t in (x, wt, bias))
    ref = skip.double() + modulated_conv2d(xr, wr, styles.double(), demodulate=False, bias=br)
    (ref * gy.double()).sum().backward()
    assert (y.detach().double() - ref.detach()).abs().max() <= 1e-5 * ref.abs().max()
    for got, want in ((bias.grad, br.grad), (wt.grad, wr.grad), (x.grad, xr.grad)):
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()
