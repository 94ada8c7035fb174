"""Editing-side helpers around records: taking a record in any form, and the latents of a direction edit. Rendering
a record is :mod:`gantune.io.render` (re-exported here)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io.record import InversionRecord
from ..io.render import (CHECKPOINT_SUFFIXES, record_crop, record_generator_spec, record_latent, record_noise_mode,
                         record_path_is_usable, render_record, synthesize)
from ..methods.result import InversionResult

__all__ = ["CHECKPOINT_SUFFIXES", "edited_latents", "load_record", "record_crop", "record_generator_spec",
           "record_latent", "record_noise_mode", "record_path_is_usable", "render_record", "synthesize"]


def load_record(rec) -> InversionRecord:
    """An :class:`InversionRecord`, a path to one, or an :class:`~gantune.methods.InversionResult`."""
    if isinstance(rec, InversionRecord):
        return rec
    if isinstance(rec, InversionResult):
        return rec.to_record()
    if isinstance(rec, (str, os.PathLike)):
        return InversionRecord.load(Path(rec))
    raise TypeError(f"expected a record, a record path or an InversionResult, got {type(rec).__name__}")


def edited_latents(G, record: InversionRecord, direction: torch.Tensor, strengths: list[float]) -> torch.Tensor:
    """Latents (S, …) for ``latent + s·direction``, direction (num_ws, w_dim). For a latent matrix the direction
    moves every row; a shared matrix W becomes one matrix per layer (W+) so per-layer directions stay per layer."""
    lat = record_latent(G, record)[0]
    n = direction.float().to(lat.device)
    if record.latent_kind == "W":
        lat = lat[None].expand(G.num_ws, *lat.shape)
    if record.latent_kind in ("W", "W+"):
        n = n[:, None, :]
    return torch.stack([lat + float(s) * n for s in strengths])
