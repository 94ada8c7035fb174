"""Checks of values given as text or numbers (command-line options, ``--param KEY=VALUE``), shared by the command
line and the library: one-line :class:`~gantune.errors.InputError` for anything else."""

from __future__ import annotations

import math

from .errors import InputError


def finite_float(value: str | float | int, option: str, *, hint: str | None = None, above: float | None = None,
                 minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` (text or number) as a finite float, or an :class:`InputError` naming ``option``.

    ``hint`` says what to give (default: "give a finite number, e.g. 0.7"). ``above`` (exclusive), ``minimum`` and
    ``maximum`` (inclusive) bound it."""
    given, hint = hint, hint or "give a finite number, e.g. 0.7"
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
    if above is not None and not out > above:
        raise InputError(f"{option} {value!r}: must be more than {above:g}", given)
    if minimum is not None and out < minimum:
        raise InputError(f"{option} {value!r}: must be at least {minimum:g}", given)
    if maximum is not None and out > maximum:
        raise InputError(f"{option} {value!r}: must be at most {maximum:g}", given)
    return out
