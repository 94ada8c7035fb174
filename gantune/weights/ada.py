"""NVIDIA stylegan2-ada-pytorch network pickles (``.pkl``), read without NVIDIA's code and without running any.

A network pickle is a plain ``pickle`` of ``dict(training_set_kwargs, G, D, G_ema, augment_pipe)``; each network is a
"persistent class" whose reduce function ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` would ``exec``
the network source stored in ``meta['module_src']``. :class:`AdaUnpickler` resolves only an
allow-list of globals: the persistent-class constructor becomes :class:`PersistentStub`, which keeps the
module ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, …) and never looks at the source;
``dnnlib.util.EasyDict`` becomes a dict; tensors go through torch's rebuild functions, and each storage (a nested
legacy ``torch.save`` blob) through ``torch.load(weights_only=True)``. Anything else raises a :class:`WeightsError`
naming the global.

Key mapping ``G_ema`` -> gantune: ``mapping.fc{i}.*`` -> ``mapping.fcs.{i}.*``, ``mapping.w_avg`` ->
``mapping.w_avg``, ``synthesis.b4.const`` -> ``synthesis.const``, ``synthesis.b{r}.{conv0,conv1,torgb}.*`` ->
``synthesis.layers.b{r}.{...}.*`` with the same field names (ADA and gantune store conv weights alike: no flip), and
every ``resample_filter`` is checked == outer([1,3,3,1])/64 and dropped; a class-conditional network's
``mapping.embed.*`` keeps its name. ``conv_clamp`` (the layers' own attributes, else ``synthesis_kwargs``),
``c_dim`` and ``num_fp16_res`` go into the config (see docs/formats.md).
"""

from __future__ import annotations

import io
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..core import GeneratorConfig, layer_specs, make_kernel
from ..errors import WeightsError
from .keymap import KeyRule, export_state, fit_channels, generator_from_state, import_state
from .rosinality import import_info
from .safe_pickle import AllowListUnpickler

try:
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy 1
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

SOURCE = "stylegan2-ada"
TF_HINT = ("convert it to a PyTorch pickle first with stylegan2-ada-pytorch's legacy.py "
           "(python legacy.py --source=FILE.pkl --dest=converted.pkl), then give gantune the converted file")
SG3_HINT = ("gantune supports StyleGAN2 generators only; use a StyleGAN2 or StyleGAN2-ADA network pickle "
            "(e.g. stylegan2-ffhq-1024x1024.pkl)")

_BLOCK = re.compile(r"^synthesis\.b(\d+)\.")
_FC = re.compile(r"^mapping\.fc(\d+)\.weight$")


# --------------------------------------------------------------------------------------------------------------------
# reading the pickle
# --------------------------------------------------------------------------------------------------------------------
class EasyDictStandIn(dict):
    """Stands for ``dnnlib.util.EasyDict`` (a dict with attribute access) without importing dnnlib."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class PersistentStub:
    """What a persistent network object unpickles to: its class name and module state. ``module_src`` is kept as
    text only (it is never compiled or executed)."""

    def __init__(self, meta) -> None:
        if not isinstance(meta, dict) or meta.get("type") != "class":
            kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
            raise WeightsError(f"unsupported persistent object of type {kind!r} in the network pickle")
        self.class_name = str(meta.get("class_name"))
        self.version = meta.get("version")
        self.module_src = meta.get("module_src")  # text; never executed
        self.state = meta.get("state") or {}

    def __setstate__(self, state) -> None:  # only if a pickle ever BUILDs on top of the stub
        if isinstance(state, dict):
            self.state.update(state)

    @property
    def init_kwargs(self) -> dict:
        return _plain(self.state.get("_init_kwargs") or {})

    def state_dict(self, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
        """Same keys and order as ``nn.Module.state_dict()``: own parameters, persistent buffers, then children."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, p in (self.state.get("_parameters") or {}).items():
            if p is not None:
                out[prefix + name] = p.detach() if isinstance(p, torch.Tensor) else p
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, b in (self.state.get("_buffers") or {}).items():
            if b is not None and name not in skip:
                out[prefix + name] = b
        for name, child in (self.state.get("_modules") or {}).items():
            if child is None:
                continue
            if not isinstance(child, PersistentStub):
                raise WeightsError(f"network pickle: submodule {prefix + name} is a {type(child).__name__}")
            out.update(child.state_dict(prefix + name + "."))
        return out

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"


def _plain(v):
    """EasyDict/OrderedDict/numpy scalars -> plain dicts and Python numbers (JSON-friendly)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0 and not isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def _reconstruct_persistent_obj(meta):
    return PersistentStub(meta)


def _load_storage_from_bytes(b: bytes):
    """Stands for ``torch.storage._load_from_bytes``: the blob is a legacy torch.save of one storage."""
    if not isinstance(b, (bytes, bytearray)):
        raise WeightsError("network pickle: a tensor storage is not a byte string")
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


# What a network pickle written by stylegan2-ada-pytorch's training loop holds (Python 3.7/3.8 with pickle protocol 3
# or 4, torch 1.7-1.9, numpy 1.x): the persistent-class constructor, EasyDicts, module dicts (OrderedDict; sets via
# ``builtins.set`` under protocol 3), parameters and tensors rebuilt by torch over storages pickled as legacy
# ``torch.save`` blobs, and numpy scalars / arrays (under numpy 1's ``numpy.core`` names, or numpy 2's ``numpy._core``
# where a file was re-saved). Nothing else is resolved.
_NUMPY_NAMES = ("numpy.core.multiarray", "numpy._core.multiarray")


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDictStandIn,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for mod in _NUMPY_NAMES:
        allowed[(mod, "scalar")] = _np_multiarray.scalar
        allowed[(mod, "_reconstruct")] = _np_multiarray._reconstruct
    return allowed


class AdaUnpickler(AllowListUnpickler):
    def __init__(self, file, *, source: str = "network pickle") -> None:
        super().__init__(file, _allowed_globals(), source=source)

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if module.startswith("dnnlib.tflib"):
            raise WeightsError(
                f"{self.source} is a TensorFlow StyleGAN2 / StyleGAN2-ADA network pickle ({module}.{name}), which "
                "gantune does not read", hint=TF_HINT)
        return super().find_class(module, name)


def read_ada_network(path: str | os.PathLike) -> PersistentStub:
    """The ``G_ema`` network of a stylegan2-ada-pytorch ``.pkl``, as a :class:`PersistentStub` (nothing run)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such file: {path}")
    with open(path, "rb") as f:
        try:
            data = AdaUnpickler(f, source=path.name).load()
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 - damaged pickles raise many kinds of errors
            raise WeightsError(
                f"{path.name} is not a readable network pickle ({type(e).__name__}: {str(e)[:160]})",
                hint="check that the download completed",
            ) from None
    if isinstance(data, tuple) and len(data) == 3:
        raise WeightsError(f"{path.name} is an old TensorFlow StyleGAN2 pickle (a tuple of 3 networks)", hint=TF_HINT)
    if not isinstance(data, Mapping) or "G_ema" not in data:
        keys = ", ".join(map(str, list(data)[:8])) if isinstance(data, Mapping) else type(data).__name__
        raise WeightsError(f"{path.name} has no 'G_ema' network (top level: {keys})")
    G = data["G_ema"]
    if not isinstance(G, PersistentStub):
        raise WeightsError(f"{path.name}: 'G_ema' is a {type(G).__name__}, not a persistent network")
    if G.class_name != "Generator":
        raise WeightsError(f"{path.name}: 'G_ema' is a {G.class_name}, expected Generator")
    return G


def read_ada_pickle(path: str | os.PathLike) -> tuple["OrderedDict[str, torch.Tensor]", dict]:
    """(``G_ema`` state dict, ``G_ema`` init kwargs as plain dicts) from a stylegan2-ada-pytorch ``.pkl``."""
    G = read_ada_network(path)
    return G.state_dict(), G.init_kwargs


def _submodules(stub: PersistentStub, prefix: str = ""):
    """(dotted name, stub) of every persistent module under ``stub``, depth first."""
    for name, child in (stub.state.get("_modules") or {}).items():
        if isinstance(child, PersistentStub):
            yield prefix + name, child
            yield from _submodules(child, prefix + name + ".")


def layer_settings(G: PersistentStub) -> dict:
    """What the network's own layers run with, read from their attributes: ``conv_clamp`` of every SynthesisLayer and
    ToRGBLayer (one value for all, or None), and ``fp16_blocks``, the synthesis blocks with ``use_fp16`` set.
    Attributes absent from the file read as None."""
    clamps, fp16 = {}, []
    for name, m in _submodules(G):
        if m.class_name in ("SynthesisLayer", "ToRGBLayer") and "conv_clamp" in m.state:
            clamps[name] = m.state["conv_clamp"]
        if m.class_name == "SynthesisBlock" and m.state.get("use_fp16"):
            fp16.append(name)
    values = {None if v is None else float(v) for v in clamps.values()}
    if len(values) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in list(clamps.items())[:4])
        raise WeightsError(f"the layers clamp their outputs differently ({shown}, …)",
                           hint="gantune keeps one conv_clamp for the whole generator")
    return {"conv_clamp": values.pop() if values else None, "clamp_layers": len(clamps), "fp16_blocks": fp16}


# --------------------------------------------------------------------------------------------------------------------
# mapping
# --------------------------------------------------------------------------------------------------------------------
def _stylegan3_kind(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping) -> str | None:
    """'stylegan3-t' / 'stylegan3-r' for a StyleGAN3 generator (SynthesisInput, L<i>_<size>_<ch> layers), else None."""
    if not any(k.startswith("synthesis.input.") or re.match(r"^synthesis\.L\d+_", k) for k in sd):
        return None
    sk = init_kwargs.get("synthesis_kwargs") or {}
    return "stylegan3-r" if sk.get("conv_kernel") == 1 or sk.get("use_radial_filters") else "stylegan3-t"


def _check_supported(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping) -> None:
    sg3 = _stylegan3_kind(sd, init_kwargs)
    if sg3:
        raise WeightsError(f"this is a StyleGAN3 generator ({sg3}: SynthesisInput and L0_… layers)", hint=SG3_HINT)
    c_dim = int(init_kwargs.get("c_dim") or 0)
    embed = sd.get("mapping.embed.weight")
    if c_dim > 0 and embed is None:
        raise WeightsError(f"the network says it is class-conditional (c_dim={c_dim}) but has no mapping.embed weights")
    if embed is not None and "c_dim" in init_kwargs and c_dim != int(embed.shape[-1]):
        raise WeightsError(f"conditional generator: c_dim={c_dim} in the network's arguments, but mapping.embed "
                           f"takes {int(embed.shape[-1])} classes")
    arch = (init_kwargs.get("synthesis_kwargs") or {}).get("architecture", "skip")
    skip_keys = sorted(k for k in sd if re.match(r"^synthesis\.b\d+\.skip\.", k))
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    rgb_blocks = {int(m.group(1)) for k in sd if (m := re.match(r"^synthesis\.b(\d+)\.torgb\.weight$", k))}
    if skip_keys:
        arch = "resnet"
    elif blocks and rgb_blocks and rgb_blocks != set(blocks):
        arch = "orig"
    if arch != "skip":
        raise WeightsError(
            f"this generator uses the '{arch}' synthesis architecture",
            hint="gantune (like HyperStyle's rosinality decoder) supports only the 'skip' architecture",
        )


def _channels(sd: Mapping[str, torch.Tensor], blocks: list[int]) -> dict[int, int]:
    channels = {4: int(sd["synthesis.b4.const"].shape[0])}
    for res in blocks[1:]:
        for key, dim in ((f"synthesis.b{res}.conv0.weight", 0), (f"synthesis.b{res}.conv1.weight", 0),
                         (f"synthesis.b{res}.torgb.weight", 1)):
            if key in sd:
                channels[res] = int(sd[key].shape[dim])
                break
        else:
            raise WeightsError(f"stylegan2-ada state dict: missing synthesis.b{res}.conv0.weight / conv1.weight")
    return channels


def infer_ada_config(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping | None = None, *,
                     layers: Mapping | None = None, extra: dict | None = None) -> GeneratorConfig:
    """The config of an ADA ``G_ema`` from its weights' shapes, its init kwargs and (``layers``, from
    :func:`layer_settings`) its layers' own attributes, which win over the init kwargs where both are present."""
    init_kwargs = init_kwargs or {}
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    fcs = sorted(int(m.group(1)) for k in sd if (m := _FC.match(k)))
    if not blocks or not fcs or "mapping.fc0.weight" not in sd or "synthesis.b4.const" not in sd:
        raise WeightsError(
            "not a stylegan2-ada Generator state dict: needs synthesis.b{res}.*, synthesis.b4.const and mapping.fc{i}.*",
        )
    base, cmax = fit_channels(_channels(sd, blocks), SOURCE)
    mk = init_kwargs.get("mapping_kwargs") or {}
    sk = init_kwargs.get("synthesis_kwargs") or {}
    embed = sd.get("mapping.embed.weight")
    c_dim, embed_dim = (int(embed.shape[1]), int(embed.shape[0])) if embed is not None else (0, 0)
    z_dim = int(sd["mapping.fc0.weight"].shape[1]) - embed_dim
    w_dim = int(sd[f"mapping.fc{fcs[-1]}.weight"].shape[0])
    if z_dim < 1:
        raise WeightsError("this conditional generator takes no z (z_dim=0)", hint="gantune needs a z input")
    layers = dict(layers or {})
    clamp = layers.get("conv_clamp") if layers.get("clamp_layers") else sk.get("conv_clamp")
    fp16 = len(layers["fp16_blocks"]) if layers.get("fp16_blocks") else int(sk.get("num_fp16_res") or 0)
    rgb = sd.get("synthesis.b4.torgb.weight")
    try:
        return GeneratorConfig(
            resolution=blocks[-1], z_dim=z_dim, w_dim=w_dim, mapping_layers=fcs[-1] + 1,
            mapping_lr_mul=float(mk.get("lr_multiplier", 0.01)), channel_base=base, channel_max=cmax, use_noise=True,
            img_channels=int(rgb.shape[0]) if rgb is not None else int(init_kwargs.get("img_channels", 3)),
            conv_clamp=None if clamp is None else float(clamp), c_dim=c_dim,
            embed_features=embed_dim if embed_dim != w_dim else 0, num_fp16_res=fp16, extra=dict(extra or {}),
        )
    except (TypeError, ValueError) as e:
        raise WeightsError(f"stylegan2-ada network: {e}") from None


def ada_rules(cfg: GeneratorConfig) -> list[KeyRule]:
    """Every key of an ADA ``G_ema`` state dict for this config, in the official order (synthesis, then mapping)."""
    filt = make_kernel()
    specs = layer_specs(cfg)
    rules: list[KeyRule] = []
    for res in cfg.block_resolutions:
        if res == 4:
            rules.append(KeyRule("synthesis.b4.const", "synthesis.const", (cfg.channels(4), 4, 4)))
        rules.append(KeyRule(f"synthesis.b{res}.resample_filter", None, (4, 4), expect=filt))
        for s in (s for s in specs if s.res == res):
            a, n = f"synthesis.{s.name}", f"synthesis.layers.{s.name}"
            rules.append(KeyRule(f"{a}.weight", f"{n}.weight", (s.out_ch, s.in_ch, s.kernel, s.kernel)))
            if s.kind == "conv":
                rules.append(KeyRule(f"{a}.noise_strength", f"{n}.noise_strength", ()))
                rules.append(KeyRule(f"{a}.bias", f"{n}.bias", (s.out_ch,)))
                rules.append(KeyRule(f"{a}.resample_filter", None, (4, 4), expect=filt))
                rules.append(KeyRule(f"{a}.noise_const", f"{n}.noise_const", (s.res, s.res)))
            else:
                rules.append(KeyRule(f"{a}.bias", f"{n}.bias", (s.out_ch,)))
            rules.append(KeyRule(f"{a}.affine.weight", f"{n}.affine.weight", (s.in_ch, cfg.w_dim)))
            rules.append(KeyRule(f"{a}.affine.bias", f"{n}.affine.bias", (s.in_ch,)))
    rules.append(KeyRule("mapping.w_avg", "mapping.w_avg", (cfg.w_dim,)))
    if cfg.conditional:
        rules.append(KeyRule("mapping.embed.weight", "mapping.embed.weight", (cfg.embed_dim, cfg.c_dim)))
        rules.append(KeyRule("mapping.embed.bias", "mapping.embed.bias", (cfg.embed_dim,)))
    dims = [cfg.z_dim + cfg.embed_dim] + [cfg.w_dim] * cfg.mapping_layers
    for i in range(cfg.mapping_layers):
        rules.append(KeyRule(f"mapping.fc{i}.weight", f"mapping.fcs.{i}.weight", (dims[i + 1], dims[i])))
        rules.append(KeyRule(f"mapping.fc{i}.bias", f"mapping.fcs.{i}.bias", (dims[i + 1],)))
    return rules


def from_ada_state_dict(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping | None = None, *,
                        layers: Mapping | None = None):
    """Build a gantune :class:`Generator` (eval, CPU) from an ADA ``G_ema`` state dict (+ its init kwargs and its
    layers' attributes, see :func:`layer_settings`)."""
    init_kwargs = dict(init_kwargs or {})
    _check_supported(sd, init_kwargs)
    cfg = infer_ada_config(sd, init_kwargs, layers=layers, extra={"source_format": "ada-pkl", "w_avg": "file"})
    native = import_state(sd, ada_rules(cfg), SOURCE)
    return generator_from_state(cfg, native)


def to_ada_state_dict(G) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_ada_state_dict` (ADA key names and order); for tests and exports."""
    return export_state(G.state_dict(), ada_rules(G.cfg))


def load_note(cfg: GeneratorConfig) -> str:
    """What the original network runs with that a float32 gantune render may differ by (the load note)."""
    clamp = (f"clamps every layer's output to ±{cfg.conv_clamp:g} (conv_clamp), which gantune applies too"
             if cfg.conv_clamp is not None else "does not clamp its layers (no conv_clamp)")
    fp16 = (f"runs its top {cfg.num_fp16_res} resolutions in fp16 on a GPU, which gantune renders in float32 "
            "(reported about 1e-2 apart at most on the [-1, 1] scale at 256 px; not measured by gantune)"
            if cfg.num_fp16_res else "runs in float32")
    cond = f"; class-conditional with {cfg.c_dim} classes (give --class)" if cfg.conditional else ""
    return f"the original {clamp} and {fp16}{cond}"


def load_ada(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """(Generator on ``device``, info dict) from a stylegan2-ada-pytorch network pickle."""
    stub = read_ada_network(path)
    init_kwargs = stub.init_kwargs
    G = from_ada_state_dict(stub.state_dict(), init_kwargs, layers=layer_settings(stub))
    info = import_info(G, "ada-pkl", part="G_ema")
    info["init_kwargs"] = _plain(init_kwargs)
    info["note"] = load_note(G.cfg)
    return G.to(device), info
