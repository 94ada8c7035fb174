"""HyperStyle: W-encoder initial latent, hypernetwork offsets, iterative refinement, official checkpoint import."""

from .checkpoint import (
    HyperStyleModel,
    hypernet_from_official,
    hypernet_to_official,
    hyperstyle_from_checkpoint,
    hyperstyle_to_official,
    load_hyperstyle,
    load_w_encoder,
    w_encoder_from_official,
)
from .hypernet import HyperNetwork, TunedLayer, default_heads
from .inference import HyperOutput, refine, render
from .wencoder import WEncoder

__all__ = [
    "HyperNetwork",
    "HyperOutput",
    "HyperStyleModel",
    "TunedLayer",
    "WEncoder",
    "default_heads",
    "hypernet_from_official",
    "hypernet_to_official",
    "hyperstyle_from_checkpoint",
    "hyperstyle_to_official",
    "load_hyperstyle",
    "load_w_encoder",
    "refine",
    "render",
    "w_encoder_from_official",
]
