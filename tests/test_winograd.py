"""Winograd F(2×2, 3×3) convolutions (gantune.core.winograd): the same results as direct convolutions to float
rounding, used only where they apply, and the same images through the modulated convolution."""

import pytest
import torch
import torch.nn.functional as F

from gantune.core import winograd
from gantune.core.modconv import modulated_conv2d_folded
from gantune.core.resample import make_kernel

CL = torch.channels_last


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("batch,cin,cout,h,w,bias", [(1, 8, 8, 6, 6, False), (2, 5, 12, 4, 10, True),
                                                    (3, 16, 4, 12, 2, True)])
def test_conv3x3_matches_direct_convolution(batch, cin, cout, h, w, bias):
    g = torch.Generator().manual_seed(cin * 100 + h)
    x = torch.randn(batch, cin, h, w, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(cout, cin, 3, 3, generator=g)
    b = torch.randn(cout, generator=g) if bias else None
    ref = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), padding=1)
    y = winograd.conv3x3(x, winograd.transform_weight(wt), b)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=CL)
    assert _rel_err(y, ref) < 1e-5
    # into a map that already holds something: added
    base = torch.randn(ref.shape, generator=g).contiguous(memory_format=CL)
    out = base.clone()
    winograd.conv3x3_into(out, x, winograd.transform_weight(wt), b)
    assert _rel_err(out - base, ref) < 1e-5


def test_scaled_transform_is_the_transform_of_the_scaled_weight():
    g = torch.Generator().manual_seed(1)
    wt, s = torch.randn(6, 7, 3, 3, generator=g), torch.rand(6, 7, generator=g) + 0.5
    direct = winograd.transform_weight(wt * s[:, :, None, None])
    torch.testing.assert_close(winograd.scale_weight(winograd.transform_weight(wt), s), direct, rtol=1e-6, atol=1e-6)


def test_cached_transform_follows_in_place_changes():
    wt = torch.randn(4, 4, 3, 3)
    u0 = winograd.cached_transform(wt)
    assert winograd.cached_transform(wt) is u0
    wt.mul_(2)
    torch.testing.assert_close(winograd.cached_transform(wt), 2 * u0)


def test_applies_only_where_it_pays():
    x = torch.randn(1, 256, 32, 32).contiguous(memory_format=CL)
    assert winograd.applies(x, 256, 3)
    assert not winograd.applies(x.contiguous(), 256, 3)  # NCHW
    assert not winograd.applies(x, 256, 1)  # 1×1
    assert not winograd.applies(x[:, :, :31, :31].contiguous(memory_format=CL), 256, 3)  # odd sides
    assert not winograd.applies(x[:, :64].contiguous(memory_format=CL), 64, 3)  # narrow
    assert not winograd.applies(torch.randn(1, 128, 256, 256).contiguous(memory_format=CL), 128, 3)  # large map
    assert not winograd.applies(x.double(), 256, 3)


def test_conv2d_module_uses_winograd_without_gradients_only(monkeypatch):
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a: calls.append(1) or real(*a))
    conv = winograd.Conv2d(128, 64, 3, 1, 1)
    x = torch.randn(2, 128, 16, 16).contiguous(memory_format=CL)
    ref = F.conv2d(x.double(), conv.weight.detach().double(), conv.bias.detach().double(), padding=1)
    with torch.no_grad():
        y = conv(x)
    assert calls and _rel_err(y, ref) < 1e-5
    calls.clear()
    y = conv(x)  # the weight trains: the direct convolution, bit for bit nn.Conv2d
    assert not calls and y.requires_grad and torch.equal(y, F.conv2d(x, conv.weight, conv.bias, padding=1))
    with torch.no_grad():
        strided = winograd.Conv2d(128, 64, 3, 2, 1)
        strided(x)
    assert not calls  # stride 2: direct
    assert set(dict(conv.named_parameters())) == {"weight", "bias"}  # nn.Conv2d's keys


@pytest.mark.parametrize("offsets", ["none", "channel", "tap"])
def test_modulated_conv_with_winograd_matches_direct(monkeypatch, offsets):
    """A 128-channel 16×16 layer (Winograd applies) against the same layer with the path off: styles, per-channel or
    per-tap offsets, demodulation, bias, noise and activation — the same image to float rounding."""
    g = torch.Generator().manual_seed(3)
    b, c = 2, 128
    x = torch.randn(b, c, 16, 16, generator=g).contiguous(memory_format=CL)
    wt = torch.randn(c, c, 3, 3, generator=g)
    styles = torch.rand(b, c, generator=g) + 0.5
    delta = {"none": None, "channel": 0.1 * torch.randn(b, c, c, generator=g),
             "tap": 0.1 * torch.randn(b, c, c, 3, 3, generator=g)}[offsets]
    kw = dict(delta=delta, bias=torch.randn(c, generator=g), noise=torch.randn(1, 1, 16, 16, generator=g),
              leaky_relu=True, out_scale=2**0.5, kernel=make_kernel())
    with torch.no_grad():
        y = modulated_conv2d_folded(x, wt, styles, **kw)
        monkeypatch.setattr(winograd, "ENABLED", False)
        ref = modulated_conv2d_folded(x, wt, styles, **kw)
    assert not torch.equal(y, ref)  # a different algorithm ran
    assert _rel_err(y, ref) < 1e-5
