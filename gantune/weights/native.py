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

from ..errors import WeightsError
from ..io.atomic import atomic_path
from .keymap import _names

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
    try:
        return json.loads(md[CONFIG_KEY]), json.loads(md.get(META_KEY, "{}"))
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path.name}: damaged gantune header ({e})") from None


def load_native(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(Generator in eval mode on ``device``, meta dict). Keys must match the config exactly."""
    from safetensors.torch import load_file

    from ..core import Generator, GeneratorConfig

    path = Path(path)
    cfg_dict, meta = read_native_header(path)
    try:
        cfg = GeneratorConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as e:
        raise WeightsError(
            f"{path.name}: generator config not understood ({e})", hint="it may be written by a newer gantune"
        ) from None
    tensors = load_file(str(path), device="cpu")
    G = Generator(cfg)
    want = G.state_dict()
    missing, unexpected = set(want) - set(tensors), set(tensors) - set(want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected key(s): {_names(unexpected)}")
        raise WeightsError(f"{path.name} does not match its own config: " + "; ".join(parts))
    for k, v in want.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise WeightsError(f"{path.name}: {k} has shape {tuple(tensors[k].shape)}, config expects {tuple(v.shape)}")
    G.load_state_dict(tensors, strict=True)
    return G.eval().to(device), meta
