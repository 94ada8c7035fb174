"""This machine's identity for measured choices, and the table of them (:mod:`gantune.accel.measure` writes it)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import NamedTuple

import torch

from ..io.hashing import cache_home
from ..process import choices_setting

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
    machine wrote it); else this machine's file as :func:`gantune.accel.measure.save` wrote it, or {} (none,
    unreadable, or another machine's)."""
    setting = choices_setting()
    if setting is not None:
        return {} if setting == "rule" else setting
    try:
        data = json.loads(choices_path(key).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("machine") == key else {}


class Choices(NamedTuple):
    """The measured choices to follow: Winograd (in_ch, side, tile) rows, (dtype, in_ch, side, form) rows of the
    folded path's upsampling convolution (form "phases" or "transposed"), and Winograd (mode, in_ch, side, tile)
    rows for passes with gradients (mode "x": the input differentiated, "w": the weight too), the modes whose
    passes run channels-last, and the upsampling forms measured with the weight differentiated."""

    tiles: tuple[tuple[int, int, int], ...] = ()
    upconv: tuple[tuple[str, int, int, str], ...] = ()
    grad_tiles: tuple[tuple[str, int, int, int], ...] = ()
    grad_channels_last: tuple[str, ...] = ()  # gradient modes whose passes run channels-last
    upconv_grad: tuple[tuple[str, int, int, str], ...] = ()  # upsampling forms measured with gradients


def load_choices() -> Choices:
    """The choices to follow (:func:`_table`, read once): :func:`parse_choices` of it."""
    return parse_choices(_table(machine_key()))


def parse_choices(table: dict) -> Choices:
    """The choices in a choices file's content (as :func:`gantune.accel.measure.measure` returns it); a part whose
    rows do not parse is left empty."""
    tiles, grad_tiles = _tile_rows(table.get("winograd", ()), False), _tile_rows(table.get("winograd_grad", ()), True)
    upconv, upconv_grad = (_form_rows(table.get(key, ())) for key in ("upconv", "upconv_grad"))
    try:
        layouts = tuple(str(r["grad"]) for r in table.get("grad_layout", ())
                        if r["grad"] in ("x", "w") and r["layout"] == "channels_last")
    except (KeyError, TypeError):
        layouts = ()
    return Choices(tiles, upconv, grad_tiles, layouts, upconv_grad)


def _tile_rows(rows, with_mode: bool) -> tuple:
    """(in_ch, side, tile) of measured Winograd rows, led by the gradient mode ("x" or "w") where ``with_mode``;
    none where a row does not parse."""
    try:
        return tuple(((str(r["grad"]),) if with_mode else ()) + (int(r["in_ch"]), int(r["side"]), int(r["tile"]))
                     for r in rows if int(r["tile"]) in (0, 2, 4) and (not with_mode or r["grad"] in ("x", "w")))
    except (KeyError, TypeError, ValueError):
        return ()


def _form_rows(rows) -> tuple[tuple[str, int, int, str], ...]:
    """(dtype, in_ch, side, form) of measured upsampling rows; none where a row does not parse."""
    try:
        return tuple((str(r["dtype"]), int(r["in_ch"]), int(r["side"]), str(r["form"]))
                     for r in rows if r["form"] in ("phases", "transposed"))
    except (KeyError, TypeError, ValueError):
        return ()
