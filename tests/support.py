"""Helpers shared by several test modules: test-side models of the official file formats (rosinality,
stylegan2-ada pickles, HyperStyle and e4e checkpoints), tiny generators and the command-line runner. Tests
import these from here, never from another test module."""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import read_keys, tiny_config
from gantune.accel import accelerate
from gantune.cli.app import main
from gantune.core import Generator, upfirdn2d
from gantune.methods.hyper import checkpoint as ck
from gantune.weights.rosinality import to_rosinality_state_dict


# --- tiny generators -----------------------------------------------------------------------------------------------

TINY64 = dict(resolution=64, channel_base=1024, channel_max=32)  # 4-32 px layers 32x32 (shared heads), 64 px 32->16, 16->16


def tiny_generator(seed: int | None = None, *, perturb: bool = False, **config) -> Generator:
    """A tiny generator (``tiny_config(**config)``) in eval mode: ``seed`` seeds torch first; ``perturb`` gives the
    noise strengths and biases non-trivial values (uniform in ±0.5), so a wrong mapping shows up."""
    if seed is not None:
        torch.manual_seed(seed)
    G = Generator(tiny_config(**config)).eval()
    if perturb:
        with torch.no_grad():
            for n, p in G.named_parameters():
                if "noise_strength" in n or n.endswith("bias"):
                    p.uniform_(-0.5, 0.5)
    return G


# --- from test_import_rosinality.py ------------------------------------------------------------------------------

BLUR = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4


def rosinality_layout(size: int, style_dim: int, n_mlp: int, ch: dict[int, int]) -> list[tuple[str, tuple]]:
    """(key, shape) of a rosinality g_ema in state_dict order."""
    log2 = int(math.log2(size))
    rows = []
    for i in range(1, n_mlp + 1):
        rows += [(f"style.{i}.weight", (style_dim, style_dim)), (f"style.{i}.bias", (style_dim,))]
    rows.append(("input.input", (1, ch[4], 4, 4)))

    def styled(name, cin, cout, up):
        r = [(f"{name}.conv.weight", (1, cout, cin, 3, 3))]
        if up:
            r.append((f"{name}.conv.blur.kernel", (4, 4)))
        r += [(f"{name}.conv.modulation.weight", (cin, style_dim)), (f"{name}.conv.modulation.bias", (cin,))]
        return r + [(f"{name}.noise.weight", (1,)), (f"{name}.activate.bias", (cout,))]

    def torgb(name, cin, up):
        r = [(f"{name}.bias", (1, 3, 1, 1))]
        if up:
            r.append((f"{name}.upsample.kernel", (4, 4)))
        return r + [
            (f"{name}.conv.weight", (1, 3, cin, 1, 1)),
            (f"{name}.conv.modulation.weight", (cin, style_dim)),
            (f"{name}.conv.modulation.bias", (cin,)),
        ]

    rows += styled("conv1", ch[4], ch[4], False) + torgb("to_rgb1", ch[4], False)
    for i in range(log2 - 2):
        r = 2 ** (i + 3)
        rows += styled(f"convs.{2 * i}", ch[r // 2], ch[r], True) + styled(f"convs.{2 * i + 1}", ch[r], ch[r], False)
    for i in range(log2 - 2):
        rows += torgb(f"to_rgbs.{i}", ch[2 ** (i + 3)], True)
    for j in range((log2 - 2) * 2 + 1):
        s = 2 ** ((j + 5) // 2)
        rows.append((f"noises.noise_{j}", (1, 1, s, s)))
    return rows


def random_rosinality(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with plausible scales for every key; FIR kernels set to their required value."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout:
        if key.endswith(("blur.kernel", "upsample.kernel")):
            sd[key] = BLUR.clone()
        elif key.startswith("style.") and key.endswith("weight"):
            sd[key] = torch.randn(shape, generator=g) / 0.01  # stored N(0,1)/lr_mul
        elif key.startswith("style."):
            sd[key] = torch.randn(shape, generator=g) * 10  # effective bias ×0.01
        elif key.endswith("modulation.bias"):
            sd[key] = 1 + 0.3 * torch.randn(shape, generator=g)  # includes the +1
        elif key.endswith(("noise.weight", "activate.bias", "to_rgb1.bias")) or key.endswith(".bias"):
            sd[key] = 0.5 * torch.randn(shape, generator=g)
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


TINY = dict(size=32, style_dim=16, n_mlp=3, ch={4: 16, 8: 16, 16: 8, 32: 4})  # channel_base 128, channel_max 16


def ref_upfirdn(x, k, up, pad0, pad1):
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
    else:
        y = x
    y = F.pad(y, (pad0, pad1, pad0, pad1))
    kf = torch.flip(k, (0, 1))  # a true convolution
    out = F.conv2d(y.reshape(n * c, 1, y.shape[2], y.shape[3]), kf[None, None])
    return out.reshape(n, c, out.shape[2], out.shape[3])


def ref_mapping(sd, z, n_mlp, lr_mul=0.01):
    x = z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        W, b = sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]
        x = F.linear(x, W * (lr_mul / math.sqrt(W.shape[1])), b * lr_mul)
        x = F.leaky_relu(x, 0.2) * math.sqrt(2)
    return x


def ref_modconv(sd, name, x, w, demod, up):
    weight = sd[f"{name}.conv.weight"][0]  # (out, in, k, k)
    mw, mb = sd[f"{name}.conv.modulation.weight"], sd[f"{name}.conv.modulation.bias"]
    s = F.linear(w, mw / math.sqrt(mw.shape[1]), mb)  # EqualLinear, lr_mul 1, bias stored with the +1
    out_ch, in_ch, k, _ = weight.shape
    outs = []
    for b in range(x.shape[0]):
        wb = weight / math.sqrt(in_ch * k * k) * s[b][None, :, None, None]
        if demod:
            wb = wb * torch.rsqrt((wb**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b : b + 1]
        if up:
            y = F.conv_transpose2d(xb, wb.transpose(0, 1), stride=2, padding=0)  # not flipped
            y = ref_upfirdn(y, sd[f"{name}.conv.blur.kernel"], 1, 1, 1)
        else:
            y = F.conv2d(xb, wb, padding=k // 2)
        outs.append(y)
    return torch.cat(outs)


def ref_styled(sd, name, x, w, noise, up):
    y = ref_modconv(sd, name, x, w, True, up)
    y = y + sd[f"{name}.noise.weight"] * noise
    return F.leaky_relu(y + sd[f"{name}.activate.bias"][None, :, None, None], 0.2) * math.sqrt(2)


def ref_torgb(sd, name, x, w, skip):
    y = ref_modconv(sd, name, x, w, False, False) + sd[f"{name}.bias"]
    if skip is not None:
        y = y + ref_upfirdn(skip, sd[f"{name}.upsample.kernel"], 2, 2, 1)
    return y


def reference_forward(sd, latent):
    """rosinality Generator([latent], input_is_latent=True, randomize_noise=False) for W+ latents (B, n, dim)."""
    n_up = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    noises = [sd[f"noises.noise_{j}"] for j in range(2 * n_up + 1)]
    x = sd["input.input"].repeat(latent.shape[0], 1, 1, 1)
    x = ref_styled(sd, "conv1", x, latent[:, 0], noises[0], False)
    skip = ref_torgb(sd, "to_rgb1", x, latent[:, 1], None)
    i = 1
    for b in range(n_up):
        x = ref_styled(sd, f"convs.{2 * b}", x, latent[:, i], noises[1 + 2 * b], True)
        x = ref_styled(sd, f"convs.{2 * b + 1}", x, latent[:, i + 1], noises[2 + 2 * b], False)
        skip = ref_torgb(sd, f"to_rgbs.{b}", x, latent[:, i + 2], skip)
        i += 2
    return skip


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4):
    """max |a - b| <= tol·(1 + max |b|) (torch.testing.assert_close imports torch.distributed: seconds)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= tol * (1 + b.abs().max().item()), f"max |diff| {err:.3g}"


# --- from test_import_ada.py -------------------------------------------------------------------------------------

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


def build_network(sd: dict, reconstruct, EasyDict, init_kwargs: dict, extra_state: dict | None = None,
                  layer_state: dict | None = None):
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
        state.update((layer_state or {}).get(class_name, {}))  # attributes like conv_clamp / use_fp16
        return FakePersistent(reconstruct, class_name, state)

    G = make("", root, "Generator")
    G.state["_init_kwargs"] = EasyDict(init_kwargs)
    # a non-persistent buffer must not appear in the state dict
    G.state["_buffers"]["scratch"] = torch.zeros(3)
    G.state["_non_persistent_buffers_set"] = {"scratch"}
    G.state.update(extra_state or {})
    return G


def write_ada_pickle(path, sd, *, z_dim, n_mlp, res, extra_state=None, c_dim=0, synthesis=None, layer_state=None):
    with fake_nvidia_modules() as (persistence, EasyDict):
        kwargs = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=z_dim, img_resolution=res, img_channels=3,
            mapping_kwargs=EasyDict(num_layers=n_mlp), synthesis_kwargs=EasyDict(
                channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256, architecture="skip",
                **(synthesis or {})),
        )
        G_ema = build_network(sd, persistence._reconstruct_persistent_obj, EasyDict, kwargs, extra_state, layer_state)
        data = dict(
            training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip"),
            G=G_ema, D=None, G_ema=G_ema, augment_pipe=None,
        )
        with open(path, "wb") as f:
            pickle.dump(data, f)
    assert not any(n in sys.modules for n in FAKE_MODULES)


def rosinality_to_ada(ros: dict, size: int, n_mlp: int, w_avg: torch.Tensor) -> OrderedDict:
    """Test-side conversion following stylegan2-ada-pytorch's published key names (independent of gantune's tables)."""
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


# --- from test_hyper_model.py ------------------------------------------------------------------------------------

CLAIMED14 = [5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24]


DEFAULT17 = [0, 2, 3] + CLAIMED14


def official_meta_state(name: str) -> dict:
    """The official key listing as meta tensors, aliases sharing the shared tensors (as torch.save writes them)."""
    rows = read_keys(name)
    sd = {k: torch.empty(s, dtype=getattr(torch, dt), device="meta") for k, s, dt in rows if ".hypernet." not in k}
    for k, _, _ in rows:
        if ".hypernet." in k:
            sd[k] = sd["shared_weight_hypernet." + k.split(".hypernet.")[1]]
    assert len(sd) == len(rows)
    return sd


class RecordingHypernet(torch.nn.Module):
    """Returns fixed offsets per call and records its inputs (to check the loop against the reference)."""

    input_size = 256  # as the official hypernetwork

    def __init__(self, offsets):
        super().__init__()
        self.offsets, self.inputs = offsets, []

    def forward(self, x, y_hat):
        self.inputs.append((x.clone(), y_hat.clone()))
        return self.offsets[len(self.inputs) - 1]


def write_tiny_official_files(tmp_path, G, hn, enc, latent_avg, *, legacy=False, opts=None, enc_opts=None):
    """hyperstyle_tiny.pt and w_encoder_tiny.pt (with its decoder) in the official layouts; ``opts`` / ``enc_opts``
    are added to the files' opts, ``legacy`` writes the W-encoder in torch's pre-1.6 serialization."""
    p_hs = ck.write_hyperstyle_file(
        tmp_path / "hyperstyle_tiny.pt", G, hn, latent_avg, global_step=5000, best_val_loss=None,
        opts={"layers_to_tune": ck.layers_to_tune(hn), "output_size": 64, "encoder_type": "SharedWeightsHyperNetResNet",
              "device": "cuda:0", "input_nc": 6, **(opts or {})})
    p_enc = ck.write_w_encoder_file(tmp_path / "w_encoder_tiny.pt", enc, latent_avg[0], G=G, legacy_format=legacy,
                                    opts={"encoder_type": "WEncoder", **(enc_opts or {})})
    return p_hs, p_enc


# --- from test_e4e.py --------------------------------------------------------------------------------------------

def official_encoder_state(*, fpn: bool, width=64, units=(3, 4, 14, 3), num_ws=18, w_dim=512, in_ch=None,
                           input_size=256, device="meta", gen: torch.Generator | None = None) -> dict:
    """``encoder.*`` keys (without the prefix) of Encoder4Editing (fpn) / ProgressiveBackboneEncoder, in order."""
    in_ch = in_ch or (3 if fpn else 6)
    shapes: list[tuple[str, tuple, torch.dtype]] = []

    def bn(p, c):
        shapes.extend([(f"{p}.weight", (c,), torch.float32), (f"{p}.bias", (c,), torch.float32),
                       (f"{p}.running_mean", (c,), torch.float32), (f"{p}.running_var", (c,), torch.float32),
                       (f"{p}.num_batches_tracked", (), torch.int64)])

    shapes.append(("input_layer.0.weight", (width, in_ch, 3, 3), torch.float32))
    bn("input_layer.1", width)
    shapes.append(("input_layer.2.weight", (width,), torch.float32))
    depths = [width * m for m in (1, 2, 4, 8)]
    i, cin = 0, width
    for d, n in zip(depths, units):
        for _ in range(n):
            if cin != d:
                shapes.append((f"body.{i}.shortcut_layer.0.weight", (d, cin, 1, 1), torch.float32))
                bn(f"body.{i}.shortcut_layer.1", d)
            bn(f"body.{i}.res_layer.0", cin)
            shapes.append((f"body.{i}.res_layer.1.weight", (d, cin, 3, 3), torch.float32))
            shapes.append((f"body.{i}.res_layer.2.weight", (d,), torch.float32))
            shapes.append((f"body.{i}.res_layer.3.weight", (d, d, 3, 3), torch.float32))
            bn(f"body.{i}.res_layer.4", d)
            shapes.append((f"body.{i}.res_layer.5.fc1.weight", (d // 16, d, 1, 1), torch.float32))
            shapes.append((f"body.{i}.res_layer.5.fc2.weight", (d, d // 16, 1, 1), torch.float32))
            i, cin = i + 1, d
    base = int(math.log2(input_size // 16))
    for s in range(num_ws):
        n = base + ((0 if s < 3 else 1 if s < 7 else 2) if fpn else 0)
        for c in range(n):
            shapes.append((f"styles.{s}.convs.{2 * c}.weight", (w_dim, depths[3] if c == 0 else w_dim, 3, 3), torch.float32))
            shapes.append((f"styles.{s}.convs.{2 * c}.bias", (w_dim,), torch.float32))
        shapes.append((f"styles.{s}.linear.weight", (w_dim, w_dim), torch.float32))
        shapes.append((f"styles.{s}.linear.bias", (w_dim,), torch.float32))
    if fpn:
        shapes += [("latlayer1.weight", (depths[3], depths[2], 1, 1), torch.float32),
                   ("latlayer1.bias", (depths[3],), torch.float32),
                   ("latlayer2.weight", (depths[3], depths[1], 1, 1), torch.float32),
                   ("latlayer2.bias", (depths[3],), torch.float32)]
    sd = {}
    for k, s, dt in shapes:
        if device == "meta":
            sd[k] = torch.empty(s, dtype=dt, device="meta")
        elif dt == torch.int64:
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(s, generator=gen) + 0.5
        elif ".2.weight" in k and ("res_layer" in k or "input_layer" in k):  # PReLU slopes
            sd[k] = torch.rand(s, generator=gen) * 0.5
        elif k.endswith("weight") and len(s) == 4:
            sd[k] = torch.randn(s, generator=gen) / math.sqrt(s[1] * s[2] * s[3])
        else:
            sd[k] = torch.randn(s, generator=gen) * (0.3 if len(s) == 1 else 1.0)
    return sd


E4E_TINY = dict(width=16, units=(1, 2, 1, 1), input_size=64)  # a tiny e4e / ReStyle encoder


def _tiny_file(tmp_path, G, *, fpn, seed=0, latent_avg=True, opts=None):
    g = torch.Generator().manual_seed(seed)
    enc = official_encoder_state(fpn=fpn, num_ws=G.num_ws, w_dim=G.cfg.w_dim, device="cpu", gen=g, **E4E_TINY)
    dec = to_rosinality_state_dict(G)
    obj = {"state_dict": {**{"encoder." + k: v for k, v in enc.items()}, **{"decoder." + k: v for k, v in dec.items()}},
           "opts": {"input_size": E4E_TINY["input_size"], **(opts or {})}, "global_step": 3, "best_val_loss": None}
    la = torch.randn(G.num_ws, G.cfg.w_dim, generator=g)
    if latent_avg:
        obj["latent_avg"] = la
    p = tmp_path / ("e4e.pt" if fpn else "restyle.pt")
    torch.save(obj, p)
    return p, enc, la


# --- from test_core_folded.py ------------------------------------------------------------------------------------

def _generator(overparam: bool = False) -> Generator:
    # 64 px with 32 channels: the large maps take oneDNN's fused ops, the small ones ATen's native convolution
    G = tiny_generator(0, perturb=True, resolution=64, channel_base=2048, latent_rows=32 if overparam else 0,
                       use_noise=not overparam)
    return accelerate(G)  # the paths this machine's loaded generators take


# --- from test_bad_inputs.py -------------------------------------------------------------------------------------

def run_cli(argv, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    return (e.value.code or 0), [ln for ln in err.splitlines() if ln.strip()]


# --- from test_align.py ------------------------------------------------------------------------------------------

def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def lfw_face(i: int, scale: int) -> Image.Image:
    """An LFW face (25x25 grey in skimage) upscaled with LANCZOS so the detector can see it."""
    from skimage import data

    arr = (data.lfw_subset()[i] * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "L").resize((25 * scale, 25 * scale), Image.LANCZOS)


def two_faces() -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
    """Grey canvas with a 200 px face at left and a 275 px face at right; returns the photo and both paste offsets."""
    canvas = Image.new("L", (520, 320), 128)
    small_at, big_at = (20, 60), (245, 20)
    canvas.paste(lfw_face(0, 8), small_at)
    canvas.paste(lfw_face(1, 11), big_at)
    return canvas.convert("RGB"), small_at, big_at


def reference_modconv(x, weight, mod, demod, up, kernel):
    """Straightforward per-sample loop with an explicit (out, in) modulation matrix (independent of the fast code)."""
    outs = []
    out_ch, in_ch, k, _ = weight.shape
    for b in range(x.shape[0]):
        w = weight * mod[b][:, :, None, None] / math.sqrt(in_ch * k * k)
        if demod:
            w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b : b + 1]
        if up == 2:
            y = F.conv_transpose2d(xb, w.transpose(0, 1), stride=2)
            y = upfirdn2d(y, kernel * 4, pad=(1, 1))
        else:
            y = F.conv2d(xb, w, padding=k // 2)
        outs.append(y)
    return torch.cat(outs)
