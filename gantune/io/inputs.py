"""Expanding command-line inputs (files, folders, globs, ``-`` for paths on stdin) and reading ``--shard``."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from ..errors import InputError


def expand_inputs(items: list[str], *, suffixes: tuple[str, ...], stdin=None) -> list[Path]:
    """Files as given (any suffix: a bad file is reported later, not dropped), folders listed non-recursively and
    sorted (only ``suffixes``), globs expanded and sorted, ``-`` reads one item per line from stdin (expanded the
    same way: a folder there is listed too). Duplicates are removed, order kept. A path that does not exist and a
    glob that matches nothing stay in the list as items: the batch reports each as failed, alone."""
    out: list[Path] = []
    for item in items:
        if item == "-":
            stream = stdin if stdin is not None else sys.stdin
            lines = [ln.strip() for ln in stream.read().splitlines()]
            for ln in lines:
                if ln and ln != "-":
                    out.extend(_expand_one(ln, suffixes))
            continue
        out.extend(_expand_one(item, suffixes))
    uniq = list(dict.fromkeys(out))
    if not uniq:
        raise InputError("no input images", "give files, folders, globs, or - to read paths from stdin")
    return uniq


def _expand_one(item: str, suffixes: tuple[str, ...]) -> list[Path]:
    p = Path(item)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
    if not os.path.lexists(p) and any(c in item for c in "*?["):
        matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
        if matches:
            return matches
    return [p]  # a file, or reported as a failed input (no such file) by the batch, so names never shift


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
