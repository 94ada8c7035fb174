"""The typed result every inversion method returns (one per image)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..io.record import InversionRecord, SharedOffsets


@dataclass
class InversionResult:
    """One inverted image. Tensors are on the CPU, float32, without a batch axis.

    ``deltas`` are HyperStyle-style multiplicative offsets θ̂ = θ ⊙ (1 + Δ) per gantune layer name: (out, in) for
    per-channel offsets (repeated over the k×k taps), or (out, in, k, k) for per-tap offsets (HyperStyle's shared
    refinement blocks predict one value per tap). HyperStyle's shared refinement blocks keep their offsets in the exact
    compact form ``shared`` (see :class:`gantune.io.record.SharedOffsets`) instead of in ``deltas``.
    """

    name: str  # input identifier (file stem or caller's name)
    image: torch.Tensor  # (3, H, W) final reconstruction in [-1, 1] at the generator's resolution
    latent: torch.Tensor  # (num_ws, w_dim) for w+, (1, w_dim) for w, (rows, w_dim) / (num_ws, rows, w_dim) overparam
    latent_kind: str  # w | w+ | W | W+ (see gantune.io.record)
    method: str  # hyperstyle | optim | overparam | …
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name -> (out, in) or (out, in, k, k)
    tuned: dict[str, torch.Tensor] = field(default_factory=dict)  # PTI-style weight differences (record layout)
    intermediates: list[torch.Tensor] = field(default_factory=list)  # (3, H, W) reconstruction after each iteration
    meta: dict = field(default_factory=dict)  # method parameters and anything else that goes into the record
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage for this image (batch time shared)
    shared: SharedOffsets | None = None  # offsets of the shared refinement blocks, compact (per layer (in, z) codes)
    c: torch.Tensor | None = None  # (1, c_dim) class label the image was inverted with (class-conditional generators)

    def to_record(self, *, delta_dtype: torch.dtype = torch.float32, extra_meta: dict | None = None) -> InversionRecord:
        """The on-disk record: offsets as stored (out, in) or (out, in, k, k) tensors in ``delta_dtype``; shared
        offsets in their compact form, exact in float32 (float16 halves them and is lossy: see the README), unless
        writing them out in full takes fewer numbers (small layers with a wide hypernetwork)."""
        meta = dict(self.meta)
        deltas, shared = dict(self.deltas), self.shared
        if shared is not None and shared.numel() >= shared.full_numel():
            deltas.update({k: shared.expand(k) for k in shared.h})
            shared = None
        meta.setdefault("timings", dict(self.timings))
        if extra_meta:
            meta.update(extra_meta)
        return InversionRecord(
            latent=self.latent.detach().cpu().contiguous(),  # kept in its own dtype (overparam stores fp16 W)
            latent_kind=self.latent_kind,
            method=self.method,
            deltas={k: v.detach().to("cpu", delta_dtype).contiguous() for k, v in deltas.items()},
            tuned={k: v.detach().cpu() for k, v in self.tuned.items()},
            meta=meta,
            shared=shared.to(delta_dtype) if shared is not None else None,
            c=None if self.c is None else self.c.detach().to("cpu", torch.float32),
        )


def record_deltas(record: InversionRecord, specs=None, device=None) -> dict[str, torch.Tensor]:
    """A record's offsets as float32 (out, in) or (out, in, k, k) tensors (compact shared offsets expanded on
    ``device``, the device that renders, so that they are the very numbers the inversion rendered with).

    With ``specs`` (the generator's layer specs), unknown layers and shapes that do not fit are reported. (Records
    written before the core took per-tap offsets stored them flattened to (out, in·k·k) with ``meta["delta_taps"]``;
    those are reshaped.)"""
    from ..io.record import RecordError

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
