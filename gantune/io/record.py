"""The inversion record: what ``invert-*`` writes and ``edit`` / ``adapt`` read.

One safetensors file per image. Tensors:

* ``latent``: ``w`` (1, w_dim), ``w+`` (num_ws, w_dim), ``W`` (rows, w_dim) or ``W+`` (num_ws, rows, w_dim);
* ``delta.<layer>``: accumulated HyperStyle offsets (out, in), θ̂ = θ ⊙ (1 + Δ), only for tuned layers; layers
  tuned by HyperStyle's shared heads have full-kernel offsets (out, in, k, k);
* ``shared.h.<layer>``, ``shared.w1``, ``shared.b1``: the offsets of HyperStyle's shared refinement blocks in their
  exact compact form (see :class:`SharedOffsets`): Δ = (h @ w1 + T·b1) read as (out, in, k, k), where h (in, z) is the
  sum over the T passes of the block's hidden code and w1, b1 are the hypernetwork's shared output layer (once per
  record). 6 MB for the six 512×512 layers of a 1024 px model instead of 57 MB of full offsets;
* ``c``: the class label (1, c_dim) of a record made with a class-conditional generator (one-hot for ``--class K``);
* ``tuned.<param>``: PTI generator-weight differences θ̂ − θ (fp16), or ``tuned.<param>.u`` / ``.v`` low-rank
  factors (the difference is u @ v reshaped to the parameter's shape).

The safetensors metadata holds one key, ``gantune``, a JSON object with at least ``format_version``, ``method``,
``latent_kind`` and ``generator`` (registry name / path, sha256, config); with shared offsets also
``shared_offsets`` = {"count": T, "kernel": k}; see :class:`InversionRecord`. Every tensor must be finite.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..errors import GantuneError
from .atomic import atomic_path

FORMAT_VERSION = 1
MAX_META_BYTES = 4 << 20  # a record's metadata is a few kB; anything near this is not a record gantune wrote
MAX_META_DEPTH = 32
LATENT_KINDS = ("w", "w+", "W", "W+")
SHARED_META_KEY = "shared_offsets"
# metadata keys gantune reads back, and the JSON type each must have (other keys are kept as they are)
META_TYPES = {"format_version": int, "method": str, "latent_kind": str, "generator": dict, "params": dict,
              "source": dict, "metrics": dict, "timings": dict, "noise_mode": str, "seed": int, "delta_taps": dict,
              "align": dict, "fit": dict, SHARED_META_KEY: dict, "class": int}


class RecordError(GantuneError, ValueError):
    """An inversion record that is missing, malformed, or does not fit the generator."""


def expand_shared(h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, count: int, kernel: int) -> torch.Tensor:
    """Full per-tap offsets of a shared refinement block from its hidden code: h (…, in, z) -> (…, out, in, k, k),
    ``h @ w1 + count·b1`` read as HyperStyle reads that memory (a view, not a transpose). Offsets of T passes are one
    affine map of the summed codes, so this is exact for the accumulated offsets. The one implementation used by the
    hypernetwork, the refinement loop and records, so that all three give the same bits."""
    size = h.shape[-2]
    out = torch.addmm(b1 * count, h, w1) if h.ndim == 2 else h @ w1 + b1 * count  # addmm: the bias in the GEMM
    return out.view(*h.shape[:-2], size, size, kernel, kernel)


@dataclass
class SharedOffsets:
    """Offsets of HyperStyle's shared refinement blocks, stored exactly in compact form (see :func:`expand_shared`)."""

    h: dict[str, torch.Tensor]  # layer name -> (in, z): sum over the passes of the block's hidden code
    w1: torch.Tensor  # (z, out·k·k): the hypernetwork's shared output weight
    b1: torch.Tensor  # (out·k·k,): its bias, added once per pass
    count: int  # number of passes summed (T)
    kernel: int = 3

    def __post_init__(self) -> None:
        if self.w1.ndim != 2 or tuple(self.b1.shape) != (self.w1.shape[1],):
            raise RecordError(f"shared.w1 / shared.b1 have shapes {tuple(self.w1.shape)} / {tuple(self.b1.shape)}; "
                              "expected (z, out·k·k) / (out·k·k,)")
        if int(self.count) < 1 or int(self.kernel) < 1:
            raise RecordError(f"shared offsets: count {self.count} and kernel {self.kernel} must be positive")
        z, n = self.w1.shape
        for name, h in self.h.items():
            if h.ndim != 2 or h.shape[1] != z or h.shape[0] * self.kernel ** 2 != n:
                raise RecordError(f"shared.h.{name} has shape {tuple(h.shape)}; with shared.w1 {tuple(self.w1.shape)} "
                                  f"and kernel {self.kernel} it must be (out, {z}) with out·k² = {n}")

    def expand(self, name: str, device=None) -> torch.Tensor:
        """Layer ``name``'s full offsets (out, in, k, k), float32, computed on ``device``."""
        return expand_shared(self.h[name].to(device, torch.float32), self.w1.to(device, torch.float32),
                             self.b1.to(device, torch.float32), int(self.count), int(self.kernel))

    def numel(self) -> int:
        """Numbers stored in the compact form."""
        return sum(h.numel() for h in self.h.values()) + self.w1.numel() + self.b1.numel()

    def full_numel(self) -> int:
        """Numbers the same offsets take written out in full."""
        return len(self.h) * self.w1.shape[1] * next(iter(self.h.values())).shape[0] if self.h else 0

    def to(self, dtype: torch.dtype) -> "SharedOffsets":
        """The same structure with its tensors stored in ``dtype`` on the CPU (float16: a smaller, lossy record)."""
        def conv(t):
            return t.detach().to("cpu", dtype).contiguous()

        return SharedOffsets({k: conv(v) for k, v in self.h.items()}, conv(self.w1), conv(self.b1),
                             int(self.count), int(self.kernel))


def parse_record_meta(p, text: str) -> dict:
    """A record's ``gantune`` metadata, checked once where records are read: a JSON object of bounded size and
    depth whose known keys (:data:`META_TYPES`) have the right types. Anything else is a one-line RecordError."""
    if len(text) > MAX_META_BYTES:
        raise RecordError(f"{p}: record metadata of {len(text):,} characters (at most {MAX_META_BYTES:,})",
                          "this is not a record gantune wrote")
    if text.count("[") + text.count("{") > MAX_META_DEPTH and _bracket_depth(text) > MAX_META_DEPTH:
        raise RecordError(f"{p}: record metadata nested deeper than {MAX_META_DEPTH} levels",
                          "this is not a record gantune wrote")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise RecordError(f"{p}: corrupt record metadata ({str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise RecordError(f"{p}: record metadata is a JSON {type(header).__name__}, not an object",
                          "this is not a record gantune wrote")
    for key, kind in META_TYPES.items():
        v = header.get(key)
        if v is not None and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))):
            raise RecordError(f"{p}: record metadata {key!r} is a {type(v).__name__}, expected "
                              f"{'an object' if kind is dict else kind.__name__}", "this record is damaged")
    return header


def _bracket_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text (strings skipped), found without parsing it."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            esc, in_str = (not esc and ch == "\\"), in_str and not (ch == '"' and not esc)
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_finite(p, tensors: dict[str, torch.Tensor]) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise RecordError(f"{p}: tensor {k!r} holds {bad} non-finite value(s) (NaN or infinity); the record is damaged",
                              "invert the image again")


@dataclass
class InversionRecord:
    latent: torch.Tensor  # see module docstring for the shape per kind
    latent_kind: str  # w | w+ | W | W+
    method: str  # hyperstyle | optim | overparam | …
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name -> (out, in) or (out, in, k, k)
    tuned: dict[str, torch.Tensor] = field(default_factory=dict)  # raw tensors as stored ("<param>" or "<param>.u/.v")
    meta: dict = field(default_factory=dict)  # everything else: params, generator, source, align transform, timings
    shared: SharedOffsets | None = None  # offsets of HyperStyle's shared refinement blocks, compact and exact
    c: torch.Tensor | None = None  # (1, c_dim) class label for a class-conditional generator

    def __post_init__(self) -> None:
        if self.c is not None and (self.c.ndim != 2 or self.c.shape[0] != 1 or not self.c.is_floating_point()):
            raise RecordError(f"the class label c must be a (1, c_dim) float tensor, got {tuple(self.c.shape)}")
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
        if self.shared is not None:
            both = set(self.shared.h) & set(self.deltas)
            if both:
                raise RecordError(f"layer(s) {sorted(both)} have both full and shared offsets")

    def offsets(self, device=None) -> dict[str, torch.Tensor]:
        """Every layer's offsets as stored: ``deltas`` as they are (their own dtype, on the CPU) and the shared
        layers expanded to float32 (out, in, k, k) on ``device``."""
        out = dict(self.deltas)
        if self.shared is not None:
            out.update({name: self.shared.expand(name, device) for name in self.shared.h})
        return out

    # --- generator-facing helpers --------------------------------------------------------------------------------
    def synthesis_kwargs(self, *, device=None, batch: bool = True) -> dict:
        """Keyword arguments for ``SynthesisNetwork.forward``: ``ws`` or ``wmat`` (with a batch axis) and deltas."""
        lat = self.latent.float().to(device)
        if batch:
            lat = lat[None]
        key = "ws" if self.latent_kind in ("w", "w+") else "wmat"
        if self.latent_kind == "w":
            lat = lat[:, 0] if batch else lat[0]
        deltas = {k: v.float().to(device)[None] for k, v in self.offsets(device).items()}
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
        if self.c is not None:
            t["c"] = self.c.float().contiguous()
        t.update({f"delta.{k}": v.contiguous() for k, v in self.deltas.items()})
        t.update({f"tuned.{k}": v.contiguous() for k, v in self.tuned.items()})
        if self.shared is not None:
            t.update({f"shared.h.{k}": v.contiguous() for k, v in self.shared.h.items()})
            t.update({"shared.w1": self.shared.w1.contiguous(), "shared.b1": self.shared.b1.contiguous()})
        return t

    def header(self) -> dict:
        h = dict(self.meta)
        h.pop(SHARED_META_KEY, None)
        if self.shared is not None:
            h[SHARED_META_KEY] = {"count": int(self.shared.count), "kernel": int(self.shared.kernel)}
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
        header = parse_record_meta(p, meta["gantune"])
        if header.get("format_version", 0) > FORMAT_VERSION:
            raise RecordError(f"{p}: record format {header['format_version']} is newer than this gantune; upgrade gantune")
        if "latent" not in tensors:
            raise RecordError(f"{p}: record has no 'latent' tensor")
        _check_finite(p, tensors)
        deltas, tuned, shared_h = {}, {}, {}
        for k, v in tensors.items():
            if k.startswith("delta."):
                deltas[k[len("delta.") :]] = v
            elif k.startswith("tuned."):
                tuned[k[len("tuned.") :]] = v
            elif k.startswith("shared.h."):
                shared_h[k[len("shared.h.") :]] = v
            elif k not in ("latent", "c", "shared.w1", "shared.b1"):
                raise RecordError(f"{p}: unexpected tensor {k!r} in record")
        method = header.pop("method", "unknown")
        kind = header.pop("latent_kind", None)
        header.pop("format_version", None)
        shared_meta = header.pop(SHARED_META_KEY, None)
        shared = None
        if shared_h or "shared.w1" in tensors or shared_meta is not None:
            if not (shared_h and "shared.w1" in tensors and "shared.b1" in tensors and isinstance(shared_meta, dict)):
                raise RecordError(f"{p}: incomplete shared offsets (need shared.h.*, shared.w1, shared.b1 and the "
                                  f"{SHARED_META_KEY!r} metadata)", "invert the image again")
            try:
                shared = SharedOffsets(shared_h, tensors["shared.w1"], tensors["shared.b1"],
                                       int(shared_meta.get("count", 0)), int(shared_meta.get("kernel", 3)))
            except (TypeError, ValueError) as e:
                if isinstance(e, RecordError):
                    raise RecordError(f"{p}: {e}") from None
                raise RecordError(f"{p}: malformed {SHARED_META_KEY} metadata ({e})") from None
        try:
            return cls(latent=tensors["latent"], latent_kind=kind, method=method, deltas=deltas, tuned=tuned,
                       meta=header, shared=shared, c=tensors.get("c"))
        except RecordError as e:
            raise RecordError(f"{p}: {e}") from None


def class_label(c_dim: int, index: int | None, *, what: str = "this generator") -> torch.Tensor | None:
    """The one-hot class label (1, c_dim) for ``--class index``, or None for an unconditional generator; a missing,
    needless or out-of-range class is a one-line :class:`RecordError`."""
    if not c_dim:
        if index is not None:
            raise RecordError(f"--class {index}: {what} is not class-conditional", "drop --class")
        return None
    if index is None:
        raise RecordError(f"{what} is class-conditional ({c_dim} classes)", f"give --class K with K from 0 to {c_dim - 1}")
    if not 0 <= int(index) < c_dim:
        raise RecordError(f"--class {index} is out of range: {what} has classes 0 to {c_dim - 1}")
    c = torch.zeros(1, c_dim)
    c[0, int(index)] = 1.0
    return c


def check_record_class(record: InversionRecord, c_dim: int) -> None:
    """A record fits a generator's conditioning: a class label of the right width for a conditional generator, none
    for an unconditional one."""
    if c_dim and record.c is None:
        raise RecordError(f"the record has no class label, but the generator is class-conditional ({c_dim} classes)",
                          "invert the image again with --class K")
    if record.c is not None and record.c.shape[1] != c_dim:
        raise RecordError(f"the record's class label has {record.c.shape[1]} entries; the generator takes "
                          f"{c_dim or 'none (it is unconditional)'}", "render it with the generator it was made with")
