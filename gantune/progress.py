"""Progress inside one item (iterations, optimisation steps), without tying methods to a console.

Methods call :func:`step` as they go; whoever runs them (the batch runner) listens with :func:`listen`. Without a
listener :func:`step` costs a context-variable lookup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextvars import ContextVar

StepListener = Callable[[int, int, str], None]
_listener: ContextVar[StepListener | None] = ContextVar("gantune_step_listener", default=None)


def step(done: int, total: int, what: str = "step") -> None:
    """Report ``done`` of ``total`` units (``what``: "step", "iteration", …) of the current item."""
    fn = _listener.get()
    if fn is not None:
        fn(done, total, what)


@contextlib.contextmanager
def listen(fn: StepListener | None):
    token = _listener.set(fn)
    try:
        yield
    finally:
        _listener.reset(token)
