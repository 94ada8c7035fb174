"""e4e and ReStyle-e4e: the official W+ encoders, imported exactly, as inversion methods and as HyperStyle's
initial latent."""

from .checkpoint import StyleEncoderModel, encoder_kind, load_style_encoder, style_encoder_from_checkpoint
from .method import encode_e4e, encode_restyle, setup_e4e, setup_restyle_e4e
from .model import StyleEncoder, StyleHead

__all__ = [
    "StyleEncoder",
    "StyleEncoderModel",
    "StyleHead",
    "encode_e4e",
    "encode_restyle",
    "encoder_kind",
    "load_style_encoder",
    "setup_e4e",
    "setup_restyle_e4e",
    "style_encoder_from_checkpoint",
]
