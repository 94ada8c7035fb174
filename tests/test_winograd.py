"""Winograd F(2×2, 3×3) convolutions (gantune.accel.winograd): the same results as direct convolutions to float
rounding, used only where they apply, and the same images through the modulated convolution."""

import pytest
import torch
import torch.nn.functional as F

from dataclasses import replace

from gantune.accel import settings_for, winograd
from gantune.accel.folded import modulated_conv2d_folded
from gantune.core.resample import make_kernel

CL = torch.channels_last
CPU = replace(settings_for("cpu"), winograd_tiles=(), upconv_forms=())  # the rules, whatever was measured here


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("batch,cin,cout,h,w,bias", [(1, 8, 8, 8, 8, False), (2, 5, 12, 4, 12, True),
                                                    (3, 16, 4, 12, 4, True)])
def test_conv3x3_matches_direct_convolution(m, batch, cin, cout, h, w, bias):
    g = torch.Generator().manual_seed(cin * 100 + h)
    x = torch.randn(batch, cin, h, w, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(cout, cin, 3, 3, generator=g)
    b = torch.randn(cout, generator=g) if bias else None
    ref = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), padding=1)
    u = winograd.transform_weight(wt, m)
    assert u.shape == ((m + 2) ** 2, cout, cin)
    y = winograd.conv3x3(x, u, b)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=CL)
    assert _rel_err(y, ref) < (2e-6 if m == 2 else 3e-5)
    # into a map that already holds something: added
    base = torch.randn(ref.shape, generator=g).contiguous(memory_format=CL)
    out = base.clone()
    winograd.conv3x3_into(out, x, u, b)
    assert _rel_err(out - base, ref) < (2e-6 if m == 2 else 3e-5)


def test_scaled_transform_is_the_transform_of_the_scaled_weight():
    g = torch.Generator().manual_seed(1)
    wt, s = torch.randn(6, 7, 3, 3, generator=g), torch.rand(6, 7, generator=g) + 0.5
    for m in (2, 4):
        direct = winograd.transform_weight(wt * s[:, :, None, None], m)
        torch.testing.assert_close(winograd.scale_weight(winograd.transform_weight(wt, m), s), direct,
                                   rtol=1e-6, atol=1e-6)


def test_tile_size_only_where_it_pays():
    x = torch.randn(1, 256, 32, 32).contiguous(memory_format=CL)
    assert winograd.tile_size(x, 256, 3, CPU) == 4
    assert winograd.tile_size(torch.randn(1, 512, 32, 32).contiguous(memory_format=CL), 512, 3, CPU) == 4
    # a 512-wide weight transformed per call: F(2×2) below 64² (F(4×4)'s 36 planes cost more than they save)
    assert winograd.tile_size(torch.randn(1, 512, 32, 32).contiguous(memory_format=CL), 512, 3, CPU,
                              per_call_weight=True) == 2
    assert winograd.tile_size(torch.randn(1, 512, 64, 64).contiguous(memory_format=CL), 512, 3, CPU,
                              per_call_weight=True) == 4
    assert winograd.tile_size(x[:, :, :30, :30].contiguous(memory_format=CL), 256, 3, CPU) == 2  # sides not /4
    assert winograd.tile_size(x.contiguous(), 256, 3, CPU) == 4  # NCHW too (transposed in and out)
    assert not winograd.tile_size(x, 256, 1, CPU)  # 1×1
    assert not winograd.tile_size(x[:, :, :31, :31].contiguous(memory_format=CL), 256, 3, CPU)  # odd sides
    assert not winograd.tile_size(x[:, :64].contiguous(memory_format=CL), 64, 3, CPU)  # narrow
    big = torch.randn(1, 128, 256, 256).contiguous(memory_format=CL)
    assert not winograd.tile_size(big, 128, 3, CPU)  # large map
    assert not winograd.tile_size(x, 256, 3, replace(CPU, winograd=False))  # turned off
    assert not winograd.tile_size(x.double(), 256, 3, CPU)


def test_conv2d_module_uses_winograd_without_gradients_only(monkeypatch):
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    conv = winograd.Conv2d(128, 64, 3, 1, 1)
    x = torch.randn(2, 128, 16, 16).contiguous(memory_format=CL)
    ref = F.conv2d(x.double(), conv.weight.detach().double(), conv.bias.detach().double(), padding=1)
    with torch.no_grad():
        y = conv(x)
    assert calls and _rel_err(y, ref) < 3e-5  # F(4×4): ~1e-5 (module docstring)
    calls.clear()
    y = conv(x)  # the weight trains: the direct convolution, bit for bit nn.Conv2d
    assert not calls and y.requires_grad and torch.equal(y, F.conv2d(x, conv.weight, conv.bias, padding=1))
    with torch.no_grad():
        strided = winograd.Conv2d(128, 64, 3, 2, 1)
        strided(x)
    assert not calls  # stride 2: direct
    assert set(dict(conv.named_parameters())) == {"weight", "bias"}  # nn.Conv2d's keys


@pytest.mark.parametrize("offsets", ["none", "channel", "tap"])
@pytest.mark.parametrize("c,side", [(128, 16), (288, 18)])  # F(4×4); F(2×2) (a wide per-call weight, side not /4)
def test_modulated_conv_with_winograd_matches_direct(monkeypatch, offsets, c, side):
    """A layer Winograd applies to against the same layer with the path off: styles, per-channel or per-tap
    offsets, demodulation, bias, noise and activation — the same image to float rounding."""
    g = torch.Generator().manual_seed(3)
    b = 2
    assert winograd.tile_size(torch.empty(1, c, side, side).contiguous(memory_format=CL), c, 3, CPU,
                              per_call_weight=True) == (4 if side % 4 == 0 else 2)
    x = torch.randn(b, c, side, side, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(c, c, 3, 3, generator=g)
    styles = torch.rand(b, c, generator=g) + 0.5
    delta = {"none": None, "channel": 0.1 * torch.randn(b, c, c, generator=g),
             "tap": 0.1 * torch.randn(b, c, c, 3, 3, generator=g)}[offsets]
    kw = dict(delta=delta, bias=torch.randn(c, generator=g), noise=torch.randn(1, 1, side, side, generator=g),
              leaky_relu=True, out_scale=2**0.5, kernel=make_kernel())
    with torch.no_grad():
        y = modulated_conv2d_folded(x, wt, styles, **kw, settings=CPU)
        ref = modulated_conv2d_folded(x, wt, styles, **kw, settings=replace(CPU, winograd=False))
    assert not torch.equal(y, ref)  # a different algorithm ran
    assert _rel_err(y, ref) < 3e-5


def test_gradients_match_the_direct_convolution_and_layout_is_kept():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 8, 8, generator=g, dtype=torch.float32)  # NCHW, as passes with gradients run on CPU
    wt = torch.randn(5, 6, 3, 3, generator=g)
    b = torch.randn(5, generator=g)
    gy = torch.randn(2, 5, 8, 8, generator=g)
    for m in (2, 4):
        xa, wa = x.clone().requires_grad_(True), wt.clone().requires_grad_(True)
        y = winograd.conv3x3(xa, winograd.transform_weight(wa, m), b)
        assert y.is_contiguous()  # NCHW in, NCHW out
        (y * gy).sum().backward()
        xd, wd = x.double().requires_grad_(True), wt.double().requires_grad_(True)
        (F.conv2d(xd, wd, b.double(), padding=1) * gy.double()).sum().backward()
        assert _rel_err(xa.grad, xd.grad) < 3e-5 and _rel_err(wa.grad, wd.grad) < 3e-5


def test_folded_layer_same_bits_with_and_without_gradients():
    """PTI differentiates the generator's weights one image at a time: a Winograd layer then runs the inference
    arithmetic, so the tuned render and a later inference render agree bit for bit."""
    g = torch.Generator().manual_seed(8)
    c = 128
    x = torch.randn(1, c, 16, 16, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(c, c, 3, 3, generator=g)
    kw = dict(bias=torch.randn(c, generator=g), noise=torch.randn(1, 1, 16, 16, generator=g), leaky_relu=True,
              out_scale=2**0.5, kernel=make_kernel())
    styles = torch.rand(1, c, generator=g) + 0.5
    with torch.no_grad():
        ref = modulated_conv2d_folded(x, wt, styles, **kw, settings=CPU)
    w = wt.clone().requires_grad_(True)
    y = modulated_conv2d_folded(x, w, styles, **kw, settings=CPU)
    assert y.requires_grad and torch.equal(y.detach(), ref)
    y.square().sum().backward()
    assert w.grad is not None and w.grad.abs().max() > 0
