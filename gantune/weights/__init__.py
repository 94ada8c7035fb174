"""Weights: the registry (``weights.toml``), the verified download cache, and the checkpoint importers.

Public API::

    get(name) -> Entry                    entries(kind=None) -> [Entry]
    resolve(spec) -> Path                 spec = registry name, local path, or http(s)/file URL
    fetch(entry_or_url, sha256=None, progress=True) -> Path
    load_generator(spec, device="cpu") -> (Generator, info)   info: name, sha256, path, format, ...
    detect_format(path), load_generator_file(path, device), save_native(G, path, meta=), load_native(path),
    safe_torch_load(path), from_rosinality_state_dict(sd, latent_avg=None), to_rosinality_state_dict(G)

The importers live in sibling modules (``formats``, ``native``, ``rosinality``, ``ada``, ``safe_pickle``) and are
imported on first use, so ``import gantune.weights`` stays cheap and never touches the network.
"""

from __future__ import annotations

import importlib

from .download import (
    cache_path,
    fetch,
    file_sha256,
    home,
    is_offline,
    load_generator,
    resolve,
    sha256_file,
    url_cache_path,
    weights_dir,
)
from .registry import KINDS, Entry, entries, get, load_registry

# name -> modules that may define it (the importer modules are written separately; first one that has it wins)
_LAZY = {
    "detect_format": ("formats",),
    "load_generator_file": ("formats",),
    "save_native": ("native", "formats"),
    "load_native": ("native", "formats"),
    "safe_torch_load": ("safe_pickle", "formats"),
    "from_rosinality_state_dict": ("rosinality",),
    "to_rosinality_state_dict": ("rosinality",),
    "load_ada": ("ada",),
    "read_ada_pickle": ("ada",),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    missing = []
    for mod in _LAZY[name]:
        try:
            m = importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise
            missing.append(mod)
            continue
        if hasattr(m, name):
            return getattr(m, name)
    raise AttributeError(f"{__name__}.{name} is not available (looked in {', '.join(_LAZY[name])})")


__all__ = [
    "KINDS",
    "Entry",
    "cache_path",
    "entries",
    "fetch",
    "file_sha256",
    "get",
    "home",
    "is_offline",
    "load_generator",
    "load_registry",
    "resolve",
    "sha256_file",
    "url_cache_path",
    "weights_dir",
    *_LAZY,
]
