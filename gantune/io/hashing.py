"""File hashing, in one place: ``sha256_file`` for inputs, checkpoints and records.

Hashing a 1.4 GB checkpoint takes seconds, so the hash of a big file is remembered in the cache folder
(``<cache>/hashes/``, one small JSON file per path) together with the file's size, mtime and inode; it is used again
only while all three are unchanged. The cache folder is ``$GANTUNE_HOME``, else ``$XDG_CACHE_HOME/gantune``, else
``~/.cache/gantune``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from .atomic import atomic_write

REMEMBER_MIN_BYTES = 16 << 20  # files at least this big have their hash remembered (smaller ones hash in ms)


def cache_home() -> Path:
    """gantune's cache folder: $GANTUNE_HOME, else $XDG_CACHE_HOME/gantune, else ~/.cache/gantune."""
    env = os.environ.get("GANTUNE_HOME", "")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gantune"


def _memory_file(path: Path) -> Path:
    key = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_home() / "hashes" / f"{key}.json"


def _identity(path: Path, st: os.stat_result) -> dict:
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def remembered_sha256(path: str | os.PathLike) -> str | None:
    """The remembered sha256 of ``path`` if its size, mtime and inode are those it had when it was hashed."""
    p = Path(path).absolute()
    try:
        st = p.stat()
        entry = json.loads(_memory_file(p).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or {k: entry.get(k) for k in ("path", "size", "mtime_ns", "ino")} != _identity(p, st):
        return None
    digest = entry.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def remember_sha256(path: str | os.PathLike, digest: str, st: os.stat_result | None = None) -> None:
    """Remember ``digest`` for ``path`` as it is now (or as ``st`` says it was). Best effort: a read-only cache
    folder only means the next load hashes again."""
    p = Path(path).absolute()
    with contextlib.suppress(OSError):
        st = st or p.stat()
        target = _memory_file(p)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "w") as f:
            json.dump({**_identity(p, st), "sha256": digest}, f)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22, *, remember: bool | None = None) -> str:
    """Hex sha256 of a file's bytes, read in chunks (never the whole file in memory).

    ``remember`` (default: for files of 16 MB or more) looks the hash up in, and stores it into, the cache's
    memory of hashes keyed by path, size, mtime and inode."""
    p = Path(path)
    st = p.stat()
    if remember is None:
        remember = st.st_size >= REMEMBER_MIN_BYTES
    if remember and (known := remembered_sha256(p)):
        return known
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if remember:
        after = p.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino):
            remember_sha256(p, digest, st)  # only a file that did not change while it was read
    return digest
