"""Training loops: StyleGAN2 generators (standard and overparameterized), losses, data, checkpoints, DDP helpers."""

from .data import LICENSE_NOTE, SYNTHETIC_FACES, ImageFolder, SyntheticFaces, open_source
from .discriminator import Discriminator
from .generator import GeneratorTrainer, TrainOptions, train

__all__ = [
    "LICENSE_NOTE",
    "SYNTHETIC_FACES",
    "Discriminator",
    "GeneratorTrainer",
    "ImageFolder",
    "SyntheticFaces",
    "TrainOptions",
    "open_source",
    "train",
]
