"""Python API for the optimization methods: gantune.invert(..., method="optim" | "overparam")."""

from __future__ import annotations

import torch

import gantune
from gantune.editing.render import render_record
from gantune.metrics.lpips import get_lpips


def test_api_optim_and_overparam(tiny_G):
    target = tiny_G.synthesis(tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(0)))).detach()
    dist = get_lpips("alex", allow_random=True)
    for method, kw in (("optim", dict(space="w+", num_steps=4, w_avg_samples=200)), ("overparam", dict(num_steps=4))):
        (res,) = gantune.invert(target, method=method, weights=tiny_G, device="cpu", distance=dist, **kw)
        rec = res.to_record()
        assert rec.latent_kind == ("w+" if method == "optim" else "W")
        if method == "overparam":
            assert rec.latent.dtype == torch.float16  # the record stores W in fp16
        torch.testing.assert_close(render_record(tiny_G, rec)[0], res.image, atol=1e-5, rtol=1e-4)
