"""sha256 of weights files: the ``<file>.sha256`` record kept beside each verified file, and the check of a digest
against the published one."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsError
from ..io.atomic import atomic_write
from ..io.hashing import sha256_file


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar(path: Path) -> str | None:
    """The sha256 recorded beside ``path`` if the record is at least as new as the file, else None."""
    sc = sidecar(path)
    try:
        if sc.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return None
        token = sc.read_text().split()[0].lower()
    except (OSError, IndexError):
        return None
    return token if len(token) == 64 else None


def write_sidecar(path: Path, digest: str) -> Path:
    sc = sidecar(path)
    with atomic_write(sc, "w") as f:
        f.write(f"{digest}  {path.name}\n")
    return sc


def file_sha256(path: Path) -> str:
    """sha256 of a file, taken from its up-to-date ``.sha256`` record when there is one, else from the remembered
    hashes (path, size, mtime), else computed."""
    return read_sidecar(path) or sha256_file(path)


def check_digest(digest: str, expected: str | None, prefix: str, what: str, where: str) -> None:
    """Raise when ``digest`` is not the ``expected`` sha256 or does not start with the published ``prefix``."""
    if expected and digest != expected.lower():
        raise WeightsError(
            f"sha256 mismatch for {what}: expected {expected.lower()}, got {digest}",
            f"the download was corrupt or the file changed upstream; nothing was kept at {where}; try again",
        )
    if prefix and not digest.startswith(prefix.lower()):
        raise WeightsError(
            f"sha256 mismatch for {what}: the published name says it starts with {prefix}, got {digest}",
            f"the download was corrupt; nothing was kept at {where}; try again",
        )
