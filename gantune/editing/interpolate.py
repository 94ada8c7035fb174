"""Interpolating between inversions (Overparameterized StyleGAN, Fig. 1 and 7): latents, HyperStyle offsets and
tuned generator differences move together along a straight line, frame by frame."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..io.record import InversionRecord
from ..io.render import record_deltas, record_generator_spec, record_latent, render_record
from .render import load_record


def check_compatible(records: list[InversionRecord], names: list[str]) -> None:
    """Refuse, in one line, records of different latent kinds or made with different generators."""
    kinds = {r.latent_kind for r in records}
    if len(kinds) > 1:
        detail = ", ".join(f"{n}: {r.latent_kind}" for n, r in zip(names, records))
        raise InputError(f"the records are of different latent kinds ({detail})",
                         "interpolate records made by the same method")
    gens = {(r.meta.get("generator") or {}).get("sha256") or record_generator_spec(r) for r in records}
    if len(gens) > 1:
        raise InputError("the records were made with different generators",
                         "interpolate records inverted into the same generator")


def load_compatible(records: list, names: list[str]) -> list[InversionRecord]:
    """The records (records, paths or InversionResults) loaded, refused in one line (:func:`check_compatible`) where
    they cannot share a path; ``names`` name them in the message."""
    recs = [load_record(r) for r in records]
    check_compatible(recs, names)
    return recs


def interpolation_pairs(count: int, *, loop: bool = False) -> list[tuple[int, int]]:
    """The (from, to) indices of the path through ``count`` records: each to the next, and the last back to the
    first with ``loop``."""
    pairs = list(zip(range(count), range(1, count)))
    return pairs + [(count - 1, 0)] if loop else pairs


def _lerp_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """(1 - t)·a + t·b per key; a key missing on one side counts as zero there."""
    out = {}
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        x = torch.zeros_like(y) if x is None else x
        y = torch.zeros_like(x) if y is None else y
        out[k] = torch.lerp(x.float(), y.float(), t)
    return out


def _tuned_differences(G, record: InversionRecord) -> dict[str, torch.Tensor]:
    if not record.tuned:
        return {}
    base = G.state_dict()
    return {k: v - base[k] for k, v in record.tuned_state(base).items()}


@torch.no_grad()
def interpolation_frames(G, a: InversionRecord, b: InversionRecord, steps: int | list[float], *,
                         noise_mode: str | None = None):
    """Yield (t, image (3, H, W) in [-1, 1]) for ``steps`` evenly spaced t from 0 (a) to 1 (b), both included, or
    for the given list of t."""

    if isinstance(steps, int):
        if steps < 2:
            raise InputError(f"steps={steps}: a path needs at least 2 frames (its two ends)")
        ts = [i / (steps - 1) for i in range(steps)]
    else:
        ts = [float(t) for t in steps]
    device = G.w_avg.device
    la, lb = record_latent(G, a), record_latent(G, b)
    da, db = record_deltas(a, G.specs, device), record_deltas(b, G.specs, device)
    ta, tb = _tuned_differences(G, a), _tuned_differences(G, b)
    base = G.state_dict() if (ta or tb) else None
    for t in ts:
        state = None
        if base is not None:
            state = {k: base[k] + d.to(base[k].dtype) for k, d in _lerp_dicts(ta, tb, t).items()}
        img = render_record(G, a, latents=torch.lerp(la.float(), lb.float(), t), deltas=_lerp_dicts(da, db, t),
                            noise_mode=noise_mode, state=state)
        yield t, img[0]
