"""NVIDIA stylegan2-ada-pytorch network pickles, made here with the official structure but without NVIDIA's code:
fake ``torch_utils.persistence`` / ``dnnlib.util`` modules exist only while the pickle is written."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import read_keys
from gantune.core import GeneratorConfig
from gantune.errors import WeightsError
from gantune.weights.ada import AdaUnpickler, from_ada_state_dict, load_ada, read_ada_pickle, to_ada_state_dict
from gantune.weights.formats import load_generator_file
from gantune.weights.rosinality import save_rosinality, to_rosinality_state_dict
from support import (
    MODULE_SRC,
    TINY,
    assert_close,
    build_network,
    fake_nvidia_modules,
    random_rosinality,
    reference_forward,
    rosinality_layout,
    rosinality_to_ada,
    tiny_generator,
    write_ada_pickle,
)


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


# --- #27: conv_clamp, class-conditional generators, the formats around them ------------------------------------------
SQ2 = 2 ** 0.5


def _styles(affine, w, gain=1.0):
    """NVIDIA's FullyConnectedLayer (lr 1, linear): w @ (W / sqrt(in)).T + b, times ``gain``."""
    return (w @ (affine.weight / affine.weight.shape[1] ** 0.5).t() + affine.bias) * gain


def _nvidia_synthesis_layer(layer, x, w, clamp):
    """NVIDIA's SynthesisLayer (up=1, noise 'const'), from its published equations: modulate, demodulate, convolve,
    add noise · strength, then bias_act(lrelu, gain √2, clamp)."""
    s = _styles(layer.affine, w)
    wt = layer.weight[None] * s[:, None, :, None, None]
    wt = wt * (wt.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    y = torch.cat([torch.nn.functional.conv2d(x[i : i + 1], wt[i], padding=1) for i in range(x.shape[0])])
    y = y + layer.noise_const * layer.noise_strength
    y = torch.nn.functional.leaky_relu(y + layer.bias[None, :, None, None], 0.2) * SQ2
    return y.clamp(-clamp, clamp)


def _nvidia_torgb(layer, x, w, clamp):
    """NVIDIA's ToRGBLayer: styles · 1/sqrt(in), no demodulation, 1×1 conv, bias_act(linear, clamp)."""
    s = _styles(layer.affine, w, 1 / layer.weight.shape[1] ** 0.5)
    wt = layer.weight[None] * s[:, None, :, None, None]
    y = torch.cat([torch.nn.functional.conv2d(x[i : i + 1], wt[i]) for i in range(x.shape[0])])
    return (y + layer.bias[None, :, None, None]).clamp(-clamp, clamp)


@pytest.mark.parametrize("grad", [False, True])
def test_clamped_layers_match_nvidia_equations(grad):
    clamp = 0.25
    G = tiny_generator(1, perturb=True, conv_clamp=clamp)
    conv, rgb = G.synthesis.layer("b8.conv1"), G.synthesis.layer("b8.torgb")
    x = (torch.randn(2, conv.spec.in_ch, 8, 8) * 3).requires_grad_(grad)
    w = torch.randn(2, 32)
    skip = torch.randn(2, 3, 8, 8)
    with torch.set_grad_enabled(grad):
        y = conv(x, w, kernel=G.synthesis.resample_kernel, noise_mode="const")
        img = rgb(y, w, skip=skip)
        ref = _nvidia_synthesis_layer(conv, x, w, clamp)
        ref_img = skip + _nvidia_torgb(rgb, ref, w, clamp)
    assert (ref.abs() == clamp).float().mean() > 0.1 and (ref.abs() < clamp).float().mean() > 0.1  # clamp reached
    assert_close(y.detach(), ref.detach(), 1e-5)
    assert_close(img.detach(), ref_img.detach(), 1e-5)


def test_conditional_mapping_matches_nvidia_equations():
    G = tiny_generator(2, c_dim=5, embed_features=12, mapping_lr_mul=0.01)
    with torch.no_grad():
        for p in G.mapping.parameters():
            p.normal_()
    z, c = torch.randn(3, 32), torch.nn.functional.one_hot(torch.tensor([0, 4, 2]), 5).float()

    def norm(t):
        return t * (t.square().mean(1, keepdim=True) + 1e-8).rsqrt()

    e = G.mapping.embed
    x = torch.cat([norm(z), norm(c @ (e.weight / 5 ** 0.5).t() + e.bias)], 1)
    assert x.shape[1] == 32 + 12
    for fc in G.mapping.fcs:
        x = torch.nn.functional.leaky_relu(x @ (fc.weight * 0.01 / fc.weight.shape[1] ** 0.5).t() + fc.bias * 0.01,
                                           0.2) * SQ2
    with torch.no_grad():
        assert_close(G.mapping(z, c), x, 1e-5)
        assert_close(G.map(z, c=c)[:, 5], x, 1e-5)
        assert torch.equal(G.class_label(3, 2), torch.tensor([[0.0, 0, 0, 1, 0]] * 2))
    with pytest.raises(ValueError, match="class-conditional"):
        G.mapping(z)
    with pytest.raises(ValueError, match="out of range"):
        G.class_label(5)


def _conditional_pickle(tmp_path, *, layer_clamp=None):
    """A conditional (c_dim 3) 32 px generator written as an ADA pickle; its layers clamp at ``layer_clamp``."""
    G = tiny_generator(3, z_dim=16, w_dim=16, c_dim=3)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    layers = None
    if layer_clamp is not None:
        layers = {"SynthesisLayer": {"conv_clamp": layer_clamp}, "ToRGBLayer": {"conv_clamp": layer_clamp},
                  "SynthesisBlock": {"use_fp16": True}}
    path = tmp_path / "cond.pkl"
    write_ada_pickle(path, to_ada_state_dict(G), z_dim=16, n_mlp=2, res=32, c_dim=3, layer_state=layers)
    return path, G


def test_conditional_pickle_imports_exactly(tmp_path):
    path, G = _conditional_pickle(tmp_path)
    G2, info = load_ada(path)
    assert G2.cfg.c_dim == 3 and G2.cfg.embed_dim == 16 and G2.cfg.conv_clamp == 256.0 and G2.cfg.num_fp16_res == 4
    assert "256" in info["note"] and "3 classes" in info["note"]
    z, c = torch.randn(2, 16), G.class_label(1, 2)
    with torch.no_grad():
        assert torch.equal(G2.map(z, c=c, truncation=0.7), G.map(z, c=c, truncation=0.7))
    assert list(to_ada_state_dict(G2)) == list(to_ada_state_dict(G))  # embed keys in the official place
    # the native copy keeps c_dim, conv_clamp and num_fp16_res
    from gantune.weights.native import load_native, save_native

    G3, _ = load_native(save_native(G2, tmp_path / "cond.safetensors"))
    assert G3.cfg == G2.cfg
    with pytest.raises(WeightsError, match="class-conditional"):
        to_rosinality_state_dict(G2)


def test_layer_attributes_set_the_clamp_and_it_is_reached(tmp_path):
    path, _ = _conditional_pickle(tmp_path, layer_clamp=0.05)
    G, info = load_ada(path)
    assert G.cfg.conv_clamp == 0.05 and G.cfg.num_fp16_res == 4  # the layers' own attribute wins over init kwargs
    outs = []
    hooks = [G.synthesis.layer(s.name).register_forward_hook(lambda m, a, y: outs.append(y))
             for s in G.specs if s.kind == "conv"]
    with torch.no_grad():
        G.synthesis(G.map(torch.randn(2, 16), c=G.class_label(0, 2)))
    for h in hooks:
        h.remove()
    assert max(float(o.abs().max()) for o in outs) == pytest.approx(0.05)
    path_bad = tmp_path / "mixed.pkl"
    sd = to_ada_state_dict(G)
    write_ada_pickle(path_bad, sd, z_dim=16, n_mlp=2, res=32, c_dim=3,
                     layer_state={"SynthesisLayer": {"conv_clamp": 256}, "ToRGBLayer": {"conv_clamp": None}})
    with pytest.raises(WeightsError, match="clamp their outputs differently"):
        load_ada(path_bad)


def _run(argv, capsys):
    from gantune.cli.app import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    io = capsys.readouterr()
    assert "Traceback" not in io.err
    return (e.value.code or 0), io.out, [ln for ln in io.err.splitlines() if ln.startswith("error") or "failed:" in ln]


def test_conditional_pickle_end_to_end_through_the_cli(tmp_path, capsys, monkeypatch):
    from gantune.io.record import InversionRecord
    from gantune.sampling import seed_z

    monkeypatch.chdir(tmp_path)
    path, G = _conditional_pickle(tmp_path)
    code, out, _ = _run(["weights", "info", path], capsys)
    assert code == 0 and "c_dim:         3" in out and "±256" in out
    code, _, err = _run(["generate", "-w", path, "--seeds", "0-1", "-o", "gen", "--device", "cpu"], capsys)
    assert code == 2 and len(err) == 1 and "class-conditional" in err[0] and "--class" in err[0]
    code, _, err = _run(["generate", "-w", path, "--seeds", "0-1", "--class", "7", "-o", "gen"], capsys)
    assert code == 2 and len(err) == 1 and "out of range" in err[0]
    assert not (tmp_path / "gen").exists() or not any((tmp_path / "gen").glob("*.png"))
    code, _, err = _run(["generate", "-w", path, "--seeds", "0-1", "--class", "2", "-o", "gen", "--device", "cpu"],
                        capsys)
    assert code == 0, err
    rec = InversionRecord.load(tmp_path / "gen" / "seed0001.safetensors")
    assert torch.equal(rec.c, torch.tensor([[0.0, 0.0, 1.0]]))
    with torch.no_grad():
        want = G.map(seed_z(G, 1), c=G.class_label(2))[0]
    assert_close(rec.latent, want, 1e-6)
    # a photo inverted with the class (projector, pixel loss); generated records interpolated with their class
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save("face.png")
    code, _, err = _run(["invert-optim", "face.png", "-w", path, "--class", "1", "--loss", "l2", "--steps", "2",
                         "--fixed-noise", "-o", "inv", "--device", "cpu"], capsys)
    assert code == 0, err
    inv = InversionRecord.load(tmp_path / "inv" / "face.safetensors")
    assert torch.equal(inv.c, torch.tensor([[0.0, 1.0, 0.0]]))
    code, _, err = _run(["interpolate", "gen/seed0001.safetensors", "gen/seed0000.safetensors", "-n", "3", "-w", path,
                         "-o", "lerp", "--device", "cpu"], capsys)
    assert code == 0, err
    # a record of this generator without a class is refused in one line
    rec.c = None
    rec.save(tmp_path / "noclass.safetensors")
    code, _, err = _run(["interpolate", "noclass.safetensors", "gen/seed0000.safetensors", "-n", "3", "-w", path,
                         "-o", "lerp2", "--device", "cpu"], capsys)
    assert code != 0 and "no class label" in " ".join(err) and "Traceback" not in " ".join(err)
    # statistics over samples draw the classes (GANSpace here; fit, StyleCLIP statistics and eval use seed mod c_dim)
    code, _, err = _run(["directions", "ganspace", "-w", path, "--samples", "100", "-o", "gs.pt"], capsys)
    assert code == 0, err
    code, _, err = _run(["invert", "face.png", "--method", "overparam", "-w", path, "--param", "loss=l2",
                         "--iters", "1", "-o", "op", "--device", "cpu"], capsys)
    assert code != 0 and "class-conditional" in " ".join(err) and "Traceback" not in " ".join(err)


def _sg3_state(kind: str) -> dict:
    return {"synthesis.input.weight": torch.zeros(16, 4), "synthesis.input.freqs": torch.zeros(16, 2),
            "synthesis.L0_36_16.weight": torch.zeros(16, 16, 1 if kind == "r" else 3, 1 if kind == "r" else 3),
            "mapping.fc0.weight": torch.zeros(16, 16), "mapping.w_avg": torch.zeros(16)}


@pytest.mark.parametrize("kind", ["t", "r"])
def test_stylegan3_pickles_are_named_and_refused(tmp_path, capsys, kind):
    path = tmp_path / f"sg3{kind}.pkl"
    synth = {"conv_kernel": 1, "use_radial_filters": True} if kind == "r" else {"conv_kernel": 3}
    write_ada_pickle(path, _sg3_state(kind), z_dim=16, n_mlp=2, res=32, synthesis=synth)
    for argv in (["weights", "info", path], ["generate", "-w", path, "--seeds", "0", "-o", tmp_path / "o"]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and len(err) == 1 and f"StyleGAN3 generator (stylegan3-{kind}" in err[0], err


def test_tensorflow_pickles_are_named_and_refused(tmp_path, capsys):
    net = b"cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01}q\x02X\x04\x00\x00\x00nameq\x03X\x01\x00\x00\x00Gq\x04sb"
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(b"\x80\x03" + net + b"h\x01h\x01\x87q\x05.")  # (G, D, Gs), protocol 3
    for argv in (["weights", "info", path], ["generate", "-w", path, "--seeds", "0", "-o", tmp_path / "o"]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and len(err) == 1 and "TensorFlow" in err[0] and "legacy.py" in err[0], err
    with pytest.raises(WeightsError) as e:
        read_ada_pickle(path)
    assert "TensorFlow" in e.value.one_line() and "legacy.py" in e.value.one_line()


def _as_published(data: bytes, protocol: int) -> bytes:
    """A pickle as Python 3.7/3.8 with numpy 1.x wrote it: numpy's globals under ``numpy.core``."""
    import pickletools

    if protocol == 3:
        return data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    out = data.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")
    return pickletools.optimize(out)  # re-framed after the shorter name


def _globals(data: bytes) -> set[str]:
    """Every global the pickle asks for, recorded while gantune's unpickler reads it."""
    import io as _io

    seen: set[str] = set()

    class Recording(AdaUnpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recording(_io.BytesIO(data)).load()
    return seen


@pytest.mark.parametrize("protocol", [3, 4])
def test_published_pickle_opcodes_load_and_nothing_more(tmp_path, protocol):
    ros = random_rosinality(rosinality_layout(**TINY), seed=9)
    ada = rosinality_to_ada(ros, 32, 3, torch.zeros(16))
    with fake_nvidia_modules() as (persistence, EasyDict):
        kwargs = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                      mapping_kwargs=EasyDict(num_layers=3), synthesis_kwargs=EasyDict(architecture="skip"))
        G_ema = build_network(ada, persistence._reconstruct_persistent_obj, EasyDict, kwargs,
                              {"aug": np.arange(4.0), "p": np.float64(0.2)})
        data = pickle.dumps(dict(training_set_kwargs=EasyDict(max_size=np.int64(70000)), G_ema=G_ema,
                                 augment_pipe=None), protocol=protocol)
    data = _as_published(data, protocol)
    want = {"torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict", "collections.OrderedDict",
            "torch._utils._rebuild_parameter", "torch._utils._rebuild_tensor_v2", "torch.storage._load_from_bytes",
            "numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar", "numpy.ndarray", "numpy.dtype"}
    if protocol == 3:
        want.add("builtins.set")
    assert _globals(data) == want
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(data)
    G, _ = load_ada(path)
    assert torch.equal(to_ada_state_dict(G)["synthesis.b32.conv1.weight"], ada["synthesis.b32.conv1.weight"])
    for extra in ("torch._utils\n_rebuild_parameter_with_state", "builtins\ngetattr", "numpy.dtypes\nFloat64DType",
                  "torch._utils\n_rebuild_device_tensor_from_numpy"):
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(b"\x80\x03c" + extra.encode() + b"\n.")
        with pytest.raises(WeightsError, match=extra.replace("\n", ".")):
            read_ada_pickle(bad)
