"""Format detection from file contents, load_generator_file dispatch, and safe_torch_load."""

from __future__ import annotations

import argparse
import hashlib
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import read_keys
from gantune.errors import WeightsError
from gantune.weights.formats import identify_file, load_generator_file
from gantune.weights.native import save_native
from gantune.weights.rosinality import to_rosinality_state_dict
from gantune.weights.safe_pickle import safe_torch_load


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _encoder_keys(name: str, prefix: str, in_ch: int | None = None) -> dict:
    """Official encoder key names with tiny tensors (the input conv keeps its real channel count)."""
    out = {}
    for key, shape, _ in read_keys(name):
        if key == "input_layer.0.weight":
            out[prefix + key] = torch.zeros(4, in_ch or shape[1], 3, 3)
        else:
            out[prefix + key] = torch.zeros(1)
    return out


def _same_params(G, H, skip=("mapping.w_avg",)):
    a, b = G.state_dict(), H.state_dict()
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a if k not in skip)


@pytest.fixture
def files(tiny_G, tmp_path):
    """One file of each kind, built from the tiny generator where the format holds a generator."""
    ros = to_rosinality_state_dict(tiny_G)
    n_latent = tiny_G.num_ws
    avg_rows = tiny_G.mapping.w_avg[None].repeat(n_latent, 1)
    decoder = {"decoder." + k: v for k, v in ros.items()}
    f = {}
    f["native"] = save_native(tiny_G, tmp_path / "g.safetensors", meta={"source_format": "test"})
    f["rosinality"] = tmp_path / "ros.pt"
    torch.save({"g_ema": ros, "latent_avg": tiny_G.mapping.w_avg}, f["rosinality"])
    f["rosinality-legacy"] = tmp_path / "ros_legacy.pt"
    torch.save({"g_ema": ros, "latent_avg": tiny_G.mapping.w_avg}, f["rosinality-legacy"],
               _use_new_zipfile_serialization=False)
    f["rosinality-bare"] = tmp_path / "bare.pt"
    torch.save(ros, f["rosinality-bare"])
    f["rosinality-train"] = tmp_path / "train.pt"
    torch.save({"g": ros, "d": {"x": torch.zeros(1)}, "g_ema": ros, "args": argparse.Namespace(size=32)},
               f["rosinality-train"])
    hyper = {"hypernet." + k: torch.zeros(1) for k, _, _ in read_keys("keys_hypernet_claimed14.tsv")[:20]}
    f["hyperstyle"] = tmp_path / "hyperstyle.pt"
    torch.save({"state_dict": {**hyper, **decoder}, "opts": {"output_size": 32}, "latent_avg": avg_rows},
               f["hyperstyle"])
    f["w-encoder"] = tmp_path / "w_encoder.pt"
    torch.save({"state_dict": {**_encoder_keys("keys_wencoder.tsv", "encoder."), **decoder}, "opts": {}},
               f["w-encoder"])
    f["e4e"] = tmp_path / "e4e.pt"
    torch.save({"state_dict": {**_encoder_keys("keys_restyle_e4e.tsv", "encoder.", in_ch=3), **decoder}},
               f["e4e"])
    f["restyle-e4e"] = tmp_path / "restyle.pt"
    torch.save({"state_dict": _encoder_keys("keys_restyle_e4e.tsv", "encoder."), "latent_avg": avg_rows},
               f["restyle-e4e"])
    return f


def test_detect_each_kind(files, tmp_path):
    expected = {
        "native": "native", "rosinality": "rosinality", "rosinality-legacy": "rosinality",
        "rosinality-bare": "rosinality", "rosinality-train": "rosinality-train", "hyperstyle": "hyperstyle",
        "w-encoder": "w-encoder", "e4e": "e4e", "restyle-e4e": "restyle-e4e",
    }
    for name, fmt in expected.items():
        assert identify_file(files[name])[0] == fmt, name
    from support import TINY, random_rosinality, rosinality_layout, rosinality_to_ada, write_ada_pickle

    ada = rosinality_to_ada(random_rosinality(rosinality_layout(**TINY)), 32, 3, torch.zeros(16))
    write_ada_pickle(tmp_path / "net.pkl", ada, z_dim=16, n_mlp=3, res=32)
    assert identify_file(tmp_path / "net.pkl")[0] == "ada-pkl"
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 10)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    (tmp_path / "text.txt").write_text("hello")
    for name in ("junk.bin", "plain.safetensors", "other.pt", "text.txt"):
        assert identify_file(tmp_path / name)[0] == "unknown", name


def test_detection_does_not_need_tensor_data(files, tmp_path):
    """A legacy file cut off after its pickles: detection still works, loading does not."""
    src = files["rosinality-legacy"].read_bytes()

    class _Skip(pickle.Unpickler):
        def find_class(self, module, name):
            return lambda *a, **k: None

        def persistent_load(self, pid):
            return None

    import io

    bio = io.BytesIO(src)
    for _ in range(4):  # magic, protocol, sys info, main object
        _Skip(bio).load()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(src[: bio.tell()])
    assert identify_file(cut)[0] == "rosinality"
    with pytest.raises(WeightsError, match="not a readable"):
        safe_torch_load(cut)


@pytest.mark.parametrize("name", ["native", "rosinality", "rosinality-legacy", "hyperstyle"])
def test_load_generator_file_with_w_avg(files, tiny_G, name):
    G, info = load_generator_file(files[name])
    assert _same_params(G, tiny_G, skip=())
    assert info["format"] == identify_file(files[name])[0]
    assert info["sha256"] == hashlib.sha256(files[name].read_bytes()).hexdigest()
    assert info["architecture"] == tiny_G.cfg.describe() and info["w_avg_computed"] is False
    if name == "hyperstyle":
        assert "decoder" in info["part"]


@pytest.mark.parametrize("name", ["rosinality-train", "rosinality-bare", "w-encoder"])
def test_load_generator_file_computes_missing_w_avg(files, tiny_G, name):
    G, info = load_generator_file(files[name], w_avg_samples=500, w_avg_seed=1)
    assert _same_params(G, tiny_G)
    assert info["w_avg_computed"] is True and "500" in info["w_avg_source"]
    assert torch.allclose(G.mapping.w_avg, tiny_G.compute_w_avg(500, seed=1))
    assert not torch.allclose(G.mapping.w_avg, tiny_G.mapping.w_avg)


def test_unsupported_files_say_what_they_are(files, tmp_path):
    with pytest.raises(WeightsError, match="e4e encoder checkpoint, not a generator"):
        load_generator_file(files["e4e"])
    with pytest.raises(WeightsError, match="restyle-e4e"):
        load_generator_file(files["restyle-e4e"])
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"top level \(model\)") as e:
        load_generator_file(tmp_path / "other.pt")
    assert "\n" not in e.value.one_line() and e.value.hint
    tf = tmp_path / "tf.pkl"  # an old TensorFlow pickle references dnnlib.tflib classes
    tf.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01}q\x02b.")
    with pytest.raises(WeightsError, match="TensorFlow"):
        load_generator_file(tf)
    with pytest.raises(WeightsError, match="no such file"):
        load_generator_file(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------------------------------
# safe_torch_load
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True])
def test_safe_load_allows_namespace_and_numpy(tmp_path, legacy):
    ck = {"g_ema": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=np.float64(0.002), size=256),
          "ada_aug_p": np.float32(0.5), "arr": np.arange(3)}
    path = tmp_path / "ck.pt"
    torch.save(ck, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(Exception):  # plain weights_only refuses it, so the fallback is what is tested here
        torch.load(path, weights_only=True)
    out = safe_torch_load(path)
    assert out["args"].size == 256 and out["args"].lr == np.float64(0.002)
    assert float(out["ada_aug_p"]) == 0.5 and out["arr"].tolist() == [0, 1, 2]
    assert torch.equal(out["g_ema"]["w"], torch.ones(2))


def test_safe_load_accepts_numpy1_names(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"args": argparse.Namespace(lr=np.float64(0.5))}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw  # protocol-2 GLOBAL lines, as a numpy 1 writer would name them:
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert safe_torch_load(path)["args"].lr == 0.5


@pytest.mark.parametrize("legacy", [False, True])
def test_safe_load_refuses_code(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "x": _Evil(marker)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(WeightsError, match="system"):
        safe_torch_load(path)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        safe_torch_load(tmp_path / "junk.pt")
