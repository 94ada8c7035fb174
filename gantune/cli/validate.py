"""Checks of option values that Typer's types do not make: finite numbers, in range.

Click parses ``nan``, ``inf`` and ``1e400`` (which overflows to inf) as valid floats; a NaN truncation or strength
then renders black images without a word. :func:`finite_float` refuses them with a one-line
:class:`~gantune.errors.InputError`; :func:`finite` wraps it as a Typer option callback, with an optional range::

    truncation: Annotated[float, typer.Option("--truncation", callback=finite("--truncation"))] = 0.7
    lr: Annotated[float, typer.Option("--lr", callback=finite("--lr", above=0))] = 0.002
"""

from __future__ import annotations

from collections.abc import Callable

from ..checks import finite_float


def finite(option: str, *, hint: str | None = None, above: float | None = None, minimum: float | None = None,
           maximum: float | None = None) -> Callable[[float | None], float | None]:
    """A Typer option callback that checks the value with :func:`finite_float` (``None`` passes through, for
    optional options)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        return finite_float(value, option, hint=hint, above=above, minimum=minimum, maximum=maximum)

    return check
