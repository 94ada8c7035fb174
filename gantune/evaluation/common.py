"""Pieces the evaluations share: progress messages and how a report names a generator."""

from __future__ import annotations

from collections.abc import Callable


def say(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)


def describe_generator(spec, G, info: dict | None = None) -> dict:
    d = {"spec": str(spec), "resolution": G.cfg.resolution, "kind": "overparameterized" if G.cfg.overparam else "standard"}
    for k in ("name", "sha256"):
        if info and info.get(k):
            d[k] = info[k]
    return d
