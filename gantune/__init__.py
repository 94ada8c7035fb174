"""gantune: StyleGAN inversion and editing (HyperStyle, optimization, overparameterized latents)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``gantune.invert`` / ``edit`` / ``adapt`` / ``interpolate`` (imported on first use; see :mod:`gantune.api`)."""
    if name in ("invert", "edit", "adapt", "interpolate"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'gantune' has no attribute {name!r}")
