"""``manifest.jsonl``: one JSON line per input (status, paths, timings, method-specific fields)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class Manifest:
    """Appends one line per input and flushes it at once, so an interrupted batch keeps what it finished."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.ok = 0
        self.failed = 0

    def write(self, entry: dict) -> None:
        if entry.get("status") == "ok":
            self.ok += 1
        else:
            self.failed += 1
        line = json.dumps(entry, sort_keys=True, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_manifest(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]
