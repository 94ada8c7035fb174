"""The inversion record: what ``invert-*`` writes and ``edit`` / ``adapt`` read.

One safetensors file per image. Tensors:

* ``latent``: ``w`` (1, w_dim), ``w+`` (num_ws, w_dim), ``W`` (rows, w_dim) or ``W+`` (num_ws, rows, w_dim);
* ``delta.<layer>``: accumulated HyperStyle offsets (out, in), θ̂ = θ ⊙ (1 + Δ), only for tuned layers; layers
  tuned by HyperStyle's shared heads have full-kernel offsets (out, in, k, k);
* ``tuned.<param>``: PTI generator-weight differences θ̂ − θ (fp16), or ``tuned.<param>.u`` / ``.v`` low-rank
  factors (the difference is u @ v reshaped to the parameter's shape).

The safetensors metadata holds one key, ``gantune``, a JSON object with at least ``format_version``, ``method``,
``latent_kind`` and ``generator`` (registry name / path, sha256, config); see :class:`InversionRecord`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_path

FORMAT_VERSION = 1
LATENT_KINDS = ("w", "w+", "W", "W+")


class RecordError(ValueError):
    """An inversion record that is missing, malformed, or does not fit the generator."""


@dataclass
class InversionRecord:
    latent: torch.Tensor  # see module docstring for the shape per kind
    latent_kind: str  # w | w+ | W | W+
    method: str  # hyperstyle | optim | overparam | …
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name -> (out, in) or (out, in, k, k)
    tuned: dict[str, torch.Tensor] = field(default_factory=dict)  # raw tensors as stored ("<param>" or "<param>.u/.v")
    meta: dict = field(default_factory=dict)  # everything else: params, generator, source, align transform, timings

    def __post_init__(self) -> None:
        if self.latent_kind not in LATENT_KINDS:
            raise RecordError(f"latent kind must be one of {LATENT_KINDS}, got {self.latent_kind!r}")
        want_ndim = {"w": 2, "w+": 2, "W": 2, "W+": 3}[self.latent_kind]
        if self.latent.ndim != want_ndim:
            raise RecordError(f"latent of kind {self.latent_kind} must have {want_ndim} dims, got {tuple(self.latent.shape)}")
        if self.latent_kind == "w" and self.latent.shape[0] != 1:
            raise RecordError(f"latent of kind w must be (1, w_dim), got {tuple(self.latent.shape)}")
        for name, d in self.deltas.items():
            if d.ndim not in (2, 4):
                raise RecordError(f"delta.{name} must be (out, in) or (out, in, k, k), got {tuple(d.shape)}")

    # --- generator-facing helpers --------------------------------------------------------------------------------
    def synthesis_kwargs(self, *, device=None, batch: bool = True) -> dict:
        """Keyword arguments for ``SynthesisNetwork.forward``: ``ws`` or ``wmat`` (with a batch axis) and deltas."""
        lat = self.latent.float().to(device)
        if batch:
            lat = lat[None]
        key = "ws" if self.latent_kind in ("w", "w+") else "wmat"
        if self.latent_kind == "w":
            lat = lat[:, 0] if batch else lat[0]
        deltas = {k: v.float().to(device)[None] for k, v in self.deltas.items()}
        return {key: lat, "deltas": deltas or None}

    def tuned_state(self, base_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The generator parameters with the PTI differences added (only the tuned ones are returned)."""
        out: dict[str, torch.Tensor] = {}
        names = {k[: -len(".u")] if k.endswith((".u", ".v")) else k for k in self.tuned}
        for name in sorted(names):
            if name not in base_state:
                raise RecordError(f"tuned.{name}: the generator has no parameter of that name")
            base = base_state[name]
            if name in self.tuned:
                diff = self.tuned[name].float()
            else:
                diff = (self.tuned[name + ".u"].float() @ self.tuned[name + ".v"].float()).reshape(base.shape)
            if diff.shape != base.shape:
                raise RecordError(f"tuned.{name}: shape {tuple(diff.shape)} does not match {tuple(base.shape)}")
            out[name] = base + diff.to(base.device)
        return out

    # --- files --------------------------------------------------------------------------------------------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        t = {"latent": self.latent.contiguous()}
        t.update({f"delta.{k}": v.contiguous() for k, v in self.deltas.items()})
        t.update({f"tuned.{k}": v.contiguous() for k, v in self.tuned.items()})
        return t

    def header(self) -> dict:
        from .. import __version__

        h = dict(self.meta)
        h.update(format_version=FORMAT_VERSION, method=self.method, latent_kind=self.latent_kind)
        h.setdefault("gantune_version", __version__)
        return h

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        p = Path(path)
        with atomic_path(p) as tmp:
            save_file(
                {k: v.detach().cpu() for k, v in self.to_tensors().items()},
                str(tmp),
                metadata={"gantune": json.dumps(self.header(), sort_keys=True, default=str)},
            )
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InversionRecord":
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        p = Path(path)
        if not p.is_file():
            raise RecordError(f"{p}: no such record (expected a .safetensors file written by gantune invert)")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise RecordError(f"{p}: not a safetensors file ({e})") from None
        if "gantune" not in meta:
            raise RecordError(f"{p}: not a gantune inversion record (no 'gantune' metadata)")
        try:
            header = json.loads(meta["gantune"])
        except json.JSONDecodeError as e:
            raise RecordError(f"{p}: corrupt record metadata ({e})") from None
        if header.get("format_version", 0) > FORMAT_VERSION:
            raise RecordError(f"{p}: record format {header['format_version']} is newer than this gantune; upgrade gantune")
        if "latent" not in tensors:
            raise RecordError(f"{p}: record has no 'latent' tensor")
        deltas, tuned = {}, {}
        for k, v in tensors.items():
            if k.startswith("delta."):
                deltas[k[len("delta.") :]] = v
            elif k.startswith("tuned."):
                tuned[k[len("tuned.") :]] = v
            elif k != "latent":
                raise RecordError(f"{p}: unexpected tensor {k!r} in record")
        method = header.pop("method", "unknown")
        kind = header.pop("latent_kind", None)
        header.pop("format_version", None)
        return cls(latent=tensors["latent"], latent_kind=kind, method=method, deltas=deltas, tuned=tuned, meta=header)
