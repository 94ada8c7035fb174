"""Domain adaptation (HyperStyle Sec. 4.4): a record's latent and offsets, predicted for the source generator, rendered
with a fine-tuned generator of the same architecture (Toonify, StyleGAN-NADA, …).

The reference applies only the offsets of ``convs.8``–``convs.15`` (the 128–1024 px non-toRGB convs at 1024 px);
:func:`default_adapt_layers` picks the same layers by resolution, and ``offset_scale`` blends from the plain target
generator (0) to the full offsets (1). :func:`adapt_record` is what ``gantune adapt`` and :func:`gantune.adapt` render:
the image, the target's image without offsets for a comparison, and the identity distance to the reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.specs import LayerSpec, select_layers
from ..errors import InputError
from ..io.record import InversionRecord, RecordError
from ..io.images import tensor_to_pil
from ..io.render import record_deltas, render_record
from .identity import identity_to, reconstruction_descriptor

ADAPT_MIN_RES = 128  # the reference's convs.8 and up


def default_adapt_layers(specs: list[LayerSpec]) -> list[str]:
    """Non-toRGB convs from 128 px up (the reference's convs.8–15 at 1024 px); the fine level for smaller generators."""
    names = [s.name for s in specs if s.kind == "conv" and s.res >= ADAPT_MIN_RES]
    return names or [s.name for s in select_layers(specs, levels=("fine",))]


def select_adapt_layers(specs: list[LayerSpec], layers: str | list[str] | None) -> list[str]:
    """``None``/``default`` -> :func:`default_adapt_layers`; ``all``; a level list ``fine,medium``; or layer names
    (gantune ``b128.conv0`` or rosinality ``convs.8``), comma separated."""
    if layers is None or layers == "default":
        return default_adapt_layers(specs)
    items = [v.strip() for v in (layers.split(",") if isinstance(layers, str) else layers) if v.strip()]
    if items == ["all"]:
        return [s.name for s in specs]
    if items and all(v in ("coarse", "medium", "fine") for v in items):
        return [s.name for s in select_layers(specs, levels=tuple(items))]
    try:
        return [s.name for s in select_layers(specs, names=items)]
    except ValueError as e:
        raise InputError(f"--layers: {e}") from None


@torch.no_grad()
def adapt_render(
    G_target,  # fine-tuned generator with the source generator's architecture
    record: InversionRecord,  # inversion made with the source generator
    *,
    layers: str | list[str] | None = None,  # which offsets to apply (see select_adapt_layers)
    offset_scale: float = 1.0,  # Δ · scale: 0 = plain target generator, 1 = the record's offsets
    noise_mode: str = "const",  # the reference samples random noise here; const is reproducible
) -> tuple[torch.Tensor, list[str]]:
    """(image (1, 3, H, W), the layers whose offsets were applied)."""
    all_deltas = record_deltas(record, G_target.specs, G_target.w_avg.device)  # also checks the architecture
    chosen = select_adapt_layers(G_target.specs, layers)
    applied = [n for n in chosen if n in all_deltas]
    if not applied and all_deltas:
        raise RecordError(f"the record has offsets for {sorted(all_deltas)}, none of them in the chosen layers {chosen}")
    deltas = {n: all_deltas[n] * float(offset_scale) for n in applied}
    return render_record(G_target, record, deltas=deltas, noise_mode=noise_mode), applied


@dataclass
class Adapted:
    """A record rendered with a fine-tuned generator, with what ``gantune adapt`` writes and reports of it."""

    image: torch.Tensor  # (3, H, W) in [-1, 1]
    layers: list[str]  # the layers whose offsets were applied
    plain: torch.Tensor | None = None  # (3, H, W): the target generator without offsets (compare)
    identity: float | None = None  # dlib distance to the record rendered with its own generator (source)


def adapt_record(G_target, record: InversionRecord, *, layers: str | list[str] | None = None, offset_scale: float = 1.0,
                 noise_mode: str | None = "const", compare: bool = False, source=None) -> Adapted:
    """:func:`adapt_render`'s image and layers; with ``compare`` also the target's image without offsets, and with
    ``source`` (the record's own generator) the identity distance of the image to the record's reconstruction."""
    img, applied = adapt_render(G_target, record, layers=layers, offset_scale=offset_scale, noise_mode=noise_mode)
    plain = None
    if compare:
        plain = adapt_render(G_target, record, layers=layers, offset_scale=0.0, noise_mode=noise_mode)[0][0]
    ident = None if source is None else identity_to(reconstruction_descriptor(source, record), tensor_to_pil(img[0]))
    return Adapted(img[0], applied, plain, ident)
