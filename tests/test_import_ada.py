"""NVIDIA stylegan2-ada-pytorch network pickles, made here with the official structure but without NVIDIA's code:
fake ``torch_utils.persistence`` / ``dnnlib.util`` modules exist only while the pickle is written."""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import read_keys
from gantune.core import GeneratorConfig
from gantune.errors import WeightsError
from gantune.weights.ada import AdaUnpickler, from_ada_state_dict, load_ada, read_ada_pickle, to_ada_state_dict
from gantune.weights.formats import load_generator_file
from gantune.weights.rosinality import save_rosinality, to_rosinality_state_dict
from test_import_rosinality import (
    BLUR,
    TINY,
    assert_close,
    random_rosinality,
    reference_forward,
    rosinality_layout,
)

MODULE_SRC = 'raise RuntimeError("must never be executed")'
FAKE_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
CLASS_OF = {"synthesis": "SynthesisNetwork", "mapping": "MappingNetwork", "torgb": "ToRGBLayer",
            "conv0": "SynthesisLayer", "conv1": "SynthesisLayer"}


@contextlib.contextmanager
def fake_nvidia_modules():
    """Register stand-ins for NVIDIA's modules (pickle needs them to write references); removed afterwards."""
    assert not any(n in sys.modules for n in FAKE_MODULES)
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise RuntimeError("NVIDIA's reconstruct function must never be called by gantune")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    tu, dn = types.ModuleType("torch_utils"), types.ModuleType("dnnlib")
    tu.persistence, dn.util, dn.EasyDict = persistence, util, EasyDict
    sys.modules.update({"torch_utils": tu, "torch_utils.persistence": persistence, "dnnlib": dn, "dnnlib.util": util})
    try:
        yield persistence, EasyDict
    finally:
        for n in FAKE_MODULES:
            sys.modules.pop(n, None)


class FakePersistent:
    """Pickles like a ``@persistent_class`` network: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, reconstruct, class_name: str, state: dict) -> None:
        self.reconstruct, self.class_name, self.state = reconstruct, class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=MODULE_SRC, class_name=self.class_name, state=self.state)
        return (self.reconstruct, (meta,))


def build_network(sd: dict, reconstruct, EasyDict, init_kwargs: dict, extra_state: dict | None = None):
    """Nest a flat G_ema state dict into module states (parameters, buffers, children) like nn.Module.__dict__."""

    def node():
        return {"params": OrderedDict(), "buffers": OrderedDict(), "children": OrderedDict()}

    root = node()
    for key, t in sd.items():
        *path, leaf = key.split(".")
        n = root
        for p in path:
            n = n["children"].setdefault(p, node())
        kind = "buffers" if leaf in ("resample_filter", "noise_const", "w_avg") else "params"
        n[kind][leaf] = t if kind == "buffers" else torch.nn.Parameter(t.clone(), requires_grad=False)

    def make(name, n, class_name):
        children = OrderedDict((c, make(c, v, CLASS_OF.get(c, "SynthesisBlock" if c.startswith("b") else
                                                           "FullyConnectedLayer"))) for c, v in n["children"].items())
        state = {
            "training": False,
            "_parameters": n["params"],
            "_buffers": n["buffers"],
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_modules": children,
            "_init_args": (),
            "_init_kwargs": EasyDict(),
        }
        if class_name == "FullyConnectedLayer":
            state["weight_gain"] = np.float64(0.01 / np.sqrt(n["params"]["weight"].shape[1]))  # a numpy scalar
        return FakePersistent(reconstruct, class_name, state)

    G = make("", root, "Generator")
    G.state["_init_kwargs"] = EasyDict(init_kwargs)
    # a non-persistent buffer must not appear in the state dict
    G.state["_buffers"]["scratch"] = torch.zeros(3)
    G.state["_non_persistent_buffers_set"] = {"scratch"}
    G.state.update(extra_state or {})
    return G


def write_ada_pickle(path, sd, *, z_dim, n_mlp, res, extra_state=None):
    with fake_nvidia_modules() as (persistence, EasyDict):
        kwargs = dict(
            z_dim=z_dim, c_dim=0, w_dim=z_dim, img_resolution=res, img_channels=3,
            mapping_kwargs=EasyDict(num_layers=n_mlp), synthesis_kwargs=EasyDict(
                channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256, architecture="skip"),
        )
        G_ema = build_network(sd, persistence._reconstruct_persistent_obj, EasyDict, kwargs, extra_state)
        data = dict(
            training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip"),
            G=G_ema, D=None, G_ema=G_ema, augment_pipe=None,
        )
        with open(path, "wb") as f:
            pickle.dump(data, f)
    assert not any(n in sys.modules for n in FAKE_MODULES)


def rosinality_to_ada(ros: dict, size: int, n_mlp: int, w_avg: torch.Tensor) -> OrderedDict:
    """Test-side conversion following OFFICIAL_FORMATS.md §2.3 (independent of gantune's tables)."""
    filt = BLUR / 4
    ada = OrderedDict()

    def conv(prefix, R, j):
        ada[f"{prefix}.weight"] = ros[f"{R}.conv.weight"][0]
        ada[f"{prefix}.noise_strength"] = ros[f"{R}.noise.weight"][0]
        ada[f"{prefix}.bias"] = ros[f"{R}.activate.bias"]
        ada[f"{prefix}.resample_filter"] = filt.clone()
        ada[f"{prefix}.noise_const"] = ros[f"noises.noise_{j}"][0, 0]
        ada[f"{prefix}.affine.weight"] = ros[f"{R}.conv.modulation.weight"]
        ada[f"{prefix}.affine.bias"] = ros[f"{R}.conv.modulation.bias"]

    def torgb(prefix, R):
        ada[f"{prefix}.weight"] = ros[f"{R}.conv.weight"][0]
        ada[f"{prefix}.bias"] = ros[f"{R}.bias"].flatten()
        ada[f"{prefix}.affine.weight"] = ros[f"{R}.conv.modulation.weight"]
        ada[f"{prefix}.affine.bias"] = ros[f"{R}.conv.modulation.bias"]

    ada["synthesis.b4.const"] = ros["input.input"][0]
    ada["synthesis.b4.resample_filter"] = filt.clone()
    conv("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    i = 0
    while 2 ** (i + 3) <= size:
        r = 2 ** (i + 3)
        ada[f"synthesis.b{r}.resample_filter"] = filt.clone()
        conv(f"synthesis.b{r}.conv0", f"convs.{2 * i}", 2 * i + 1)
        conv(f"synthesis.b{r}.conv1", f"convs.{2 * i + 1}", 2 * i + 2)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{i}")
        i += 1
    ada["mapping.w_avg"] = w_avg
    for k in range(n_mlp):
        ada[f"mapping.fc{k}.weight"] = ros[f"style.{k + 1}.weight"]
        ada[f"mapping.fc{k}.bias"] = ros[f"style.{k + 1}.bias"]
    return ada


# ---------------------------------------------------------------------------------------------------------------------
def test_official_256_layout(tmp_path):
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    ros = random_rosinality(rosinality_layout(256, 512, 8, ch), seed=2)
    w_avg = torch.randn(512)
    ada = rosinality_to_ada(ros, 256, 8, w_avg)
    assert [(k, tuple(v.shape)) for k, v in ada.items()] == [(k, s) for k, s, _ in read_keys("keys_ada_G256.tsv")]
    path = tmp_path / "ffhq256.pkl"
    write_ada_pickle(path, ada, z_dim=512, n_mlp=8, res=256)
    sd, init_kwargs = read_ada_pickle(path)
    assert list(sd) == list(ada)  # official keys and order; the non-persistent buffer is left out
    assert all(torch.equal(sd[k], ada[k]) for k in ada)
    assert init_kwargs["mapping_kwargs"] == {"num_layers": 8} and type(init_kwargs["mapping_kwargs"]) is dict
    G, info = load_ada(path)
    assert G.cfg == GeneratorConfig(resolution=256, mapping_layers=8, channel_base=32768, channel_max=512,
                                    conv_clamp=256.0, num_fp16_res=4)
    assert info["source_format"] == "ada-pkl" and not info["w_avg_computed"] and "fp16" in info["note"]
    assert torch.equal(G.mapping.w_avg, w_avg)
    back = to_rosinality_state_dict(G)  # ADA -> gantune -> rosinality is the published conversion
    assert list(back) == list(ros) and all(torch.equal(back[k], ros[k]) for k in ros)
    ada_back = to_ada_state_dict(G)
    assert list(ada_back) == list(ada) and all(torch.equal(ada_back[k], ada[k]) for k in ada)


@pytest.mark.parametrize("n_mlp", [2, 8])
def test_ada_renders_like_rosinality_and_its_conversion(tmp_path, n_mlp):
    t = dict(TINY, n_mlp=n_mlp)
    ros = random_rosinality(rosinality_layout(**t), seed=7 + n_mlp)
    w_avg = torch.randn(16)
    path = tmp_path / "tiny.pkl"
    write_ada_pickle(path, rosinality_to_ada(ros, 32, n_mlp, w_avg), z_dim=16, n_mlp=n_mlp, res=32)
    G, info = load_generator_file(path)
    assert info["format"] == "ada-pkl" and G.cfg.mapping_layers == n_mlp
    ws = torch.randn(2, G.num_ws, 16)
    ref = reference_forward(ros, ws)
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode="const")
    assert_close(img, ref)
    # its rosinality conversion, written and re-imported, renders the same and carries w_avg as latent_avg
    conv_path = save_rosinality(G, tmp_path / "tiny_ros.pt")
    G2, info2 = load_generator_file(conv_path)
    assert info2["format"] == "rosinality" and not info2["w_avg_computed"]
    assert torch.equal(G2.mapping.w_avg, w_avg)
    with torch.no_grad():
        assert torch.equal(G2.synthesis(ws, noise_mode="const"), img)
        z = torch.randn(2, 16)
        assert torch.equal(G2(z, truncation=0.7), G(z, truncation=0.7))


def test_module_source_is_kept_as_text_never_run(tmp_path):
    ros = random_rosinality(rosinality_layout(**TINY), seed=3)
    path = tmp_path / "g.pkl"
    write_ada_pickle(path, rosinality_to_ada(ros, 32, 3, torch.zeros(16)), z_dim=16, n_mlp=3, res=32)
    with open(path, "rb") as f:
        data = AdaUnpickler(f).load()
    assert data["G_ema"].module_src == MODULE_SRC and data["G_ema"].class_name == "Generator"
    assert data["training_set_kwargs"]["path"] == "ffhq.zip" and data["D"] is None


def test_inconsistent_conditional_and_non_skip_generators_are_rejected():
    ros = random_rosinality(rosinality_layout(**TINY), seed=4)
    ada = rosinality_to_ada(ros, 32, 3, torch.zeros(16))
    # an embedding of 16 features before a first layer that takes 16 inputs in all leaves no room for z
    cond = dict(ada, **{"mapping.embed.weight": torch.randn(16, 10), "mapping.embed.bias": torch.zeros(16)})
    with pytest.raises(WeightsError, match=r"conditional.*z_dim=0"):
        from_ada_state_dict(cond)
    with pytest.raises(WeightsError, match="conditional.*no mapping.embed"):
        from_ada_state_dict(ada, {"c_dim": 10})
    resnet = dict(ada, **{"synthesis.b8.skip.weight": torch.randn(16, 16, 1, 1)})
    with pytest.raises(WeightsError, match="resnet"):
        from_ada_state_dict(resnet)
    with pytest.raises(WeightsError, match="orig"):
        from_ada_state_dict({k: v for k, v in ada.items() if not k.startswith("synthesis.b8.torgb")})
    missing = {k: v for k, v in ada.items() if k != "synthesis.b16.conv1.noise_const"}
    with pytest.raises(WeightsError, match=r"synthesis\.b16\.conv1\.noise_const"):
        from_ada_state_dict(missing)
    bad_filter = dict(ada, **{"synthesis.b16.conv0.resample_filter": torch.full((4, 4), 1 / 16)})
    with pytest.raises(WeightsError, match=r"resample_filter"):
        from_ada_state_dict(bad_filter)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_forbidden_global_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    ros = random_rosinality(rosinality_layout(**TINY), seed=6)
    path = tmp_path / "evil.pkl"
    write_ada_pickle(path, rosinality_to_ada(ros, 32, 3, torch.zeros(16)), z_dim=16, n_mlp=3, res=32,
                     extra_state={"hook": _Evil(marker)})
    with pytest.raises(WeightsError, match=r"(os|posix)\.system"):
        read_ada_pickle(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(WeightsError, match=r"(os|posix)\.system"):
        load_ada(plain)
    assert not marker.exists()
