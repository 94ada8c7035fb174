"""Domain adaptation: which offsets go to the target generator, blending, architecture checks."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from gantune.core import GeneratorConfig, layer_specs
from gantune.editing import adapt_render, default_adapt_layers, select_adapt_layers
from gantune.errors import InputError
from gantune.io import InversionRecord
from gantune.io.record import RecordError
from support import tiny_generator


def test_default_layers_are_the_references_convs_8_to_15():
    specs = layer_specs(GeneratorConfig())
    by = {s.name: s for s in specs}
    names = default_adapt_layers(specs)
    assert [by[n].rosinality for n in names] == [f"convs.{i}" for i in range(8, 16)]
    assert [by[n].hyperstyle_index for n in names] == [14, 15, 17, 18, 20, 21, 23, 24]  # the reference's filter
    tiny = layer_specs(tiny_config())
    assert default_adapt_layers(layer_specs(tiny_config(resolution=64))) == ["b64.conv0", "b64.conv1"]
    assert select_adapt_layers(tiny, "medium") == ["b16.conv0", "b16.conv1", "b32.conv0", "b32.conv1"]
    assert select_adapt_layers(specs, "convs.8,b1024.conv1") == ["b128.conv0", "b1024.conv1"]
    assert len(select_adapt_layers(tiny, "all")) == len(tiny)
    with pytest.raises(InputError, match="unknown layer"):
        select_adapt_layers(specs, "convs.99")


def test_offset_scale_blends_and_architecture_is_checked(tiny_G):
    torch.manual_seed(2)
    lat = torch.randn(tiny_G.num_ws, 32)
    d = {"b32.conv0": torch.randn(8, 16) * 0.5, "b16.conv1": torch.randn(16, 16) * 0.5}
    rec = InversionRecord(latent=lat, latent_kind="w+", method="hyperstyle", deltas=d)
    with torch.no_grad():
        plain = tiny_G.synthesis(lat[None])
        img0, used = adapt_render(tiny_G, rec, layers="b32.conv0", offset_scale=0.0)
        torch.testing.assert_close(img0, plain)
        img1, _ = adapt_render(tiny_G, rec, layers="b32.conv0", offset_scale=1.0)
        half, _ = adapt_render(tiny_G, rec, layers="b32.conv0", offset_scale=0.5)
        ref = tiny_G.synthesis(lat[None], deltas={"b32.conv0": d["b32.conv0"][None]})
        ref_half = tiny_G.synthesis(lat[None], deltas={"b32.conv0": 0.5 * d["b32.conv0"][None]})
    assert used == ["b32.conv0"]
    torch.testing.assert_close(img1, ref)
    torch.testing.assert_close(half, ref_half)
    assert (img1 - plain).abs().max() > 1e-3
    other = tiny_generator(channel_base=512)  # different channel counts
    with pytest.raises(RecordError, match="another architecture"):
        adapt_render(other, rec)
    with pytest.raises(RecordError, match="none of them in the chosen layers"):
        adapt_render(tiny_G, rec, layers="b8.conv0")
