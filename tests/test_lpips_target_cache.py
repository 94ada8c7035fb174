"""LPIPS keeps the features of a fixed target between calls: the same values as the lpips package, bit for bit,
and never stale when the target changes in place or is another tensor."""

from __future__ import annotations

import torch

from gantune.metrics.lpips import LPIPSDistance


def test_cached_target_features_match_the_package():
    torch.manual_seed(0)
    d = LPIPSDistance("alex", allow_random=True, resolution=None)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    want = d.model(x, y).flatten(1).mean(1)
    assert torch.equal(d(x, y), want)
    assert torch.equal(d(x, y), want)  # from the kept features
    y.mul_(0.5)  # changed in place: recomputed
    assert torch.equal(d(x, y), d.model(x, y).flatten(1).mean(1))
    y2 = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(d(x, y2), d.model(x, y2).flatten(1).mean(1))
    assert not torch.equal(d(x, y2), want)


def test_gradient_still_reaches_the_first_image():
    torch.manual_seed(1)
    d = LPIPSDistance("alex", allow_random=True, resolution=None)
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    x1 = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    d(x1, y).sum().backward()
    d.model(x2, y).sum().backward()
    assert x1.grad.abs().max() > 0
    torch.testing.assert_close(x1.grad, x2.grad)
