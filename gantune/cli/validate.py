"""Checks of option values that Typer's types do not make: finite numbers.

Click parses ``nan``, ``inf`` and ``1e400`` (which overflows to inf) as valid floats; a NaN truncation or strength
then renders black images without a word. :func:`finite_float` refuses them with a one-line
:class:`~gantune.errors.InputError`; :func:`finite` wraps it as a Typer option callback::

    truncation: Annotated[float, typer.Option("--truncation", callback=finite("--truncation"))] = 0.7
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import InputError


def finite_float(value: str | float | int, option: str, *, hint: str | None = None) -> float:
    """``value`` (text or number) as a finite float, or an :class:`InputError` naming ``option``.

    ``hint`` says what to give (default: "give a finite number, e.g. 0.7")."""
    hint = hint or "give a finite number, e.g. 0.7"
    if isinstance(value, bool):
        raise InputError(f"{option} {value!r}: not a number", hint)
    text = value.strip() if isinstance(value, str) else value
    if text == "":
        raise InputError(f"{option} is empty", hint)
    try:
        out = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{option} {value!r}: not a number", hint) from None
    if not math.isfinite(out):
        raise InputError(f"{option} {value!r}: not a finite number", hint)
    return out


def finite(option: str, *, hint: str | None = None) -> Callable[[float | None], float | None]:
    """A Typer option callback that checks the value with :func:`finite_float` (``None`` passes through, for
    optional options)."""

    def check(value: float | None) -> float | None:
        return None if value is None else finite_float(value, option, hint=hint)

    return check
