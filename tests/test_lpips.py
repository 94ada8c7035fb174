"""LPIPS wrapper: the package's linear layers, the registry backbone (mapped key by key), and the missing-file error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gantune.errors import WeightsError
from gantune.metrics.lpips import LPIPSDistance, _linear_layers_path


def test_random_backbone_distance_properties():
    d = LPIPSDistance("alex", allow_random=True, resolution=32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    same = d(x, x)
    diff = d(x, y)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (diff > 1e-3).all()
    # larger images are area-downsampled to `resolution` first
    small = F.interpolate(x, size=(32, 32), mode="area"), F.interpolate(y, size=(32, 32), mode="area")
    assert torch.allclose(diff, d(*small), atol=1e-6)
    # gradients reach the input; the network is frozen
    xr = x.clone().requires_grad_(True)
    d(xr, y).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in d.parameters())
    # the calibrated linear layers are the package's, not random
    lin = torch.load(_linear_layers_path("alex"), map_location="cpu", weights_only=True)
    assert torch.equal(d.model.lin0.model[1].weight, lin["lin0.model.1.weight"])


def _fake_torchvision_alexnet(path):
    import torchvision

    torch.manual_seed(3)
    feats = torchvision.models.alexnet().features.state_dict()
    sd = {f"features.{k}": v for k, v in feats.items()}
    sd["classifier.1.weight"] = torch.zeros(2, 2)  # extra keys of the real file are ignored
    torch.save(sd, path)
    return sd


def test_backbone_from_registry_is_mapped_onto_the_trunk(tmp_path, monkeypatch):
    import gantune.weights as W

    sd = _fake_torchvision_alexnet(tmp_path / "alexnet-owt-7be5be79.pth")
    asked = []
    monkeypatch.setattr(W, "resolve", lambda spec, **kw: asked.append(spec) or tmp_path / "alexnet-owt-7be5be79.pth")
    d = LPIPSDistance("alex", resolution=None)
    assert asked == ["lpips-alex-backbone"]
    trunk = d.model.net.state_dict()
    assert torch.equal(trunk["slice1.0.weight"], sd["features.0.weight"])
    assert torch.equal(trunk["slice5.10.bias"], sd["features.10.bias"])
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    y = torch.rand(1, 3, 48, 48) * 2 - 1
    rnd = LPIPSDistance("alex", allow_random=True, resolution=None)
    assert not torch.allclose(d(x, y), rnd(x, y))


def test_wrong_backbone_file_is_a_weights_error(tmp_path, monkeypatch):
    import gantune.weights as W

    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "bad.pth")
    monkeypatch.setattr(W, "resolve", lambda spec, **kw: tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="missing"):
        LPIPSDistance("alex")


def test_missing_backbone_says_how_to_fetch_it(monkeypatch):
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    with pytest.raises(WeightsError) as e:
        LPIPSDistance("vgg")
    assert "gantune weights fetch lpips-vgg-backbone" in e.value.one_line()


def test_unknown_net():
    with pytest.raises(ValueError, match="vgg"):
        LPIPSDistance("squeezenet", allow_random=True)
