"""``manifest.jsonl``: exactly one JSON line per input, the same schema for every batch command.

Each line::

    {"status": "ok" | "failed",
     "name": output stem (unique in the folder),
     "input": {"path": relative to the manifest's folder, "sha256": …} (or null for generated items),
     "outputs": {role: relative path, …},      e.g. {"image": "x.png", "record": "x.safetensors"}
     "error": one line or null,
     "params": what the outputs depend on (a re-run with other params redoes the item),
     "timings": {stage: seconds}, "metrics": {…}, "info": command-specific facts (faces found, fit, …)}

While a batch runs, lines are appended and flushed one by one, whole lines only (a killed run keeps what it finished,
a write that fails on a full disk is cut back to the last complete line, and a later line for the same name replaces
an earlier one); when a run ends the file is rewritten atomically with one line per name, in input order. Appends and
the rewrite hold an ``flock`` on the folder, and the rewrite merges what is on disk: two runs into one folder at once
keep every line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .atomic import append_line, atomic_write, folder_lock

SCHEMA_KEYS = ("status", "name", "input", "outputs", "error", "params", "timings", "metrics", "info")


def normalize(value):
    """JSON round trip: what an entry's params look like once read back (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class Manifest:
    """One manifest file: the entries of earlier runs by name, appends for this run, compaction at the end."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = _by_name(self.path)
        self._mine: set[str] = set()  # names this run wrote

    def write(self, entry: dict) -> None:
        """Append one entry now (flushed and synced), replacing any earlier entry of the same name."""
        entry = {k: entry.get(k) for k in SCHEMA_KEYS}
        line = json.dumps(entry, default=str)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with folder_lock(self.path.parent):
                append_line(self.path, line)
            self.entries[entry["name"]] = json.loads(line)
            self._mine.add(entry["name"])

    def compact(self, order: list[str] | None = None) -> None:
        """Rewrite the file with one line per name: ``order`` first, then names of earlier runs in their order."""
        with self._lock:
            if not self.entries or not self.path.parent.is_dir():
                return
            with folder_lock(self.path.parent):
                # lines another run appended meanwhile are kept; this run's own entries win for its names
                merged = _by_name(self.path)
                merged.update({n: self.entries[n] for n in self._mine})
                for n, e in self.entries.items():
                    merged.setdefault(n, e)
                self.entries = merged
                names = [n for n in (order or []) if n in merged]
                names += [n for n in merged if n not in set(names)]
                with atomic_write(self.path) as f:
                    for n in names:
                        f.write((json.dumps(merged[n]) + "\n").encode())


def append_jsonl(path: str | os.PathLike, entry: dict) -> None:
    """Append one JSON line to a log file (training logs), flushed and synced at once."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _by_name(path: Path) -> dict[str, dict]:
    """The entries of a manifest file by name (the last line of a name wins); empty when there is no file."""
    out: dict[str, dict] = {}
    if path.is_file():
        for e in read_manifest(path):
            if isinstance(e, dict) and isinstance(e.get("name"), str):
                out[e["name"]] = e
    return out


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
