"""Weights: the registry (``weights.toml``), the verified download cache, and the checkpoint importers.

Public API::

    get(name) -> Entry                    entries(kind=None) -> [Entry]
    resolve(spec) -> Path                 spec = registry name, local path, or http(s)/file URL
    fetch(entry_or_url, sha256=None, progress=True) -> Path
    load_generator(spec, device="cpu") -> (Generator, info)   info: name, sha256, path, format, ...
    identify_file(path) -> (format, description)   load_generator_file(path, device)
    save_native(G, path, meta=), load_native(path), safe_torch_load(path),
    from_rosinality_state_dict(sd, latent_avg=None), to_rosinality_state_dict(G)

Nothing here touches the network on import. File hashes: :func:`gantune.io.hashing.sha256_file`.
"""

from __future__ import annotations

from .ada import load_ada, read_ada_pickle
from .cache import cache_path, home, url_cache_path, weights_dir
from .checksums import file_sha256
from .download import fetch, load_generator, resolve
from .formats import identify_file, load_generator_file
from .http import is_offline
from .native import load_native, save_native
from .registry import KINDS, Entry, entries, get, load_registry
from .rosinality import from_rosinality_state_dict, to_rosinality_state_dict
from .safe_pickle import safe_torch_load

__all__ = [
    "KINDS",
    "Entry",
    "cache_path",
    "entries",
    "fetch",
    "file_sha256",
    "from_rosinality_state_dict",
    "get",
    "home",
    "identify_file",
    "is_offline",
    "load_ada",
    "load_generator",
    "load_generator_file",
    "load_native",
    "load_registry",
    "read_ada_pickle",
    "resolve",
    "safe_torch_load",
    "save_native",
    "to_rosinality_state_dict",
    "url_cache_path",
    "weights_dir",
]
