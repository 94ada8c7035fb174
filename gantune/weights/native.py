"""gantune's own generator format: one safetensors file, the architecture config and provenance in its header.

Header metadata (strings, as safetensors requires):

* ``gantune_config``: JSON of ``GeneratorConfig.to_dict()`` — enough to rebuild the module;
* ``gantune_meta``: JSON provenance (source format, source sha256, whether ``w_avg`` was computed, …);
* ``gantune_format``: format version.

Tensors are exactly ``Generator.state_dict()`` (float32, contiguous). Loading is strict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..core import GeneratorConfig
from ..errors import WeightsError
from ..io.atomic import atomic_path
from .keymap import generator_from_state, key_mismatch, meta_generator

FORMAT_VERSION = "1"
CONFIG_KEY = "gantune_config"
META_KEY = "gantune_meta"
VERSION_KEY = "gantune_format"


def save_native(G, path: str | os.PathLike, *, meta: dict | None = None) -> Path:
    """Write ``G`` (a :class:`gantune.core.Generator`) to ``path`` atomically. ``meta`` must be JSON-serialisable."""
    from safetensors.torch import save_file

    try:
        meta_json = json.dumps(meta or {}, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"meta must be JSON-serialisable: {e}") from None
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in G.state_dict().items()}
    header = {
        CONFIG_KEY: json.dumps(G.cfg.to_dict(), sort_keys=True),
        META_KEY: meta_json,
        VERSION_KEY: FORMAT_VERSION,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_native_header(path: str | os.PathLike) -> tuple[dict, dict]:
    """(config dict, meta dict) from the header only, without reading the tensors."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path.name} is not a safetensors file ({str(e).splitlines()[0][:160]})") from None
    if CONFIG_KEY not in md:
        raise WeightsError(
            f"{path.name} is a safetensors file without a gantune generator config",
            hint="native files are written by `gantune weights import` / gantune.weights.native.save_native",
        )
    version = md.get(VERSION_KEY, FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise WeightsError(f"{path.name} is gantune generator format {version[:20]!r}; this gantune reads format "
                           f"{FORMAT_VERSION}", hint="it may be written by a newer gantune; upgrade gantune")
    try:
        cfg, meta = json.loads(md[CONFIG_KEY]), json.loads(md.get(META_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise WeightsError(f"{path.name}: damaged gantune header ({str(e)[:120]})") from None
    if not isinstance(cfg, dict) or not isinstance(meta, dict):
        raise WeightsError(f"{path.name}: damaged gantune header (the config and meta must be JSON objects)")
    return cfg, meta


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, memory-mapped (copy-on-write: nothing is read until used, and changing a
    tensor never changes the file). Falls back to ``safetensors.torch.load_file`` for layouts it does not map."""
    from safetensors.torch import load_file

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n)) if 2 <= n <= size - 8 else None
    entries = {k: v for k, v in (header or {}).items() if k != "__metadata__"}
    base = 8 + n
    mappable = header is not None and all(
        isinstance(v, dict) and v.get("dtype") in _DTYPES and (base + v["data_offsets"][0]) % _DTYPES[v["dtype"]].itemsize == 0
        and v["data_offsets"][1] + base <= size for v in entries.values())
    if not mappable or not entries:
        return load_file(str(path), device="cpu")
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    out = {}
    for k, v in entries.items():
        dt = _DTYPES[v["dtype"]]
        b, e = v["data_offsets"]
        shape = tuple(v["shape"])
        numel = 1
        for s in shape:
            numel *= s
        if numel * dt.itemsize != e - b:
            return load_file(str(path), device="cpu")
        t = torch.empty(0, dtype=dt)
        t.set_(storage, (base + b) // dt.itemsize, shape)
        out[k] = t
    return out


def load_native(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(Generator in eval mode on ``device``, meta dict). Keys must match the config exactly."""
    path = Path(path)
    cfg_dict, meta = read_native_header(path)
    try:
        cfg = GeneratorConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as e:
        raise WeightsError(
            f"{path.name}: generator config not understood ({e})", hint="it may be written by a newer gantune"
        ) from None
    tensors = read_tensors(path)
    G = meta_generator(cfg)
    want = G.state_dict()  # names and shapes only
    mismatch = key_mismatch(want, tensors)
    if mismatch:
        raise WeightsError(f"{path.name} does not match its own config: {mismatch}")
    for k, v in want.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise WeightsError(f"{path.name}: {k} has shape {tuple(tensors[k].shape)}, config expects {tuple(v.shape)}")
    G = generator_from_state(cfg, tensors, skeleton=G)
    return G.to(device), meta


def native_metadata(path: Path) -> dict:
    """The safetensors header metadata, with JSON-encoded values decoded and nested dicts flattened one level."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    out: dict = {}
    for k, v in raw.items():
        try:
            val = json.loads(v)
        except (TypeError, ValueError):
            val = v
        out[k] = val
        if isinstance(val, dict):
            for k2, v2 in val.items():
                out.setdefault(k2, v2)
    return out
