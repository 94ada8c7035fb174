"""The one record renderer: tuned differences, latent matrices, and edits of every latent kind."""

from __future__ import annotations

import copy

import torch

from gantune.editing.render import edited_latents, render_record
from gantune.io import InversionRecord


def test_tuned_differences_are_applied(tiny_G):
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(0)))[0]
    name = "synthesis.layers.b16.conv1.weight"
    diff = (0.2 * torch.randn_like(tiny_G.get_parameter(name))).half()
    noise = "synthesis.layers.b8.conv0.noise_const"
    ndiff = torch.randn(8, 8).half()
    rec = InversionRecord(latent=ws, latent_kind="w+", method="optim", tuned={name: diff, noise: ndiff})
    G2 = copy.deepcopy(tiny_G)
    with torch.no_grad():
        G2.get_parameter(name).add_(diff.float())
        G2.get_buffer(noise).add_(ndiff.float())
        want = G2.synthesis(ws[None])
        plain = tiny_G.synthesis(ws[None])
    got = render_record(tiny_G, rec)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-2
    # the base generator is untouched
    assert torch.equal(tiny_G.synthesis(ws[None]), plain)


def test_edit_of_a_latent_matrix(tiny_G):
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(1)))[0, 0]
    W = ws[None].repeat(32, 1) + 0.1 * torch.randn(32, 32)
    rec = InversionRecord(latent=W, latent_kind="W", method="overparam")
    base = render_record(tiny_G, rec)
    n = torch.randn(32)
    n = n / n.norm()
    lats = edited_latents(tiny_G, rec, n[None].expand(tiny_G.num_ws, 32), [0.0, 2.0])
    assert lats.shape == (2, tiny_G.num_ws, 32, 32)
    imgs = render_record(tiny_G, rec, latents=lats)
    torch.testing.assert_close(imgs[:1], base, atol=1e-5, rtol=1e-4)
    want = tiny_G.synthesis(wmat=(W + 2.0 * n)[None])
    torch.testing.assert_close(imgs[1:], want, atol=1e-5, rtol=1e-4)
