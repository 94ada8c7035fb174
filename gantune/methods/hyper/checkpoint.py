"""Import and export of the official HyperStyle files: ``hyperstyle_*.pt`` (hypernetwork + generator + latent_avg)
and ``faces_w_encoder.pt`` (W-encoder + a generator that is checked and ignored).

Files are recognised by :func:`gantune.weights.formats.identify` (the one classifier, whose names the error messages
use), read with ``torch.load(weights_only=True)`` (through :func:`gantune.weights.safe_torch_load`), and the
architecture is inferred from the keys (never from the stored ``opts``). Every key goes through the key-rule table of
:mod:`gantune.weights.keymap`, the one the generator importers use: unknown or missing keys are an error that names
them, and export walks the same table backwards. :func:`write_hyperstyle_file` and :func:`write_w_encoder_file` write
the two layouts (atomically); every writer of such files in gantune and its tests goes through them.

Official hypernetwork keys (prefix ``hypernet.`` in the file) -> gantune :class:`HyperNetwork`:

====================================================  =================================================
``conv1.* bn1.* relu.weight body.{0..15}.*``           ``backbone.*`` (same names below)
``shared_weight_hypernet.{w1,b1,w2,b2}``               ``shared_fc.*``
``refinement_blocks.{j}.hypernet.{w1,b1,w2,b2}``       aliases of the shared FCs (checked identical, dropped)
``refinement_blocks.{j}.{convs.*,linear.*}``           ``heads.<layer>.*`` (``shared`` head)
``refinement_blocks.{j}.{convs.*,output.1.*}``         ``heads.<layer>.*`` (``channel`` head)
``refinement_blocks.{j}.{convs.*,output.0.*}``         ``heads.<layer>.*`` (``torgb`` head)
====================================================  =================================================

``j`` is the official delta-list index; ``<layer>`` is the gantune layer whose spec has ``hyperstyle_index == j``.
The ``decoder.*`` keys follow the rosinality table (:func:`gantune.weights.rosinality.rosinality_rules`); the
W-encoder's ``encoder.*`` keys are gantune's :class:`WEncoder` names.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core import Generator, layer_specs
from ...core.specs import LayerSpec
from ...errors import WeightsError
from ...io.atomic import atomic_path
from ...weights.checksums import file_sha256
from ...weights.download import resolve
from ...weights.formats import hypernet_heads, identify
from ...weights.keymap import (
    KeyRule,
    dropped,
    export_state,
    generator_from_state,
    import_state,
    module_rules,
    prefixed,
    strip_prefix,
)
from ...weights.rosinality import infer_config, rosinality_rules, to_rosinality_state_dict
from ...weights.safe_pickle import safe_torch_load
from .hypernet import INPUT_SIZE, HyperNetwork, TunedLayer, head_key
from .wencoder import WEncoder, stage_depths

DEFAULT_HYPERSTYLE = "hyperstyle-ffhq"  # registry names (weights.toml)
DEFAULT_W_ENCODER = "w-encoder-ffhq"

_SHARED = ("w1", "b1", "w2", "b2")  # the shared fully-connected layers, in the official order


# --- reading files -----------------------------------------------------------------------------------------------------
def resolve_path(spec: str | os.PathLike) -> Path:
    """A registry name, URL or path -> local file."""
    p = Path(spec)
    return p if p.is_file() else Path(resolve(str(spec)))


def read_checkpoint(path: str | os.PathLike) -> object:
    """Load a ``.pt`` file without executing code from it."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such file")
    try:
        return safe_torch_load(p)
    except WeightsError:
        raise
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, … for foreign or broken files
        raise WeightsError(
            f"{p}: cannot be read as a PyTorch checkpoint without running code from it ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]})",
            "is it a complete download of a .pt file?",
        ) from None


def _wrong_kind(path, desc: str, wanted: str, hint: str) -> WeightsError:
    return WeightsError(f"{path}: this is {desc}, not {wanted}", hint)


def _opts(obj) -> dict:
    return obj.get("opts") if isinstance(obj.get("opts"), dict) else {}


# --- hypernetwork ----------------------------------------------------------------------------------------------------
def hypernet_layout(sd, specs: list[LayerSpec], prefix: str = "") -> tuple[list[TunedLayer], int]:
    """Tuned layers and head kinds from the official keys (``prefix``: ``"hypernet."`` in a whole file), and the
    side of the weights the shared FCs predict."""
    by_index = {s.hyperstyle_index: s for s in specs}
    layers = []
    for j, head in hypernet_heads(sd, prefix).items():
        if j not in by_index:
            raise WeightsError(f"hypernetwork refinement block {j} has no layer in a {specs[-1].res}px generator",
                               "the hypernetwork was trained for a generator of another resolution")
        s = by_index[j]
        if head == "separable":
            raise WeightsError(f"refinement block {j} ({s.name}) is a separable block (SharedWeightsHyperNetResNetSeparable, "
                               "the paper's ablation)", "only the published SharedWeightsHyperNetResNet layout is supported")
        if head == "unknown":
            keys = sorted(k[len(prefix):] for k in sd if k.startswith(f"{prefix}refinement_blocks.{j}."))
            raise WeightsError(f"refinement block {j} ({s.name}) has none of linear.weight, output.1.weight, "
                               f"output.0.weight (keys: {', '.join(keys[:4])})",
                               "the file is damaged or not a SharedWeightsHyperNetResNet")
        if (head == "torgb") != (s.kind == "torgb"):
            raise WeightsError(f"refinement block {j}: a {head} head for layer {s.name} ({s.kind})",
                               "the hypernetwork was trained for a generator of another layout")
        layers.append(TunedLayer.from_spec(s, head))
    if not layers:
        raise WeightsError("the hypernetwork has no refinement blocks", "the file is damaged or not HyperStyle's")
    shared_size = 512
    w2 = sd.get(prefix + "shared_weight_hypernet.w2")
    if w2 is not None and len(w2.shape) == 2 and w2.shape[0]:
        shared_size = w2.shape[1] // w2.shape[0]
    return layers, shared_size


def hypernet_rules(hn: HyperNetwork) -> list[KeyRule]:
    """Every key of the official hypernetwork state dict (without the ``hypernet.`` prefix) for this network's
    layout, in the official order; the per-block names of the shared FCs are aliases."""
    sd = hn.state_dict()

    def rule(foreign: str, native: str) -> KeyRule:
        return KeyRule(foreign, native, tuple(sd[native].shape), dtype=sd[native].dtype)

    rules = [rule(k[len("backbone."):], k) for k in sd if k.startswith("backbone.")]
    if hn.shared_fc is not None:
        rules += [rule(f"shared_weight_hypernet.{n}", f"shared_fc.{n}") for n in _SHARED]
    for lyr in sorted(hn.layers, key=lambda lyr: lyr.hyperstyle_index):
        j, pre = lyr.hyperstyle_index, f"heads.{head_key(lyr.name)}."
        rules += [rule(f"refinement_blocks.{j}.{k[len(pre):]}", k) for k in sd if k.startswith(pre)]
        if lyr.head == "shared":
            rules += [KeyRule(f"refinement_blocks.{j}.hypernet.{n}", None, tuple(sd[f"shared_fc.{n}"].shape),
                              alias_of=f"shared_weight_hypernet.{n}") for n in _SHARED]
    return rules


def opts_input_size(opts: dict | None, minimum: int = 64) -> int:
    """Input side of an encoder: gantune's compact models write ``opts['input_size']``; official files are 256."""
    v = (opts or {}).get("input_size", INPUT_SIZE)
    try:
        v = int(v)
    except (TypeError, ValueError):
        raise WeightsError(f"opts.input_size is {v!r}; expected an integer") from None
    if v < minimum or v % 16:
        raise WeightsError(f"opts.input_size is {v}; expected a multiple of 16, at least {minimum}")
    return v


def _meta_hypernet(sd, specs: list[LayerSpec], opts: dict | None, prefix: str = "") -> tuple[HyperNetwork, list[str]]:
    """The hypernetwork the keys describe, on the meta device, and warnings where ``opts`` disagrees with them."""
    layers, shared_size = hypernet_layout(sd, specs, prefix)
    stem = sd.get(prefix + "conv1.weight")
    if stem is None or len(stem.shape) != 4:
        raise WeightsError(f"hypernetwork key {prefix}conv1.weight (the backbone's first conv) is missing",
                           "the file is damaged or not a SharedWeightsHyperNetResNet")
    with torch.device("meta"):
        hn = HyperNetwork(layers, shared_size=shared_size, width=stem.shape[0], input_size=opts_input_size(opts))
    warnings = []
    if opts and opts.get("layers_to_tune") not in (None, ""):
        try:
            claimed = sorted(int(v) for v in str(opts["layers_to_tune"]).split(",") if v.strip())
        except ValueError:
            claimed = None
        have = sorted(lyr.hyperstyle_index for lyr in layers)
        if claimed is not None and claimed != have:
            warnings.append(f"opts.layers_to_tune says {claimed} but the weights tune {have}; using the weights")
    return hn, warnings


def _assign(module: torch.nn.Module, native: dict, device) -> torch.nn.Module:
    """Put the imported tensors into a module built on the meta device (no copy, no random init)."""
    module.load_state_dict(native, strict=True, assign=True)
    if device is not None and str(device) != "meta":
        module = module.to(device=device, dtype=torch.float32)
    return module.eval()


def hypernet_from_official(sd: dict, specs: list[LayerSpec], *, device="cpu", opts: dict | None = None):
    """Build a :class:`HyperNetwork` from an official hypernetwork state dict (prefix ``hypernet.`` stripped) through
    the key table. Returns (hypernet, warnings). Tensors are assigned, not copied (no random init of 330 M numbers)."""
    hn, warnings = _meta_hypernet(sd, specs, opts)
    native = import_state(sd, hypernet_rules(hn), "hypernetwork", layout="HyperStyle hypernetwork")
    return _assign(hn, native, device), warnings


def hypernet_to_official(hn: HyperNetwork) -> dict[str, torch.Tensor]:
    """The official state dict layout (without the ``hypernet.`` prefix) in the official order; the aliases are the
    same tensors as ``shared_weight_hypernet.*``, and every tensor is the module's own (no copy)."""
    return export_state(hn.state_dict(), hypernet_rules(hn), copy=False)


def hyperstyle_rules(cfg, hn: HyperNetwork) -> list[KeyRule]:
    """Every key of a ``hyperstyle_*.pt`` ``state_dict``: the rosinality generator as ``decoder.*`` and the
    hypernetwork as ``hypernet.*`` (native keys carry the same prefixes)."""
    return prefixed(rosinality_rules(cfg), "decoder.", "decoder.") + prefixed(hypernet_rules(hn), "hypernet.", "hypernet.")


def hyperstyle_to_official(G: Generator, hn: HyperNetwork) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a ``hyperstyle_*.pt`` file (official order, aliases shared) for this generator and
    hypernetwork; the file's ``latent_avg`` is ``G.mapping.w_avg`` repeated per layer."""
    if not G.cfg.use_noise:
        raise WeightsError("a generator without noise inputs has no HyperStyle (rosinality) decoder layout",
                           "train the hypernetwork for a generator with noise inputs")
    native = {**{"decoder." + k: v for k, v in G.state_dict().items()},
              **{"hypernet." + k: v for k, v in hn.state_dict().items()}}
    return export_state(native, hyperstyle_rules(G.cfg, hn))


def layers_to_tune(hn: HyperNetwork) -> str:
    """The official ``opts['layers_to_tune']`` of a hypernetwork: its delta-list indices, comma-separated."""
    return ",".join(str(lyr.hyperstyle_index) for lyr in hn.layers)


# --- W-encoder -------------------------------------------------------------------------------------------------------
def w_encoder_units(sd: dict) -> tuple[int, ...]:
    """Units per stage from the ``body.{i}`` keys: a stage starts where the residual conv width changes."""
    bodies = [int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.split(".")[1].isdigit()]
    if not bodies or "input_layer.0.weight" not in sd:
        raise WeightsError("not a W-encoder state dict (no input_layer.0.weight / body.* keys)",
                           "use faces_w_encoder.pt (w-encoder-ffhq)")
    depths = []
    for i in range(1 + max(bodies)):
        key = f"body.{i}.res_layer.1.weight"
        if key not in sd:
            raise WeightsError(f"W-encoder key {key} is missing", "the file is damaged or not an IR-SE W-encoder")
        depths.append(sd[key].shape[0])
    stages = stage_depths(sd["input_layer.0.weight"].shape[0])
    units = [depths.count(d) for d in stages]
    if sum(units) != len(depths):
        raise WeightsError(f"W-encoder body widths {sorted(set(depths))} are not IR-SE stages {stages}",
                           "the file is damaged or not an IR-SE W-encoder")
    return tuple(units)


def _meta_w_encoder(sd, *, num_ws: int, input_size: int) -> WEncoder:
    if "linear.weight" not in sd or "input_layer.0.weight" not in sd:
        raise WeightsError("not a W-encoder state dict (no input_layer.0.weight / linear.weight keys)",
                           "use faces_w_encoder.pt (w-encoder-ffhq)")
    units = w_encoder_units(sd)
    first = sd["input_layer.0.weight"]
    with torch.device("meta"):
        return WEncoder(num_ws=num_ws, w_dim=sd["linear.weight"].shape[0], units=units, in_channels=first.shape[1],
                        width=first.shape[0], input_size=input_size)


def w_encoder_rules(enc: WEncoder) -> list[KeyRule]:
    """Every key of the official encoder state dict (without the ``encoder.`` prefix): gantune's names, in the
    official order (``input_layer``, ``linear``, ``body``: the e4e coach registers the FC before the body)."""
    order = {"input_layer": 0, "linear": 1, "body": 2}
    return sorted(module_rules(enc), key=lambda r: order.get(r.foreign.split(".")[0], len(order)))


def w_encoder_from_official(sd: dict, *, num_ws: int, device="cpu", input_size: int = INPUT_SIZE) -> WEncoder:
    """A :class:`WEncoder` from the official encoder state dict (prefix ``encoder.`` stripped), through the key
    table. The width comes from the weights; the input size (not visible in them) from the file's opts (256 official)."""
    enc = _meta_w_encoder(sd, num_ws=num_ws, input_size=input_size)
    native = import_state(sd, w_encoder_rules(enc), "W-encoder", layout="IR-SE W-encoder")
    return _assign(enc, native, device)


def w_encoder_to_official(enc: WEncoder) -> dict[str, torch.Tensor]:
    """The official encoder state dict (without the ``encoder.`` prefix); the tensors are the module's own."""
    return export_state(enc.state_dict(), w_encoder_rules(enc), copy=False)


# --- whole files -----------------------------------------------------------------------------------------------------
@dataclass
class HyperStyleModel:
    """Everything HyperStyle inference needs from ``hyperstyle_*.pt``."""

    G: Generator  # the generator the hypernetwork was trained with (the file's ``decoder``)
    hypernet: HyperNetwork
    latent_avg: torch.Tensor  # (num_ws, w_dim), added to the W-encoder output
    info: dict = field(default_factory=dict)  # path, sha256, tuned layers, opts cross-check warnings, load seconds


def _latent_avg(la, num_ws: int, w_dim: int) -> torch.Tensor:
    if la is None:
        raise WeightsError("the HyperStyle checkpoint has no latent_avg", "the file is damaged or not HyperStyle's")
    if not isinstance(la, torch.Tensor):
        raise WeightsError(f"latent_avg is a {type(la).__name__}, expected a tensor")
    la = la.detach().float().cpu()
    if la.shape == (w_dim,) or la.shape == (1, w_dim):
        return la.reshape(1, w_dim).expand(num_ws, w_dim).clone()
    if la.shape == (num_ws, w_dim):
        return la.clone()
    raise WeightsError(f"latent_avg has shape {tuple(la.shape)}; expected ({w_dim},), (1, {w_dim}) or ({num_ws}, {w_dim})")


def hyperstyle_from_checkpoint(obj: dict, *, device="cpu", source: str = "checkpoint") -> HyperStyleModel:
    """Build the model from an already loaded ``hyperstyle_*.pt`` dict: one key table for the whole ``state_dict``
    (``decoder.*`` and ``hypernet.*``), so any unknown or missing key is named."""
    kind, desc = identify(obj)
    if kind != "hyperstyle":
        raise _wrong_kind(source, desc, "a HyperStyle checkpoint",
                          "--weights takes hyperstyle_ffhq.pt (hypernetwork + generator); the W-encoder goes to --encoder")
    sd, opts = obj["state_dict"], _opts(obj)
    dec = strip_prefix(sd, "decoder.")
    if not dec:
        raise WeightsError(f"{source}: the HyperStyle checkpoint has no decoder.* keys (generator)",
                           "the file is damaged or not HyperStyle's")
    cfg = infer_config(dec, extra={"source_format": "hyperstyle", "w_avg": "file"})
    la = _latent_avg(obj.get("latent_avg"), cfg.num_ws, cfg.w_dim)
    hn, warnings = _meta_hypernet(sd, layer_specs(cfg), opts, prefix="hypernet.")
    native = import_state(sd, hyperstyle_rules(cfg, hn), source, layout="HyperStyle checkpoint")
    G = generator_from_state(cfg, {**strip_prefix(native, "decoder."), "mapping.w_avg": la[0].clone()})
    G = G.to(device).eval()
    hn = _assign(hn, strip_prefix(native, "hypernet."), device)
    et = opts.get("encoder_type")
    if et and et != "SharedWeightsHyperNetResNet":
        warnings.append(f"opts.encoder_type is {et!r}; the keys say SharedWeightsHyperNetResNet")
    info = {"tuned_layers": hn.names, "warnings": warnings,
            "hyperstyle_indices": {lyr.name: lyr.hyperstyle_index for lyr in hn.layers}}
    if isinstance(opts.get("dataset_type"), str):
        info["dataset_type"] = opts["dataset_type"]  # "cars" in it switches on the official cars crops (.domain)
    return HyperStyleModel(G=G, hypernet=hn, latent_avg=la.to(device), info=info)


def load_hyperstyle(spec: str | os.PathLike = DEFAULT_HYPERSTYLE, *, device="cpu", hash_file: bool = True) -> HyperStyleModel:
    """``hyperstyle_*.pt`` by registry name, URL or path."""
    t0 = time.perf_counter()
    path = resolve_path(spec)
    model = hyperstyle_from_checkpoint(read_checkpoint(path), device=device, source=str(path))
    model.info.update(spec=str(spec), path=str(path), load_s=round(time.perf_counter() - t0, 3))
    if hash_file:
        model.info["sha256"] = file_sha256(path)
    return model


_NOT_W_ENCODER = {  # what to say when another kind of file is given as the W-encoder
    "e4e": "HyperStyle needs the W-encoder faces_w_encoder.pt, not an e4e FPN encoder",
    "restyle-e4e": "HyperStyle needs the W-encoder faces_w_encoder.pt; ReStyle files are for domain adaptation",
    "rosinality": "that file is a StyleGAN2 generator; the W-encoder is faces_w_encoder.pt (w-encoder-ffhq)",
    "rosinality-train": "that file is a StyleGAN2 generator; the W-encoder is faces_w_encoder.pt (w-encoder-ffhq)",
    "hyperstyle": "that is the hypernetwork: pass it to --weights and the W-encoder to --encoder",
}


def w_encoder_from_checkpoint(obj, *, num_ws: int, device="cpu", source: str = "checkpoint") -> WEncoder:
    """A :class:`WEncoder` from an already loaded ``*_w_encoder.pt`` dict: ``encoder.*`` through the encoder's key
    table; a ``decoder.*`` generator, if there is one, checked against the rosinality table and not loaded."""
    kind, desc = identify(obj)
    if kind != "w-encoder":
        raise _wrong_kind(source, desc, "a W-encoder", _NOT_W_ENCODER.get(kind, "use faces_w_encoder.pt (w-encoder-ffhq)"))
    sd = obj["state_dict"]
    enc = _meta_w_encoder(strip_prefix(sd, "encoder."), num_ws=num_ws, input_size=opts_input_size(_opts(obj)))
    rules = prefixed(w_encoder_rules(enc), "encoder.")
    dec = strip_prefix(sd, "decoder.")
    if dec:
        rules += dropped(prefixed(rosinality_rules(infer_config(dec)), "decoder."))
    native = import_state(sd, rules, source, layout="HyperStyle W-encoder")
    return _assign(enc, native, device)


def load_w_encoder(spec: str | os.PathLike = DEFAULT_W_ENCODER, *, num_ws: int, device="cpu",
                   hash_file: bool = True) -> tuple[WEncoder, dict]:
    t0 = time.perf_counter()
    path = resolve_path(spec)
    enc = w_encoder_from_checkpoint(read_checkpoint(path), num_ws=num_ws, device=device, source=str(path))
    info = {"spec": str(spec), "path": str(path), "load_s": round(time.perf_counter() - t0, 3)}
    if hash_file:
        info["sha256"] = file_sha256(path)
    return enc, info


# --- writing files -----------------------------------------------------------------------------------------------------
def _write(obj: dict, path: str | os.PathLike, *, legacy_format: bool = False) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy_format)
    return path


def write_hyperstyle_file(path: str | os.PathLike, G: Generator, hn: HyperNetwork, latent_avg: torch.Tensor, *,
                          opts: dict, **fields) -> Path:
    """Write a ``hyperstyle_*.pt`` in the official layout, atomically: ``{'state_dict': decoder.* (the rosinality
    form of ``G``) + hypernet.* (official names and order, the aliases stored once), 'opts', 'latent_avg', **fields}``
    (``fields``: e.g. ``global_step``, ``best_val_loss``); the keys and their order are those of
    :func:`hyperstyle_to_official`, the hypernetwork's tensors are the module's own (no copy of 330 M numbers).
    :func:`load_hyperstyle` reads it back."""
    sd = {**{"decoder." + k: v for k, v in to_rosinality_state_dict(G).items()},
          **{"hypernet." + k: v for k, v in hypernet_to_official(hn).items()}}
    return _write({"state_dict": sd, "opts": opts, "latent_avg": latent_avg, **fields}, path)


def write_w_encoder_file(path: str | os.PathLike, enc: WEncoder, latent_avg: torch.Tensor, *, opts: dict,
                         G: Generator | None = None, legacy_format: bool = False) -> Path:
    """Write a ``*_w_encoder.pt`` in the official layout, atomically: ``{'state_dict': encoder.* (official names and
    order) [+ decoder.*: the rosinality form of ``G`` where given, as the published file carries one], 'opts',
    'latent_avg'}``. ``legacy_format``: torch's pre-1.6 serialization (not a zip file), as older files are written.
    :func:`load_w_encoder` reads it back (the decoder is checked and ignored)."""
    sd = {"encoder." + k: v for k, v in w_encoder_to_official(enc).items()}
    if G is not None:
        sd.update({"decoder." + k: v for k, v in to_rosinality_state_dict(G).items()})
    return _write({"state_dict": sd, "opts": opts, "latent_avg": latent_avg}, path, legacy_format=legacy_format)
