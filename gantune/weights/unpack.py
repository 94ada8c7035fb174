"""Compressed downloads (``compression = "bz2"`` in the registry) unpacked beside their destination."""

from __future__ import annotations

import bz2
import hashlib
import os
from pathlib import Path

from ..errors import WeightsError
from .http import CHUNK


def unpack(dl: Path, dest: Path, compression: str) -> tuple[str, Path]:
    """Decompress the downloaded ``dl`` beside ``dest``; returns (sha256 of the unpacked data, its temp path)."""
    assert compression == "bz2", compression
    unpacked = dest.with_name(dest.name + ".unpack.part")
    h = hashlib.sha256()
    try:
        with bz2.open(dl, "rb") as src, open(unpacked, "wb") as out:
            while chunk := src.read(CHUNK * 4):
                out.write(chunk)
                h.update(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, EOFError, ValueError) as e:
        unpacked.unlink(missing_ok=True)
        raise WeightsError(f"{dl.name} is not a valid {compression} archive ({e})",
                           "the download was corrupt; try again") from None
    return h.hexdigest(), unpacked
