"""Rendering an inversion record (latent, HyperStyle offsets, tuned weights, class label) with a generator, exactly
as it was inverted: the one renderer of edit, adapt, interpolate, the API and the optimization methods. It sits with
the records, below the methods and the editing functions that both use it."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch.func import functional_call

from ..errors import InputError
from ..weights.http import is_url
from .record import InversionRecord, RecordError, check_record_class


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pkl", ".safetensors", ".ckpt")


def record_path_is_usable(spec: str) -> bool:
    """A generator named by a record (an untrusted file) is opened only if it is a registry name (no path
    separator, no suffix) or a path with a checkpoint suffix that is a regular file (a missing one is reported as
    missing when loaded): never /etc/passwd, a FIFO or a device."""
    p = Path(spec)
    if "/" not in spec and "\\" not in spec and not p.suffix:
        return True
    return p.suffix.lower() in CHECKPOINT_SUFFIXES and (p.is_file() or not os.path.lexists(p))


def record_generator_spec(record: InversionRecord) -> str | None:
    """The generator the record was made with (registry name or local path), as written by ``invert``; None when
    the record names none.

    A record is an untrusted file: a URL in it is never used (that would let a record make gantune fetch anything).
    It raises an :class:`~gantune.errors.InputError` asking for ``--weights`` when the record names only URLs."""
    gen = record.meta.get("generator") or {}
    if not isinstance(gen, dict):
        return None
    named = [v for v in (gen.get("spec"), gen.get("name"), gen.get("path")) if isinstance(v, str) and v.strip()]
    local = [v for v in named if not is_url(v) and "://" not in v]
    usable = [v for v in local if record_path_is_usable(v)]
    if usable:
        return usable[0]
    if local:
        raise InputError(f"the record names its generator as {local[0][:120]!r}, which is not a registry name or a "
                         f"checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}); it was not opened",
                         "pass the generator yourself with --weights")
    if named:
        raise InputError(f"the record names its generator only by URL ({named[0][:120]}); a URL from a record is "
                         "never fetched", "pass the generator yourself with --weights (a registry name, path or URL)")
    return None


def record_noise_mode(record: InversionRecord) -> str:
    """The noise mode the record was made with (top-level or in its method parameters), default const."""
    return record.meta.get("noise_mode") or (record.meta.get("params") or {}).get("noise_mode") or "const"


def record_latent(G, record: InversionRecord) -> torch.Tensor:
    """The record's latent with a batch axis, checked against ``G``: (1, num_ws, w_dim) for w / w+ (w repeated),
    (1, rows, w_dim) for W, (1, num_ws, rows, w_dim) for W+."""
    check_record_class(record, G.cfg.c_dim)
    lat = record.latent.float()
    kind, n, wd = record.latent_kind, G.num_ws, G.cfg.w_dim
    if lat.shape[-1] != wd:
        raise RecordError(f"the record's latent ends in {lat.shape[-1]}; this generator's w has {wd} "
                          "(was it made with another generator?)")
    if kind == "w":
        return lat.reshape(1, 1, wd).expand(1, n, wd)
    if kind == "w+" and lat.shape[0] != n:
        raise RecordError(f"the record's latent is {tuple(lat.shape)}; this generator needs ({n}, {wd})")
    if kind == "W+" and lat.shape[0] != n:
        raise RecordError(f"the record's W+ latent has {lat.shape[0]} layers; this generator has {n}")
    if kind in ("W", "W+"):
        need = max(s.out_ch for s in G.specs)
        if lat.shape[-2] < need:
            raise RecordError(f"the record's latent matrix has {lat.shape[-2]} rows; this generator needs {need}")
    return lat[None]


def _synthesis_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full-generator state names -> names relative to ``G.synthesis``."""
    return {k[len("synthesis.") :]: v for k, v in state.items() if k.startswith("synthesis.")}


def synthesize(G, state: dict[str, torch.Tensor] | None = None, *, noise_maps=None, **kwargs) -> torch.Tensor:
    """``G.synthesis(**kwargs)`` with some parameters/buffers replaced (full state-dict names) and, optionally,
    per-image noise maps {prefix: (B, 1, H, W)}.

    The core reads one noise buffer per layer (shared by the batch) and adds ``noise · noise_strength``; per-image maps
    are passed by replacing the buffer with ones and the strength with ``strength · map`` (broadcast over channels),
    which gives exactly ``map · strength`` for each image.
    """
    over = dict(state or {})
    if noise_maps:
        for prefix, m in noise_maps.items():
            strength = over.get(prefix + ".noise_strength")
            if strength is None:
                strength = G.get_parameter(prefix + ".noise_strength")
            over[prefix + ".noise_const"] = torch.ones(m.shape[-2:], device=m.device, dtype=m.dtype)
            over[prefix + ".noise_strength"] = strength * m
        kwargs.setdefault("noise_mode", "const")
    if not over:
        return G.synthesis(**kwargs)
    return functional_call(G.synthesis, _synthesis_state(over), (), kwargs, strict=False)


@torch.no_grad()
def render_record(
    G,  # gantune Generator the record was made with (or one of the same architecture)
    record: InversionRecord,
    *,
    latents: torch.Tensor | None = None,  # (B, …) latents in the record's space (see edited_latents); default its own
    deltas: dict[str, torch.Tensor] | None = None,  # offsets to use instead of the record's (already selected/scaled)
    noise_mode: str | None = None,  # default: the record's own noise mode
    batch_size: int = 8,
    state: dict[str, torch.Tensor] | None = None,  # tuned parameters to use instead of the record's own
    style_offsets: dict[str, torch.Tensor] | None = None,  # layer name -> (B or 1, in) added to the styles (S space)
) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] exactly as the record was made: its latent (or edited latents), its offsets
    θ ⊙ (1 + Δ) shared by the batch, and its tuned differences (PTI weights, optimized noise maps) merged into the
    generator's parameters and buffers; ``style_offsets`` move its styles (StyleCLIP edits), one row per latent or
    one for all; cut to the record's ``output_crop`` where it has one (cars: 512×384). The one renderer for edit,
    adapt, the API and the optimization methods."""
    device = G.w_avg.device
    if latents is None:
        latents = record_latent(G, record)
    if deltas is None:
        deltas = record_deltas(record, G.specs, device)
    key = "wmat" if record.latent_kind in ("W", "W+") else "ws"
    if state is None and record.tuned:
        state = record.tuned_state(G.state_dict())
    mode = noise_mode or record_noise_mode(record)
    d1 = {k: v.float().to(device)[None] for k, v in deltas.items()} or None
    outs = []
    for i in range(0, latents.shape[0], batch_size):
        chunk = latents[i : i + batch_size].to(device)
        so = None
        if style_offsets:
            so = {k: (v if v.shape[0] == 1 else v[i : i + batch_size]).float().to(device)
                  for k, v in style_offsets.items()}
        outs.append(synthesize(G, state, deltas=d1, noise_mode=mode, style_offsets=so, **{key: chunk}).float().cpu())
    return record_crop(record, torch.cat(outs))


def record_crop(record: InversionRecord, images: torch.Tensor) -> torch.Tensor:
    """Full generator outputs cut to the record's ``output_crop`` (HyperStyle cars: rows 64:448 of a 512 px output,
    scaled for other resolutions); unchanged for records without one."""
    crop = record.meta.get("output_crop")
    if crop is None:
        return images
    try:
        return crop_record_image(images, crop)
    except ValueError as e:
        raise RecordError(f"the record's output_crop {str(crop)[:80]} is invalid: {e}") from None


def record_deltas(record: InversionRecord, specs=None, device=None) -> dict[str, torch.Tensor]:
    """A record's offsets as float32 (out, in) or (out, in, k, k) tensors (compact shared offsets expanded on
    ``device``, the device that renders, so that they are the very numbers the inversion rendered with).

    With ``specs`` (the generator's layer specs), unknown layers and shapes that do not fit are reported. (Records
    written before the core took per-tap offsets stored them flattened to (out, in·k·k) with ``meta["delta_taps"]``;
    those are reshaped.)"""
    taps = record.meta.get("delta_taps", {}) or {}
    by_name = {s.name: s for s in specs} if specs is not None else None
    out = {}
    for name, d in record.offsets(device).items():
        d = d.float()
        if name in taps:
            k = int(taps[name])
            d = d.reshape(d.shape[0], -1, k, k)
        if by_name is not None:
            if name not in by_name:
                raise RecordError(f"delta.{name}: the generator has no layer of that name (was it made for another generator?)")
            s = by_name[name]
            if tuple(d.shape[:2]) != (s.out_ch, s.in_ch) or (d.ndim == 4 and tuple(d.shape[2:]) != (s.kernel, s.kernel)):
                raise RecordError(
                    f"delta.{name}: shape {tuple(d.shape)} does not fit layer {name} ({s.out_ch} x {s.in_ch}); "
                    "the record was made with a generator of another architecture"
                )
        out[name] = d
    return out


def crop_record_image(img: torch.Tensor, crop) -> torch.Tensor:
    """Images (…, H, W) cut to a record's ``output_crop`` (scaled when rendered at another size). A record is an
    untrusted file: a box that is not four finite numbers inside a positive ``size`` raises ValueError."""
    if not isinstance(crop, dict):
        raise ValueError("expected {'box': [left, top, right, bottom], 'size': [W, H]}")
    box, size = crop.get("box"), crop.get("size")
    nums = [box, size]
    if not all(isinstance(v, (list, tuple)) for v in nums) or len(box) != 4 or len(size) != 2:
        raise ValueError("expected {'box': [left, top, right, bottom], 'size': [W, H]}")
    vals = [*box, *size]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
        raise ValueError("box and size must be finite numbers")
    left, top, right, bottom = box
    if not (size[0] > 0 and size[1] > 0 and 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]):
        raise ValueError("the box must lie inside the size")
    sx, sy = img.shape[-1] / size[0], img.shape[-2] / size[1]
    return img[..., round(top * sy) : round(bottom * sy), round(left * sx) : round(right * sx)]
