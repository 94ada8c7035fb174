"""Checks of option values that Typer's types do not make: finite numbers, in range.

Click parses ``nan``, ``inf`` and ``1e400`` (which overflows to inf) as valid floats; a NaN truncation or strength
then renders black images without a word. :func:`finite_float` refuses them with a one-line
:class:`~gantune.errors.InputError`; :func:`finite` wraps it as a Typer option callback, with an optional range::

    truncation: Annotated[float, typer.Option("--truncation", callback=finite("--truncation"))] = 0.7
    lr: Annotated[float, typer.Option("--lr", callback=finite("--lr", above=0))] = 0.002
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..errors import InputError


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


def finite(option: str, *, hint: str | None = None, above: float | None = None, minimum: float | None = None,
           maximum: float | None = None) -> Callable[[float | None], float | None]:
    """A Typer option callback that checks the value with :func:`finite_float` (``None`` passes through, for
    optional options)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        return finite_float(value, option, hint=hint, above=above, minimum=minimum, maximum=maximum)

    return check
