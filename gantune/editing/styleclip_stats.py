"""StyleCLIP statistics of a generator (:class:`StyleStats`): the channel relevance matrix R and the per-layer style
means and standard deviations, their file (:meth:`StyleStats.save`, :func:`load_style_stats`), and the published
FFHQ files (``fs3.npy``, ``S_mean_std``) mapped onto a generator's layer names (:func:`import_styleclip_stats`).
Computing them for any generator: :mod:`gantune.editing.styleclip_compute`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, WeightsError
from ..io.atomic import atomic_write
from ..weights.safe_pickle import AllowListUnpickler, _numpy_globals

STATS_FORMAT = "gantune-styleclip-stats"
STATS_VERSION = 1


# --- statistics ---------------------------------------------------------------------------------------------------
@dataclass
class StyleStats:
    """Channel relevance and style statistics of one generator."""

    layers: list[str]  # conv layers covered by ``relevance``, in generator order
    relevance: torch.Tensor  # (Σ in_ch of ``layers``, clip_dim): unit rows
    s_mean: dict[str, torch.Tensor]  # layer name -> (in,) mean style, every modulated layer
    s_std: dict[str, torch.Tensor]  # layer name -> (in,) style standard deviation
    meta: dict = field(default_factory=dict)

    def check(self, G) -> None:
        """One-line errors when these statistics do not fit generator ``G``."""
        specs = {s.name: s for s in G.specs}
        for name in self.layers:
            if name not in specs:
                raise InputError(f"the StyleCLIP statistics cover layer {name}, which this generator does not have",
                                 "compute them for this generator: gantune directions styleclip-stats --weights G")
        need = sum(specs[n].in_ch for n in self.layers)
        if self.relevance.shape[0] != need:
            raise InputError(f"the StyleCLIP relevance matrix has {self.relevance.shape[0]} rows; the generator's "
                             f"layers {self.layers[0]}…{self.layers[-1]} have {need} channels",
                             "compute the statistics for this generator: gantune directions styleclip-stats")
        for name in self.layers:
            std = self.s_std.get(name)
            if std is None or std.shape != (specs[name].in_ch,):
                raise InputError(f"the StyleCLIP statistics have no style std of {specs[name].in_ch} channels for "
                                 f"{name}", "compute them for this generator: gantune directions styleclip-stats")

    def to_state(self) -> dict:
        state = {"relevance": self.relevance.float().contiguous()}
        for n, t in self.s_mean.items():
            state[f"s_mean.{n}"] = t.float().contiguous()
        for n, t in self.s_std.items():
            state[f"s_std.{n}"] = t.float().contiguous()
        head = {"format": STATS_FORMAT, "version": STATS_VERSION, "layers": self.layers, "meta": self.meta}
        return {"header": json.dumps(head), "tensors": state}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_write(path) as f:
            torch.save(self.to_state(), f)


def _stats_from_state(obj, source: str) -> StyleStats:
    if not isinstance(obj, dict) or "header" not in obj or "tensors" not in obj:
        raise InputError(f"{source}: not a gantune StyleCLIP statistics file",
                         "make one with gantune directions styleclip-stats, or give fs3.npy with S_mean_std")
    try:
        head = json.loads(obj["header"])
    except (TypeError, ValueError):
        raise InputError(f"{source}: the statistics header is not valid JSON") from None
    if head.get("format") != STATS_FORMAT:
        raise InputError(f"{source}: not a gantune StyleCLIP statistics file (format {head.get('format')!r})")
    t = obj["tensors"]
    rel = t.get("relevance")
    if not isinstance(rel, torch.Tensor) or rel.ndim != 2:
        raise InputError(f"{source}: the statistics have no 2-D relevance matrix")
    s_mean = {k[len("s_mean."):]: v.float() for k, v in t.items() if k.startswith("s_mean.")}
    s_std = {k[len("s_std."):]: v.float() for k, v in t.items() if k.startswith("s_std.")}
    for name, v in [("relevance", rel), *s_std.items()]:
        if not torch.isfinite(v).all():
            raise InputError(f"{source}: {name} contains NaN or infinite values", "compute the statistics again")
    return StyleStats(list(head.get("layers") or []), rel.float(), s_mean, s_std, dict(head.get("meta") or {}))


def load_style_stats(path: str | os.PathLike) -> StyleStats:
    """A statistics file written by :meth:`StyleStats.save` (read with ``torch.load(weights_only=True)``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such StyleCLIP statistics file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file that is not a checkpoint
        raise InputError(f"{p}: not a readable statistics file ({type(e).__name__})",
                         "make one with gantune directions styleclip-stats") from None
    return _stats_from_state(obj, str(p))


# --- the published StyleCLIP files ----------------------------------------------------------------------------------
def _numpy_unpickler_globals() -> dict:
    allowed = {}
    for g in _numpy_globals():
        obj, name = g if isinstance(g, tuple) else (g, f"{g.__module__}.{g.__name__}")
        mod, _, attr = name.rpartition(".")
        allowed[(mod, attr)] = obj
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    try:  # protocol 5 pickles of arrays (numpy >= 1.16): an array from bytes, dtype, shape and order
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    allowed[("numpy._core.numeric", "_frombuffer")] = allowed[("numpy.core.numeric", "_frombuffer")] = _frombuffer
    return allowed


def read_s_mean_std(path: str | os.PathLike) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """StyleCLIP's ``S_mean_std``: a pickle of ``(means, stds)``, lists with one array per style layer in generator
    order (conv and toRGB); a ``(_, means, stds)`` triple is read as well. Only numpy data is resolved."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            obj = AllowListUnpickler(f, _numpy_unpickler_globals(), source=p.name).load()
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or foreign pickle raises many types
        raise InputError(f"{p}: not a StyleCLIP S_mean_std pickle ({type(e).__name__})",
                         "download it again (gantune weights fetch styleclip-ffhq-s-mean-std)") from None
    if not isinstance(obj, (list, tuple)) or len(obj) not in (2, 3):
        raise InputError(f"{p}: expected a pickled (means, stds) pair, got {type(obj).__name__}")
    means, stds = obj[-2], obj[-1]
    if not (isinstance(means, (list, tuple)) and isinstance(stds, (list, tuple)) and len(means) == len(stds)):
        raise InputError(f"{p}: means and stds must be two lists of the same length")
    means = [np.asarray(m, dtype=np.float32).reshape(-1) for m in means]
    stds = [np.asarray(s, dtype=np.float32).reshape(-1) for s in stds]
    return means, stds


def read_fs3(path: str | os.PathLike) -> np.ndarray:
    """StyleCLIP's ``fs3.npy``: (channels, clip_dim) relevance of the conv-layer style channels, in layer order."""
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{p}: not a plain numeric .npy array ({e})") from None
    if arr.ndim != 2:
        raise InputError(f"{p}: fs3 must be 2-D (channels, clip_dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{p}: fs3 contains NaN or infinite values")
    return arr.astype(np.float32)


def import_styleclip_stats(G, fs3: str | os.PathLike, s_mean_std: str | os.PathLike, *,
                           meta: dict | None = None) -> StyleStats:
    """The published statistics (``fs3.npy`` and ``S_mean_std``) mapped onto generator ``G``'s layer names.

    ``S_mean_std`` has one array per modulated layer in generator order (26 at 1024 px: conv1, toRGB, then conv0,
    conv1, toRGB per block); ``fs3`` has the conv channels of the first K conv layers, concatenated (6048 rows at
    1024 px cover all 17; StyleCLIP's PyTorch port stops at 128 px)."""
    means, stds = read_s_mean_std(s_mean_std)
    rel = read_fs3(fs3)
    specs = G.specs
    if len(means) != len(specs):
        raise InputError(f"{Path(s_mean_std).name} has {len(means)} style layers; this generator has {len(specs)}",
                         "the published FFHQ statistics are for the 1024 px FFHQ generator (ffhq-1024)")
    for s, m, sd in zip(specs, means, stds):
        if m.shape != (s.in_ch,) or sd.shape != (s.in_ch,):
            raise InputError(f"{Path(s_mean_std).name}: layer {s.name} has {m.shape[0]} channels in the file, "
                             f"{s.in_ch} in the generator", "use statistics made for this generator")
    layers, total = [], 0
    for s in specs:
        if s.kind != "conv" or total >= rel.shape[0]:
            continue
        layers.append(s.name)
        total += s.in_ch
    if total != rel.shape[0]:
        raise InputError(f"{Path(fs3).name} has {rel.shape[0]} rows, which do not end at a conv layer of this "
                         "generator",
                         "use statistics made for this generator")
    return StyleStats(layers, torch.from_numpy(rel), {s.name: torch.from_numpy(m) for s, m in zip(specs, means)},
                      {s.name: torch.from_numpy(sd) for s, sd in zip(specs, stds)},
                      dict(meta or {}, source="styleclip", fs3=str(fs3), s_mean_std=str(s_mean_std)))
