"""Latent directions: InterFaceGAN files (``age.pt``, ``smile.pt`` (1, 512); ``pose.pt`` (1, 18, 512)) and ``.npy``
arrays, applied as ``w + s · n`` (HyperStyle's face editor: ``latents + f * direction``).

GANSpace files (``{'mean','std','comp'}``, see :mod:`.ganspace`) are read with a component selector:
``FILE.pt:K`` (component K, all W+ rows), ``FILE.pt:K:START-END`` (rows START..END-1) or ``FILE.pt:K:LEVEL``
(coarse / medium / fine, from the file's layer ranges). The direction is std_K · comp_K, so ``w + s · n`` is GANSpace's
additive form with s in standard deviations; the e4e "absolute" form is :meth:`.ganspace.GANSpace.apply`.

Every direction is checked when it is read: real numbers (integer or floating point; complex, boolean and text arrays
are refused), all finite, and no W+ row longer than :data:`MAX_DIRECTION_NORM` (1e4; InterFaceGAN normals have norm 1
and GANSpace components a few standard deviations of w, so a longer row is a broken file: it renders a white or NaN
image)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.hashing import sha256_file
from ..weights import registry, resolve, safe_torch_load
from .ganspace import load_ganspace

MAX_DIRECTION_NORM = 1e4  # the longest W+ row (L2 norm) a direction file may have
SHORT_NAMES = {"age": "interfacegan-age", "smile": "interfacegan-smile", "pose": "interfacegan-pose"}


@dataclass
class Direction:
    """One editing direction in W or W+."""

    name: str  # short name for file names (file stem or registry name)
    vector: torch.Tensor  # (w_dim,) for a W direction, (num_ws, w_dim) for a per-layer W+ direction
    source: str  # where it came from (path)
    layers: tuple[int, int] | None = None  # W+ rows [start, end) the direction acts on (GANSpace); None = all

    def fit(self, num_ws: int, w_dim: int) -> torch.Tensor:
        """The direction as (num_ws, w_dim), checked against the generator."""
        v = self.vector.float()
        if v.shape[-1] != w_dim:
            raise InputError(f"direction {self.name} has size {v.shape[-1]}, the generator's w has {w_dim}")
        if self.layers is not None:
            a, b = self.layers
            if not 0 <= a < b <= num_ws:
                raise InputError(f"direction {self.name}: rows {a}:{b} are outside the generator's {num_ws} W+ rows")
            rows = v[None].expand(num_ws, w_dim) if v.ndim == 1 else v
            keep = torch.zeros(num_ws, 1)
            keep[a:b] = 1.0
            return rows * keep
        if v.ndim == 1:
            return v[None].expand(num_ws, w_dim)
        if v.shape[0] != num_ws:
            raise InputError(f"direction {self.name} has {v.shape[0]} layers, the generator has {num_ws}",
                             "a W+ direction must match the generator's resolution")
        return v


def _real_tensor(arr, source: str) -> torch.Tensor:
    """``arr`` (numpy array or tensor) as a float tensor, or an :class:`InputError` for complex, boolean or
    non-numeric values (a complex array would silently lose its imaginary part)."""
    if isinstance(arr, torch.Tensor):
        ok, kind = not (arr.is_complex() or arr.dtype == torch.bool), str(arr.dtype).removeprefix("torch.")
    else:
        arr = np.asarray(arr)
        ok, kind = arr.dtype.kind in "iuf", str(arr.dtype)
    if not ok:
        raise InputError(f"{source}: the direction holds {kind} values, not real numbers",
                         "save the direction as a float array, e.g. np.save(path, v.astype(np.float32))")
    return torch.as_tensor(arr).detach().float().cpu()


def _as_vector(arr, name: str, source: str) -> torch.Tensor:
    t = _real_tensor(arr, source)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]  # (1, L, w) -> (L, w)
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]  # (1, w) -> (w,)
    if t.ndim not in (1, 2) or t.numel() == 0:
        raise InputError(f"{source}: a direction must be (w,), (1, w), (L, w) or (1, L, w); got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise InputError(f"{source}: the direction contains NaN or infinite values ({bad} of {t.numel()})",
                         "use a direction file with finite numbers")
    longest = float(t.double().reshape(-1, t.shape[-1]).norm(dim=-1).max())
    if longest > MAX_DIRECTION_NORM:
        raise InputError(f"{source}: the direction has norm {longest:.3g}; more than {MAX_DIRECTION_NORM:g} is not an "
                         "editing direction", "use a unit direction (InterFaceGAN) or a GANSpace component; scale with "
                         "--strength")
    return t


_GANSPACE_SELECTOR = re.compile(r"^(?P<path>.+):(?P<k>\d+)(?::(?P<rows>\d+-\d+|[a-z]+))?$")


def _ganspace_direction(path: Path, k: int, rows: str | None) -> Direction:
    gs = load_ganspace(path)
    layers = None
    if rows and "-" in rows:
        a, b = (int(v) for v in rows.split("-"))
        layers = (a, b)
    elif rows:
        if rows not in gs.layer_ranges:
            known = ", ".join(sorted(gs.layer_ranges)) or "none in this file; use START-END"
            raise InputError(f"{path}: no layer range {rows!r} (known: {known})")
        layers = tuple(gs.layer_ranges[rows])
    name = f"{path.stem}_c{k}" + (f"_{rows}" if rows else "")
    return Direction(name, _as_vector(gs.direction(k), name, str(path)), str(path), layers)


def load_direction(spec: str | os.PathLike) -> Direction:
    """A direction by registry name (``age``/``smile``/``pose`` or ``interfacegan-age`` …) or file (``.pt``, ``.npy``),
    or a GANSpace component ``FILE.pt:K[:START-END|:LEVEL]`` (FILE may be a registry name: ``ganspace-ffhq:0``)."""
    p = Path(spec)
    m = _GANSPACE_SELECTOR.match(str(spec))
    if not p.is_file() and m and Path(m["path"]).is_file():
        return _ganspace_direction(Path(m["path"]), int(m["k"]), m["rows"])
    if not p.is_file() and m and not any(c in m["path"] for c in "/\\"):
        if m["path"] in registry.names():  # a registry name of a GANSpace file: demo-faces-ganspace:0
            return _ganspace_direction(Path(resolve(m["path"])), int(m["k"]), m["rows"])
    if not p.is_file():
        name = SHORT_NAMES.get(str(spec), str(spec))
        if any(c in str(spec) for c in "/\\") or p.suffix in (".pt", ".npy", ".pth"):
            raise InputError(f"{spec}: no such direction file")

        p = Path(resolve(name))
        label = str(spec)
    else:
        label = p.stem
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{p}: not a plain numeric .npy array ({e})") from None
        return Direction(label, _as_vector(arr, label, str(p)), str(p))

    obj = safe_torch_load(p)
    if isinstance(obj, dict):
        if {"comp", "std", "mean"} <= set(obj):
            raise InputError(f"{p}: this is a GANSpace PCA file (comp/std/mean), not a single direction",
                             f"pick a component: {p}:K, {p}:K:START-END or {p}:K:LEVEL")
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise InputError(f"{p}: a dict with keys {sorted(obj)[:5]}; expected one direction tensor")
        obj = tensors[0]
    if not isinstance(obj, (torch.Tensor, np.ndarray)):
        raise InputError(f"{p}: holds a {type(obj).__name__}, not a direction tensor")
    return Direction(label, _as_vector(obj, label, str(p)), str(p))


def apply_direction(latent: torch.Tensor, direction: torch.Tensor, strength: float) -> torch.Tensor:
    """``latent + strength · direction``; latent (num_ws, w) or (B, num_ws, w), direction (w,) or (num_ws, w)."""
    return latent + strength * direction.to(latent.device, latent.dtype)


def parse_strengths(text: str | float, option: str = "--strength") -> list[float]:
    """``2`` -> [2.0]; ``-1,0,2`` -> list; ``-3:3:7`` -> 7 evenly spaced values from -3 to 3 (both included).

    Every value must be a finite number: ``nan``, ``inf``, ``1e400`` (overflows to inf) and an empty text are refused
    with an :class:`InputError` that names ``option`` (the option the text came from: --strength, --alpha)."""
    hint = "give a number (2), a list (-1,0,1) or a range START:STOP:COUNT (-3:3:7)"
    if isinstance(text, (int, float)):
        if not math.isfinite(float(text)):
            raise InputError(f"{option} {text!r}: not a finite number", hint)
        return [float(text)]
    s = str(text).strip()
    if not s:
        raise InputError(f"{option} is empty", hint)
    try:
        if ":" in s:
            a, b, n = s.split(":")
            a, b, n = float(a), float(b), int(n)
            if n < 1:
                raise ValueError
            values = [a, b]
        else:
            parts = [v.strip() for v in s.split(",")]
            if not all(parts):
                raise ValueError
            values = [float(v) for v in parts]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected a number, a list or a range", hint) from None
    if ":" in s and all(math.isfinite(v) for v in values):
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing span gives inf/nan, refused below
            values = [float(v) for v in np.linspace(a, b, n)] if n > 1 else [a]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise InputError(f"{option} {text!r}: {bad[0]} is not a finite number", hint)
    return values


def input_identity(spec: str | os.PathLike | None) -> str | dict | None:
    """How a re-run recognises an input named on the command line (a direction, a generator, a photo), whatever the
    folder it runs from: a file by its content, ``{"sha256": …}``; anything else (a registry name, a URL) by its text.
    Batch params hold this instead of the path, so a resume check compares contents, not spellings of paths."""
    if spec is None:
        return None
    p = Path(spec)
    return {"sha256": sha256_file(p)} if p.is_file() else str(spec)
