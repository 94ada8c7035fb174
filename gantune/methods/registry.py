"""The one registry of inversion methods: name -> setup(InvertOptions) -> MethodRun. ``gantune invert --method NAME``
and ``gantune.invert(..., method=NAME)`` both run a method through it, with the same options, parameters and
defaults (see :class:`gantune.methods.pipeline.InvertOptions`); ``invert-hyper``, ``invert-optim`` and
``invert-overparam`` are the same methods with typed options."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InputError
from .e4e import setup_e4e, setup_restyle_e4e
from .hyper.method import setup_hyperstyle
from .optim_run import setup_optim, setup_overparam
from .pipeline import InvertOptions, MethodRun

METHODS: dict[str, Callable[[InvertOptions], MethodRun]] = {
    "hyperstyle": setup_hyperstyle,  # W-encoder + hypernetwork offsets (--param initial=e4e|restyle-e4e)
    "optim": setup_optim,  # W / W+ projector, PTI with tune=true
    "overparam": setup_overparam,  # latent matrix
    "e4e": setup_e4e,  # encoder only, W+
    "restyle-e4e": setup_restyle_e4e,  # iterative encoder, W+
}


def setup(name: str, opts: InvertOptions) -> MethodRun:
    """Load method ``name`` for a run with ``opts`` (its networks once, every file named in one message)."""
    try:
        make = METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}", f"one of {', '.join(METHODS)}") from None
    return make(opts)
