"""``manifest.jsonl``: exactly one JSON line per input, the same schema for every batch command.

Each line::

    {"status": "ok" | "failed",
     "name": output stem (unique in the folder),
     "input": {"path": relative to the manifest's folder, "sha256": …} (or null for generated items),
     "outputs": {role: relative path, …},      e.g. {"image": "x.png", "record": "x.safetensors"}
     "error": one line or null,
     "params": what the outputs depend on (a re-run with other params redoes the item),
     "timings": {stage: seconds}, "metrics": {…}, "info": command-specific facts (faces found, fit, …)}

While a batch runs, lines are appended and flushed one by one (a killed run keeps what it finished, and a later
line for the same name replaces an earlier one); when a run ends the file is rewritten atomically with one line per
name, in input order.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .atomic import atomic_write

SCHEMA_KEYS = ("status", "name", "input", "outputs", "error", "params", "timings", "metrics", "info")


def normalize(value):
    """JSON round trip: what an entry's params look like once read back (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class Manifest:
    """One manifest file: the entries of earlier runs by name, appends for this run, compaction at the end."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for e in read_manifest(self.path):
                if isinstance(e, dict) and isinstance(e.get("name"), str):
                    self.entries[e["name"]] = e

    def write(self, entry: dict) -> None:
        """Append one entry now (flushed and synced), replacing any earlier entry of the same name."""
        entry = {k: entry.get(k) for k in SCHEMA_KEYS}
        line = json.dumps(entry, default=str)
        with self._lock:
            self.entries[entry["name"]] = json.loads(line)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            if new:
                from .atomic import _file_mode

                os.chmod(self.path, _file_mode())

    def compact(self, order: list[str] | None = None) -> None:
        """Rewrite the file with one line per name: ``order`` first, then names of earlier runs in their order."""
        with self._lock:
            if not self.entries:
                return
            names = [n for n in (order or []) if n in self.entries]
            names += [n for n in self.entries if n not in set(names)]
            with atomic_write(self.path) as f:
                for n in names:
                    f.write((json.dumps(self.entries[n]) + "\n").encode())


def append_jsonl(path: str | os.PathLike, entry: dict) -> None:
    """Append one JSON line to a log file (training logs), flushed and synced at once."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Every line of a manifest (a torn last line of a killed run is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            if ln.strip():
                try:
                    out.append(json.loads(ln))
                except json.JSONDecodeError:
                    continue
    return out
