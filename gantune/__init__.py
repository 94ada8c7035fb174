"""gantune: StyleGAN inversion and editing (HyperStyle, optimization, overparameterized latents)."""

__version__ = "0.1.0"
