"""Import of the official e4e (``e4e_*_encode.pt``) and ReStyle-e4e (``restyle_e4e_ffhq_encode.pt``) files.

Both are pSp-style coach saves: ``{'state_dict': {encoder.*, decoder.*}, 'opts', 'latent_avg', …}``. The file is
recognised by :func:`gantune.weights.formats.identify` (kinds ``e4e`` and ``restyle-e4e``), read with
``torch.load(weights_only=True)``, and the encoder architecture is inferred from the keys: the input channels from
``input_layer.0.weight``, the IR-SE units from the ``body.*`` widths, the rows from ``styles.{i}``, the convs of each
head from ``styles.{i}.convs.{2k}``, the feature pyramid from ``latlayer1``. Every ``encoder.*`` key goes through
the key table (identity names: :class:`StyleEncoder` uses the official module names); the ``decoder.*`` generator is
checked against the rosinality table and not kept (gantune renders with the generator given separately, which the
official code also loads from ``stylegan2-ffhq-config-f.pt`` when training). Unknown or missing keys are named.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import WeightsError
from ...weights.checksums import file_sha256
from ...weights.download import resolve
from ...weights.formats import DESCRIPTIONS, identify
from ...weights.keymap import dropped, import_state, module_rules, prefixed, strip_prefix
from ...weights.rosinality import infer_config, rosinality_rules
from ...weights.safe_pickle import safe_torch_load
from ..hyper.checkpoint import opts_input_size
from ..hyper.wencoder import stage_depths
from .model import StyleEncoder

KINDS = ("e4e", "restyle-e4e")
DEFAULTS = {"e4e": "e4e-ffhq", "restyle-e4e": "restyle-e4e-ffhq"}  # registry names (weights.toml)
LAYOUT = {"e4e": "e4e Encoder4Editing", "restyle-e4e": "ReStyle-e4e ProgressiveBackboneEncoder"}
_HEAD_CONV = re.compile(r"^styles\.(\d+)\.convs\.(\d+)\.weight$")


@dataclass
class StyleEncoderModel:
    """An e4e / ReStyle-e4e encoder and the average latent its codes are offsets from."""

    kind: str  # "e4e" or "restyle-e4e"
    encoder: StyleEncoder
    latent_avg: torch.Tensor | None  # (num_ws, w_dim), or None when the file has none (then the generator's w_avg)
    add_latent_avg: bool = True  # e4e: opts.start_from_latent_avg (ReStyle always starts from it)
    info: dict = field(default_factory=dict)  # spec, path, sha256, load seconds, opts facts


def encoder_kind(obj, source: str = "checkpoint") -> str:
    """``e4e`` or ``restyle-e4e`` for a loaded file of either kind; a one-line error for anything else."""
    kind, desc = identify(obj)
    if kind in KINDS:
        return kind
    hint = {"w-encoder": "the W-encoder faces_w_encoder.pt goes to --encoder of the hyperstyle method",
            "hyperstyle": "that is the HyperStyle hypernetwork: use --method hyperstyle"}.get(
        kind, "use e4e_ffhq_encode.pt (e4e-ffhq) or restyle_e4e_ffhq_encode.pt (restyle-e4e-ffhq)")
    raise WeightsError(f"{source}: this is {desc}, not an e4e or ReStyle-e4e encoder", hint)


def _units(sd: dict, width: int) -> tuple[int, ...]:
    bodies = sorted({int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.split(".")[1].isdigit()})
    if not bodies:
        raise WeightsError("the encoder has no body.* keys (IR-SE backbone)", "the file is damaged or not an e4e encoder")
    depths = []
    for i in range(1 + bodies[-1]):
        key = f"body.{i}.res_layer.1.weight"
        if key not in sd:
            raise WeightsError(f"encoder key {key} is missing", "the file is damaged or not an IR-SE encoder")
        depths.append(sd[key].shape[0])
    stages = stage_depths(width)
    units = tuple(depths.count(d) for d in stages)
    if sum(units) != len(depths) or 0 in units:
        raise WeightsError(f"encoder body widths {sorted(set(depths))} are not the four IR-SE stages {stages}",
                           "the file is damaged or not an IR-SE encoder")
    return units


def _head_convs(sd: dict) -> tuple[int, ...]:
    convs: dict[int, int] = {}
    for k in sd:
        m = _HEAD_CONV.match(k)
        if m:
            convs[int(m.group(1))] = max(convs.get(int(m.group(1)), 0), int(m.group(2)) // 2 + 1)
    if not convs:
        raise WeightsError("the encoder has no styles.{i}.convs.* keys (style heads)",
                           "the file is damaged or not an e4e / ReStyle-e4e encoder")
    if sorted(convs) != list(range(len(convs))):
        missing = sorted(set(range(max(convs) + 1)) - set(convs))
        raise WeightsError(f"the encoder's style heads skip styles.{missing[0]}", "the file is damaged")
    return tuple(convs[i] for i in range(len(convs)))


def meta_encoder(sd: dict, kind: str, *, input_size: int = 256) -> StyleEncoder:
    """The encoder the keys describe (prefix ``encoder.`` stripped), on the meta device."""
    first = sd.get("input_layer.0.weight")
    lin = sd.get("styles.0.linear.weight")
    if first is None or len(first.shape) != 4 or lin is None or len(lin.shape) != 2:
        raise WeightsError("the encoder lacks input_layer.0.weight or styles.0.linear.weight",
                           f"the file is damaged or not a {LAYOUT[kind]}")
    fpn = "latlayer1.weight" in sd
    if fpn != (kind == "e4e"):
        raise WeightsError(f"a {LAYOUT[kind]} file whose encoder {'has' if fpn else 'lacks'} latlayer1 (the e4e "
                           "feature pyramid)", "the file is damaged or mixes two encoder layouts")
    width = first.shape[0]
    with torch.device("meta"):
        return StyleEncoder(fpn=fpn, num_ws=len(_head_convs(sd)), w_dim=lin.shape[0], units=_units(sd, width),
                            in_channels=first.shape[1], width=width, head_convs=_head_convs(sd), input_size=input_size)


def encoder_rules(enc: StyleEncoder):
    return module_rules(enc)


def _latent_avg(la, num_ws: int, w_dim: int, source: str) -> torch.Tensor | None:
    if la is None:
        return None
    if not isinstance(la, torch.Tensor):
        raise WeightsError(f"{source}: latent_avg is a {type(la).__name__}, expected a tensor")
    la = la.detach().float().cpu()
    if la.shape in ((w_dim,), (1, w_dim)):
        return la.reshape(1, w_dim).expand(num_ws, w_dim).clone()
    if la.shape == (num_ws, w_dim):
        return la.clone()
    raise WeightsError(f"{source}: latent_avg has shape {tuple(la.shape)}; expected ({w_dim},), (1, {w_dim}) or "
                       f"({num_ws}, {w_dim})")


def style_encoder_from_checkpoint(obj, *, device="cpu", source: str = "checkpoint",
                                  kind: str | None = None) -> StyleEncoderModel:
    """A :class:`StyleEncoderModel` from an already loaded e4e / ReStyle-e4e file. ``kind``: require that kind."""
    got = encoder_kind(obj, source)
    if kind is not None and got != kind:
        raise WeightsError(f"{source}: this is {DESCRIPTIONS[got]}, not {DESCRIPTIONS[kind]}",
                           f"use the {DEFAULTS[kind]} file here, or --method {got}")
    sd = obj["state_dict"]
    opts = obj.get("opts") if isinstance(obj.get("opts"), dict) else {}
    enc = meta_encoder(strip_prefix(sd, "encoder."), got, input_size=opts_input_size(opts, minimum=32))
    rules = prefixed(encoder_rules(enc), "encoder.", "")
    dec = strip_prefix(sd, "decoder.")
    if dec:
        rules += dropped(prefixed(rosinality_rules(infer_config(dec)), "decoder."))
    native = import_state(sd, rules, source, layout=LAYOUT[got])
    enc.load_state_dict(native, strict=True, assign=True)
    enc = enc.to(device=device, dtype=torch.float32).eval() if str(device) != "meta" else enc.eval()
    la = _latent_avg(obj.get("latent_avg"), enc.num_ws, enc.w_dim, source)
    add = True
    if got == "e4e" and "start_from_latent_avg" in opts:
        add = bool(opts["start_from_latent_avg"])
    info = {"kind": got, "num_ws": enc.num_ws, "input_channels": enc.in_channels,
            "decoder": "checked, not used" if dec else "absent"}
    if la is None and add:
        info["latent_avg"] = "absent: the generator's w_avg is used"
    return StyleEncoderModel(kind=got, encoder=enc, latent_avg=None if la is None else la.to(device),
                             add_latent_avg=add, info=info)


def load_style_encoder(spec: str | os.PathLike | None = None, *, kind: str | None = None, device="cpu",
                       hash_file: bool = True) -> StyleEncoderModel:
    """An e4e / ReStyle-e4e file by registry name, URL or path (default: the registry's file of ``kind``)."""
    if spec is None:
        if kind is None:
            raise ValueError("give a file or a kind")
        spec = DEFAULTS[kind]
    t0 = time.perf_counter()
    p = Path(spec)
    path = p if p.is_file() else Path(resolve(str(spec)))
    try:
        obj = safe_torch_load(path)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for foreign or broken files
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint without running code from it "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                           "is it a complete download of a .pt file?") from None
    model = style_encoder_from_checkpoint(obj, device=device, source=str(path), kind=kind)
    model.info.update(spec=str(spec), path=str(path), load_s=round(time.perf_counter() - t0, 3))
    if hash_file:
        model.info["sha256"] = file_sha256(path)
    return model
