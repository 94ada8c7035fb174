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
