"""Rendering an inversion record (latent + HyperStyle offsets) with a generator, exactly as it was inverted."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io.record import InversionRecord, RecordError


def load_record(rec) -> InversionRecord:
    """An :class:`InversionRecord`, a path to one, or an :class:`~gantune.methods.InversionResult`."""
    from ..methods.result import InversionResult

    if isinstance(rec, InversionRecord):
        return rec
    if isinstance(rec, InversionResult):
        return rec.to_record()
    if isinstance(rec, (str, os.PathLike)):
        return InversionRecord.load(Path(rec))
    raise TypeError(f"expected a record, a record path or an InversionResult, got {type(rec).__name__}")


def record_generator_spec(record: InversionRecord) -> str | None:
    """The generator the record was made with (registry name or path), as written by ``invert``."""
    gen = record.meta.get("generator") or {}
    return gen.get("spec") or gen.get("name") or gen.get("path")


def check_latent(G, record: InversionRecord) -> torch.Tensor:
    lat = record.latent.float()
    if record.latent_kind == "w+":
        if tuple(lat.shape) != (G.num_ws, G.cfg.w_dim):
            raise RecordError(f"the record's latent is {tuple(lat.shape)}; this generator needs ({G.num_ws}, {G.cfg.w_dim})",
                              )
        return lat
    if record.latent_kind == "w":
        if lat.shape[-1] != G.cfg.w_dim:
            raise RecordError(f"the record's w has size {lat.shape[-1]}; this generator needs {G.cfg.w_dim}")
        return lat.reshape(1, -1).expand(G.num_ws, -1)
    raise RecordError(f"records with a {record.latent_kind} latent (overparameterized) cannot be edited with this command")


@torch.no_grad()
def render_record(
    G,  # gantune Generator
    record: InversionRecord,
    *,
    latents: torch.Tensor | None = None,  # (B, num_ws, w_dim) edited latents; default the record's own latent
    deltas: dict[str, torch.Tensor] | None = None,  # offsets to use instead of the record's (already selected/scaled)
    noise_mode: str = "const",
    batch_size: int = 8,
) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1]: G(latents; θ ⊙ (1 + Δ)) with the record's offsets shared by the batch."""
    from ..methods.hyper.inference import render
    from ..methods.result import record_deltas

    if record.tuned:
        raise RecordError("the record holds tuned generator weights (PTI); rendering those is not supported here")
    device = G.w_avg.device
    if latents is None:
        latents = check_latent(G, record)[None]
    if deltas is None:
        deltas = record_deltas(record, G.specs)
    d1 = {k: v.float().to(device)[None] for k, v in deltas.items()}
    outs = []
    for i in range(0, latents.shape[0], batch_size):
        ws = latents[i : i + batch_size].to(device)
        outs.append(render(G, ws, d1, noise_mode=noise_mode).cpu())
    return torch.cat(outs)
