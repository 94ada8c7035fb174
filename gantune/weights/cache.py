"""Places in the weights cache.

Layout under the cache folder (``$GANTUNE_HOME``, else ``$XDG_CACHE_HOME/gantune``, else ``~/.cache/gantune``)::

    weights/<file>                      registry entries (name in weights.toml)
    weights/<file>.sha256               sha256 of the file, "sha256sum" format, written after verification
    weights/<file>.part                 an interrupted download, resumed with an HTTP Range request
    urls/<hash of URL>-<basename>       files fetched by URL
    converted/<sha256>-<name>.safetensors  a foreign generator converted once to the native format, keyed by the
                                        source file's sha256 (nothing is ever written beside the user's own files)
    hashes/                             remembered sha256 of big files by path, size, mtime (gantune.io.hashing)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..io.atomic import make_folder
from ..io.hashing import cache_home
from .registry import Entry


def home() -> Path:
    """The cache folder: $GANTUNE_HOME, else $XDG_CACHE_HOME/gantune, else ~/.cache/gantune."""
    return cache_home()


def cache_folder(folder: Path) -> Path:
    """Create a folder of the cache, or fail in one line naming it (GANTUNE_HOME a file, read-only, not ours)."""
    return make_folder(folder, f"the cache folder {folder}",
                       "set GANTUNE_HOME to a folder you can write; it is created if missing")


def weights_dir() -> Path:
    return home() / "weights"


def cache_path(entry: Entry) -> Path:
    """Where a registry entry lives in the cache (whether or not it is there)."""
    return weights_dir() / entry.file


def _safe_name(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` characters, each but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:limit]


def url_cache_path(url: str) -> Path:
    """Where a file fetched by URL is cached: ``urls/<16 hex of sha256(url)>-<basename>``."""
    base = _safe_name(unquote(Path(urlparse(url).path).name) or "download", 100)
    return home() / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"


def part_path(target: Path, compression: str = "") -> Path:
    """Where the download of ``target`` grows until it is complete: ``<file>[.<compression>].part`` beside it."""
    return target.with_name(target.name + (f".{compression}" if compression else "") + ".part")


def converted_path(sha256: str, source: Path) -> Path:
    """Where the native copy of a foreign generator is kept: the cache's ``converted/`` folder, keyed by the source's
    sha256 (so a changed file is converted again, and the same file under two names once)."""
    return home() / "converted" / f"{sha256[:32]}-{_safe_name(source.name, 80)}.safetensors"
