"""This machine's identity for measured choices, and the table of them (:mod:`gantune.accel.measure` writes it)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from ..errors import InputError
from ..io.hashing import cache_home

# the one setting over the measured choices: "rule" (the built-in rules), or a choices file to follow instead of this
# machine's own (one measured on an identical machine, or edited by hand); unset: $GANTUNE_HOME/accel/<machine>.json
CHOICES_ENV = "GANTUNE_CHOICES"
_HINT = f"set {CHOICES_ENV} to 'rule', to a choices file that `make bench` wrote, or unset it"

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_model() -> tuple[str, list[str]]:
    """The CPU's model name and which of the vector flags that decide kernel speed it has (Linux /proc/cpuinfo)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # the first CPU's lines
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return model, [f for f in CPU_FLAGS if f in flags]


def machine_key() -> str:
    """What the measured choices depend on: CPU model and flags, torch version, threads (a short hash)."""
    model, flags = cpu_model()
    text = f"{model}|{','.join(flags)}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    return "cpu-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def choices_path(key: str | None = None) -> Path:
    """Where this machine's (or machine ``key``'s) measured choices are kept."""
    return cache_home() / "accel" / f"{key or machine_key()}.json"


def _table(key: str) -> dict:
    """The choices to follow: {} under ``GANTUNE_CHOICES=rule``; the file ``GANTUNE_CHOICES`` names (whichever
    machine wrote it; an unreadable one is an error); else this machine's file as :func:`gantune.accel.measure.save`
    wrote it, or {} (none, unreadable, or another machine's)."""
    override = os.environ.get(CHOICES_ENV, "").strip()
    if override.lower() == "rule":
        return {}
    try:
        data = json.loads((Path(override).expanduser() if override else choices_path(key)).read_text())
    except (OSError, ValueError) as e:
        if override:
            why = e.strerror if isinstance(e, OSError) and e.strerror else "not a JSON choices file"
            raise InputError(f"{CHOICES_ENV}={override}: {why}", _HINT) from e
        return {}
    if not isinstance(data, dict):
        if override:
            raise InputError(f"{CHOICES_ENV}={override}: not a choices file", _HINT)
        return {}
    return data if override or data.get("machine") == key else {}


def check_choices_setting() -> None:
    """Raises the one-line error of a ``GANTUNE_CHOICES`` that cannot be followed (the command checks it before any
    work, not once per item)."""
    if os.environ.get(CHOICES_ENV, "").strip():
        _table(machine_key())


def load_tiles() -> tuple[tuple[int, int, int], ...]:
    """The measured Winograd (in_ch, side, tile) rows to follow (:func:`_table`), or ()."""
    try:
        return tuple((int(r["in_ch"]), int(r["side"]), int(r["tile"])) for r in _table(machine_key()).get("winograd", ())
                     if int(r["tile"]) in (0, 2, 4))
    except (KeyError, TypeError, ValueError):
        return ()


def load_upconv() -> tuple[tuple[str, int, int, str], ...]:
    """The measured forms of the folded path's upsampling convolution to follow (:func:`_table`), (dtype, in_ch, side,
    form) rows (form "phases" or "transposed"), or ()."""
    try:
        return tuple((str(r["dtype"]), int(r["in_ch"]), int(r["side"]), str(r["form"]))
                     for r in _table(machine_key()).get("upconv", ()) if r["form"] in ("phases", "transposed"))
    except (KeyError, TypeError, ValueError):
        return ()
