"""Inversion methods: pure functions/classes, tensors in, :class:`InversionResult` out.

* ``hyper/``: HyperStyle (W-encoder, hypernetwork, iterative refinement, official checkpoint import);
* ``pipeline.py``: the per-image batch pipeline every ``invert`` method shares (inputs -> PNG + record + manifest).
"""

from .result import InversionResult

__all__ = ["InversionResult"]
