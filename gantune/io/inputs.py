"""Expanding command-line inputs (files, folders, globs, ``-`` for paths on stdin) and reading ``--shard``."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from ..errors import InputError


def expand_inputs(items: list[str], *, suffixes: tuple[str, ...], stdin=None) -> list[Path]:
    """Files as given (any suffix: a bad file is reported later, not dropped), folders listed non-recursively and
    sorted (only ``suffixes``), globs expanded and sorted, ``-`` reads one path per line from stdin.
    Duplicates are removed, order kept. An item that matches nothing is an error."""
    out: list[Path] = []
    for item in items:
        if item == "-":
            stream = stdin if stdin is not None else sys.stdin
            lines = [ln.strip() for ln in stream.read().splitlines()]
            out.extend(Path(ln) for ln in lines if ln)
            continue
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes))
        elif p.exists():
            out.append(p)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"{item}: the pattern matches no file")
            out.extend(matches)
        else:
            out.append(p)  # reported as a failed input (missing file) by the batch loop, so names never shift
    seen: set[Path] = set()
    uniq = []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    if not uniq:
        raise InputError("no input images", "give files, folders, globs, or - to read paths from stdin")
    return uniq


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``i/n`` (0-based) -> (i, n). Without it, torchrun's RANK / WORLD_SIZE are used, else (0, 1)."""
    if shard:
        try:
            i, n = (int(v) for v in shard.split("/"))
        except ValueError:
            raise InputError(f"--shard {shard!r} is not i/n", "e.g. --shard 0/4 for the first of four") from None
        if not 0 <= i < n:
            raise InputError(f"--shard {shard}: need 0 <= i < n")
        return i, n
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
