"""Rendering from a cached prefix (the untuned first layers, computed once) gives the full render's exact bits."""

from __future__ import annotations

import pytest
import torch

from gantune.methods.hyper.inference import untuned_prefix
from support import _generator


@pytest.fixture(scope="module")
def G():
    return _generator()


@pytest.mark.parametrize("until", ["b8.conv0", "b16.conv0", "b32.conv1", "b64.torgb"])
def test_prefix_render_is_the_full_render(G, until):
    g = torch.Generator().manual_seed(1)
    ws = G.map(torch.randn(2, 32, generator=g)).detach() + 0.2 * torch.randn(2, G.num_ws, 32, generator=g)
    later = [s for s in G.specs if s.res >= 32 and s.kind == "conv"]
    deltas = {s.name: 0.3 * torch.randn(2, s.out_ch, s.in_ch, generator=g) for s in later}
    deltas = {k: v for k, v in deltas.items() if [s.name for s in G.specs].index(k) >= [s.name for s in G.specs].index(until)}
    with torch.no_grad():
        p = G.synthesis.prefix(ws, until=until)
        for d in (None, deltas):
            full = G.synthesis(ws, deltas=d)
            assert torch.equal(G.synthesis(ws, deltas=d, prefix=p), full)
        assert (G.synthesis(ws, deltas=deltas) - G.synthesis(ws)).abs().max() > 1e-3 or not deltas


def test_prefix_refuses_what_it_cannot_keep(G):
    ws = G.map(torch.randn(1, 32)).detach()
    p = G.synthesis.prefix(ws, until="b16.conv0")
    s = G.synthesis.spec("b8.conv1")
    with pytest.raises(ValueError, match="inside the cached prefix"):
        G.synthesis(ws, deltas={"b8.conv1": torch.zeros(1, s.out_ch, s.in_ch)}, prefix=p)
    with pytest.raises(ValueError, match="batch"):
        G.synthesis(ws.repeat(2, 1, 1), prefix=p)
    with pytest.raises(ValueError, match="random"):
        G.synthesis.prefix(ws, until="b16.conv0", noise_mode="random")
    assert untuned_prefix(G, ws, {"b16.conv0", "b32.conv0"}, "random") is None
    assert untuned_prefix(G, ws, {"b32.conv0", "b16.conv1"}, "const").index == [s.name for s in G.specs].index("b16.conv1")
