"""Editing inverted images: latent directions (InterFaceGAN files, ``.npy``), rendering with the record's offsets,
and domain adaptation (a record's offsets applied to a fine-tuned generator)."""

from .adapt import adapt_render, default_adapt_layers, select_adapt_layers
from .directions import Direction, apply_direction, load_direction, parse_strengths
from .render import load_record, record_generator_spec, render_record

__all__ = [
    "Direction",
    "adapt_render",
    "apply_direction",
    "default_adapt_layers",
    "load_direction",
    "load_record",
    "parse_strengths",
    "record_generator_spec",
    "render_record",
    "select_adapt_layers",
]
