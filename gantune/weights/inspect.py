"""What a checkpoint holds, read for ``gantune weights info``: a generator's architecture, or the top level, training
options and HyperStyle refinement blocks of another checkpoint. Nothing here prints; tensors are not read where the
shapes suffice and nothing from a file runs (:func:`gantune.weights.formats.skeleton`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core import GeneratorConfig, layer_specs
from ..errors import WeightsError
from .formats import WITH_DECODER, TensorInfo, hypernet_heads, skeleton
from .keymap import strip_prefix
from .native import read_native_header
from .rosinality import infer_config

OPTS_SHOWN = ("dataset_type", "encoder_type", "output_size", "layers_to_tune")  # opts that say what it is for


def scan_torch(path: Path) -> tuple[object, dict]:
    """(top-level object, flat {dotted key: shape (tensors) or type name}) of a torch checkpoint, read without its
    tensor data and without executing code. Nested dicts are followed two levels deep (``state_dict.<key>``,
    ``opts.<field>``)."""
    top = skeleton(path)
    flat: dict = {}

    def walk(prefix: str, o, depth: int) -> None:
        if isinstance(o, TensorInfo):
            flat[prefix] = o.shape
        elif isinstance(o, Mapping) and depth < 2:
            for k, v in o.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        else:
            flat[prefix] = type(o).__name__

    walk("", top, 0)
    return top, flat


def top_keys(top) -> list[str]:
    """The top-level keys of a checkpoint, or the type name of a top level that is not a dict."""
    return [str(k) for k in top] if isinstance(top, Mapping) else [type(top).__name__]


def hyperstyle_layers(top) -> list[tuple[int, str, str]]:
    """(official index, gantune layer name or '?', head kind) of each refinement block, from the keys. The layer
    names come from the decoder's keys (the resolution), or from ``opts.output_size`` without a decoder."""
    sd = top.get("state_dict") if isinstance(top, Mapping) else None
    if not isinstance(sd, Mapping):
        return []
    heads = hypernet_heads(sd, "hypernet.")
    names: dict[int, str] = {}
    try:
        cfg = infer_config(strip_prefix(sd, "decoder."))
    except WeightsError:
        opts = top.get("opts")
        res = opts.get("output_size") if isinstance(opts, Mapping) else None
        cfg = GeneratorConfig(resolution=res) if isinstance(res, int) and res >= 4 and not res & (res - 1) else None
    if cfg is not None:
        names = {s.hyperstyle_index: s.name for s in layer_specs(cfg)}
    return [(j, names.get(j, "?"), kind) for j, kind in heads.items()]


def w_avg_state(ginfo: dict, path: Path, fmt: str) -> str:
    """Whether the average w came with the file or had to be computed at import."""
    meta = dict(ginfo)
    if fmt == "native":
        meta.update(read_native_header(path)[1])
    for k in ("w_avg_computed", "latent_avg_computed"):
        if k in meta:
            return "computed at import (the source file had none)" if meta[k] else "from the source file"
    if fmt in ("rosinality", "rosinality-train"):
        try:
            return "present in the file (latent_avg)" if "latent_avg" in top_keys(scan_torch(path)[0]) else \
                "absent from the file (computed at import)"
        except Exception:  # noqa: BLE001 - informational only
            return "unknown"
    if fmt == "ada-pkl":
        return "present in the file (mapping.w_avg)"
    return "stored" if fmt == "native" else "unknown"


def generator_summary(G, ginfo: dict, path: Path, fmt: str) -> list[tuple[str, str]]:
    """(field, value) pairs describing a loaded generator: architecture, resolution, channels, mapping, noise, the
    latent and class inputs, clamping, fp16, w_avg (``ginfo``: what the importer said), parameters."""
    cfg = G.cfg
    noise_bufs = sum(1 for n, _ in G.named_buffers() if n.endswith("noise_const"))
    fields = [
        ("architecture", cfg.describe()),
        ("resolution", f"{cfg.resolution} px, {cfg.num_ws} w vectors"),
        ("channels", ", ".join(f"{r}: {cfg.channels(r)}" for r in cfg.block_resolutions)),
        ("mapping", f"{cfg.mapping_layers} layers, lr multiplier {cfg.mapping_lr_mul}, z {cfg.z_dim}, w {cfg.w_dim}"),
        ("noise", f"{'on' if cfg.use_noise else 'off'} ({noise_bufs} stored noise buffers)"),
    ]
    if cfg.latent_rows:
        fields.append(("latent", f"overparameterized, {cfg.latent_rows} x {cfg.z_dim} matrix"))
    fields.append(("c_dim", f"{cfg.c_dim}" + (f" (class-conditional: classes 0 to {cfg.c_dim - 1}, embedded to "
                                              f"{cfg.embed_dim}; give --class)" if cfg.conditional else
                                              " (unconditional)")))
    fields.append(("conv_clamp", "none" if cfg.conv_clamp is None else f"±{cfg.conv_clamp:g} on every layer's output"))
    if cfg.num_fp16_res:
        fields.append(("fp16", f"the original runs its top {cfg.num_fp16_res} resolutions in float16 on GPUs; "
                               "gantune renders float32"))
    fields.append(("w_avg", w_avg_state(ginfo, path, fmt)))
    fields.append(("parameters", f"{sum(p.numel() for p in G.parameters()):,}"))
    return fields


@dataclass
class CheckpointContents:
    """What a checkpoint that is not only a generator holds, from its keys (no tensor data read)."""

    top_level: list[str]  # its top-level keys (or the type of a top level that is not a dict)
    tensors: int | None  # how many tensors it holds; None for the formats that carry a generator (WITH_DECODER)
    opts: dict[str, object]  # the training options of OPTS_SHOWN it has (formats with a generator only)
    tuned_layers: list[tuple[int, str, str]] | None  # (index, layer, head kind) of the refinement blocks, None if none


def checkpoint_contents(path: Path, fmt: str) -> CheckpointContents | None:
    """The contents of a checkpoint of format ``fmt`` (not a generator file); None when it cannot be read."""
    try:
        top, flat = scan_torch(path)
    except Exception:  # noqa: BLE001 - informational only
        return None
    if fmt not in WITH_DECODER:
        return CheckpointContents(top_keys(top), sum(1 for v in flat.values() if isinstance(v, tuple)), {}, None)
    opts = top.get("opts") if isinstance(top, Mapping) else None
    shown = {k: opts[k] for k in OPTS_SHOWN if k in opts} if isinstance(opts, Mapping) else {}
    layers = hyperstyle_layers(top)
    return CheckpointContents(top_keys(top), None, shown, layers if fmt == "hyperstyle" or layers else None)
