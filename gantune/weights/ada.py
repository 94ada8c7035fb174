"""NVIDIA stylegan2-ada-pytorch network pickles (``.pkl``), read without NVIDIA's code and without running any.

A network pickle is a plain ``pickle`` of ``dict(training_set_kwargs, G, D, G_ema, augment_pipe)``; each network is a
"persistent class" whose reduce function ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` would ``exec``
the network source stored in ``meta['module_src']`` (OFFICIAL_FORMATS.md §2.1). :class:`AdaUnpickler` resolves only an
allow-list of globals (§2.4): the persistent-class constructor becomes :class:`PersistentStub`, which keeps the
module ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, …) and never looks at the source;
``dnnlib.util.EasyDict`` becomes a dict; tensors go through torch's rebuild functions, and each storage (a nested
legacy ``torch.save`` blob) through ``torch.load(weights_only=True)``. Anything else raises a :class:`WeightsError`
naming the global.

Key mapping ``G_ema`` -> gantune (§2.2–2.3): ``mapping.fc{i}.*`` -> ``mapping.fcs.{i}.*``, ``mapping.w_avg`` ->
``mapping.w_avg``, ``synthesis.b4.const`` -> ``synthesis.const``, ``synthesis.b{r}.{conv0,conv1,torgb}.*`` ->
``synthesis.layers.b{r}.{...}.*`` with the same field names (ADA and gantune store conv weights alike: no flip), and
every ``resample_filter`` is checked == outer([1,3,3,1])/64 and dropped.
"""

from __future__ import annotations

import io
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import WeightsError
from .keymap import KeyRule, export_state, fit_channels, generator_from_state, import_state
from .safe_pickle import AllowListUnpickler, _numpy_globals

SOURCE = "stylegan2-ada"

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


def _allowed_globals() -> dict[tuple[str, str], object]:
    import torch._utils as tu

    allowed: dict[tuple[str, str], object] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDictStandIn,
        ("dnnlib", "EasyDict"): EasyDictStandIn,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(tu, name):
            allowed[("torch._utils", name)] = getattr(tu, name)
    for g in _numpy_globals():
        obj, qual = g if isinstance(g, tuple) else (g, f"{g.__module__}.{g.__name__}")
        mod, _, name = qual.rpartition(".")
        allowed[(mod, name)] = obj
    return allowed


class AdaUnpickler(AllowListUnpickler):
    def __init__(self, file, *, source: str = "network pickle") -> None:
        super().__init__(file, _allowed_globals(), source=source)


def read_ada_pickle(path: str | os.PathLike) -> tuple["OrderedDict[str, torch.Tensor]", dict]:
    """(``G_ema`` state dict, ``G_ema`` init kwargs as plain dicts) from a stylegan2-ada-pytorch ``.pkl``."""
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
        raise WeightsError(
            f"{path.name} is an old TensorFlow StyleGAN2 pickle (a tuple of 3 networks)",
            hint="convert it with stylegan2-ada-pytorch's legacy.py or rosinality's convert_weight.py first",
        )
    if not isinstance(data, Mapping) or "G_ema" not in data:
        keys = ", ".join(map(str, list(data)[:8])) if isinstance(data, Mapping) else type(data).__name__
        raise WeightsError(f"{path.name} has no 'G_ema' network (top level: {keys})")
    G = data["G_ema"]
    if not isinstance(G, PersistentStub):
        raise WeightsError(f"{path.name}: 'G_ema' is a {type(G).__name__}, not a persistent network")
    if G.class_name != "Generator":
        raise WeightsError(f"{path.name}: 'G_ema' is a {G.class_name}, expected Generator")
    return G.state_dict(), G.init_kwargs


# --------------------------------------------------------------------------------------------------------------------
# mapping
# --------------------------------------------------------------------------------------------------------------------
def _resample_filter() -> torch.Tensor:
    from ..core import make_kernel

    return make_kernel()


def _check_supported(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping) -> None:
    embed = sorted(k for k in sd if k.startswith("mapping.embed."))
    c_dim = int(init_kwargs.get("c_dim") or 0)
    if embed or c_dim > 0:
        raise WeightsError(
            f"this is a class-conditional generator (c_dim={c_dim}, keys {', '.join(embed) or 'mapping.embed.*'})",
            hint="gantune supports unconditional StyleGAN2 generators only",
        )
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


def infer_ada_config(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping | None = None, *, extra: dict | None = None):
    from ..core import GeneratorConfig

    init_kwargs = init_kwargs or {}
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    fcs = sorted(int(m.group(1)) for k in sd if (m := _FC.match(k)))
    if not blocks or not fcs or "mapping.fc0.weight" not in sd or "synthesis.b4.const" not in sd:
        raise WeightsError(
            "not a stylegan2-ada Generator state dict: needs synthesis.b{res}.*, synthesis.b4.const and mapping.fc{i}.*",
        )
    channels = {4: int(sd["synthesis.b4.const"].shape[0])}
    for res in blocks[1:]:
        for key, dim in ((f"synthesis.b{res}.conv0.weight", 0), (f"synthesis.b{res}.conv1.weight", 0),
                         (f"synthesis.b{res}.torgb.weight", 1)):
            if key in sd:
                channels[res] = int(sd[key].shape[dim])
                break
        else:
            raise WeightsError(f"stylegan2-ada state dict: missing synthesis.b{res}.conv0.weight / conv1.weight")
    base, cmax = fit_channels(channels, SOURCE)
    mk = init_kwargs.get("mapping_kwargs") or {}
    fc_last = f"mapping.fc{fcs[-1]}.weight"
    rgb = sd.get("synthesis.b4.torgb.weight")
    return GeneratorConfig(
        resolution=blocks[-1],
        z_dim=int(sd["mapping.fc0.weight"].shape[1]),
        w_dim=int(sd[fc_last].shape[0]),
        mapping_layers=fcs[-1] + 1,
        mapping_lr_mul=float(mk.get("lr_multiplier", 0.01)),
        channel_base=base,
        channel_max=cmax,
        use_noise=True,
        img_channels=int(rgb.shape[0]) if rgb is not None else int(init_kwargs.get("img_channels", 3)),
        extra=dict(extra or {}),
    )


def ada_rules(cfg) -> list[KeyRule]:
    """Every key of an ADA ``G_ema`` state dict for this config, in the official order (synthesis, then mapping)."""
    from ..core import layer_specs

    filt = _resample_filter()
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
    dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
    for i in range(cfg.mapping_layers):
        rules.append(KeyRule(f"mapping.fc{i}.weight", f"mapping.fcs.{i}.weight", (dims[i + 1], dims[i])))
        rules.append(KeyRule(f"mapping.fc{i}.bias", f"mapping.fcs.{i}.bias", (dims[i + 1],)))
    return rules


def from_ada_state_dict(sd: Mapping[str, torch.Tensor], init_kwargs: Mapping | None = None):
    """Build a gantune :class:`Generator` (eval, CPU) from an ADA ``G_ema`` state dict (+ its init kwargs)."""
    init_kwargs = dict(init_kwargs or {})
    _check_supported(sd, init_kwargs)
    cfg = infer_ada_config(sd, init_kwargs, extra={"source_format": "ada-pkl", "w_avg": "file"})
    native = import_state(sd, ada_rules(cfg), SOURCE)
    return generator_from_state(cfg, native)


def to_ada_state_dict(G) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_ada_state_dict` (ADA key names and order); for tests and exports."""
    return export_state(G.state_dict(), ada_rules(G.cfg))


def load_ada(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """(Generator on ``device``, info dict) from a stylegan2-ada-pytorch network pickle."""
    from .rosinality import import_info

    sd, init_kwargs = read_ada_pickle(path)
    G = from_ada_state_dict(sd, init_kwargs)
    info = import_info(G, "ada-pkl", part="G_ema")
    info["init_kwargs"] = _plain(init_kwargs)
    sk = init_kwargs.get("synthesis_kwargs") or {}
    if sk.get("num_fp16_res") or sk.get("conv_clamp"):
        info["note"] = (
            f"the original runs its top {sk.get('num_fp16_res', 0)} resolutions in fp16 with conv_clamp="
            f"{sk.get('conv_clamp')}; gantune imports it as fp32 without a clamp, like the rosinality conversion"
        )
    return G.to(device), info
