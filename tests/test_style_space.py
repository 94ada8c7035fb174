"""Style space (S): per-layer, per-channel offsets added to the styles of every modulated layer."""

from __future__ import annotations

import copy

import pytest
import torch


def _ws(G, seed=0, batch=2):
    return G.map(torch.randn(batch, G.cfg.z_dim, generator=torch.Generator().manual_seed(seed)))


def _zero_offsets(G, batch=1):
    return {s.name: torch.zeros(batch, s.in_ch) for s in G.specs}


@pytest.mark.parametrize("fused", [None, True, False])
def test_zero_offsets_give_the_same_bits(tiny_G, fused):
    ws = _ws(tiny_G)
    with torch.no_grad():
        plain = tiny_G.synthesis(ws, fused=fused)
        got = tiny_G.synthesis(ws, fused=fused, style_offsets=_zero_offsets(tiny_G))
    assert torch.equal(got, plain)


def test_zero_offsets_with_hyperstyle_deltas_and_a_latent_matrix(tiny_G):
    ws = _ws(tiny_G, 1)
    deltas = {s.name: 0.1 * torch.randn(1, s.out_ch, s.in_ch) for s in tiny_G.specs if s.kind == "conv"}
    W = ws[:, 0, None, :].repeat(1, 32, 1) + 0.1 * torch.randn(2, 32, 32)
    with torch.no_grad():
        assert torch.equal(tiny_G.synthesis(ws, deltas=deltas, style_offsets=_zero_offsets(tiny_G)),
                           tiny_G.synthesis(ws, deltas=deltas))
        assert torch.equal(tiny_G.synthesis(wmat=W, style_offsets=_zero_offsets(tiny_G)), tiny_G.synthesis(wmat=W))


@pytest.mark.parametrize("matrix", [False, True])
def test_an_offset_is_added_to_the_layers_styles(tiny_G, matrix):
    """Adding c to a layer's styles is the same as adding c to its affine bias (bias gain 1); every row of a latent
    matrix gets it."""
    ws = _ws(tiny_G, 3)
    lat = {"wmat": ws[:, 0, None, :].repeat(1, 32, 1) + 0.1 * torch.randn(2, 32, 32)} if matrix else {"ws": ws}
    name = "b16.conv1"
    c = 0.7 * torch.randn(1, tiny_G.synthesis.spec(name).in_ch)
    G2 = copy.deepcopy(tiny_G)
    with torch.no_grad():
        G2.synthesis.layer(name).affine.bias.add_(c[0])
        want = G2.synthesis(**lat)
        got = tiny_G.synthesis(**lat, style_offsets={name: c})
        plain = tiny_G.synthesis(**lat)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-2


def test_per_image_offsets_and_torgb_layers(tiny_G):
    ws = _ws(tiny_G, 4)
    name = "b32.torgb"
    c = torch.stack([torch.zeros(8), torch.randn(8)])
    with torch.no_grad():
        got = tiny_G.synthesis(ws, style_offsets={name: c})
        plain = tiny_G.synthesis(ws)
        one = tiny_G.synthesis(ws[1:], style_offsets={name: c[1:]})
    torch.testing.assert_close(got[0], plain[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1:], one, atol=1e-5, rtol=1e-4)
    assert (got[1] - plain[1]).abs().max() > 1e-2


def test_styles_are_the_affine_outputs(tiny_G):
    ws = _ws(tiny_G, 5)
    S = tiny_G.synthesis.styles(ws)
    assert list(S) == [s.name for s in tiny_G.specs]
    for s in tiny_G.specs:
        assert S[s.name].shape == (2, s.in_ch)
        torch.testing.assert_close(S[s.name], tiny_G.synthesis.layer(s.name).affine(ws[:, s.ws_index]))
    W = torch.randn(1, 32, 32)
    SW = tiny_G.synthesis.styles(wmat=W)
    assert SW["b4.conv1"].shape == (1, 32, 32)


def test_bad_offsets_are_refused(tiny_G):
    ws = _ws(tiny_G)
    with pytest.raises(ValueError, match="unknown layers"):
        tiny_G.synthesis(ws, style_offsets={"b999.conv0": torch.zeros(1, 32)})
    with pytest.raises(ValueError, match="must be"):
        tiny_G.synthesis(ws, style_offsets={"b8.conv0": torch.zeros(1, 31)})
    with pytest.raises(ValueError, match="must be"):
        tiny_G.synthesis(ws, style_offsets={"b8.conv0": torch.zeros(3, 32)})
    p = tiny_G.synthesis.prefix(ws, until="b16.conv0")
    with pytest.raises(ValueError, match="inside the cached prefix"):
        tiny_G.synthesis(ws, prefix=p, style_offsets={"b8.conv0": torch.zeros(1, 32)})
    with torch.no_grad():
        torch.testing.assert_close(tiny_G.synthesis(ws, prefix=p, style_offsets={"b16.conv1": torch.ones(1, 16)}),
                                   tiny_G.synthesis(ws, style_offsets={"b16.conv1": torch.ones(1, 16)}),
                                   atol=1e-5, rtol=1e-4)
