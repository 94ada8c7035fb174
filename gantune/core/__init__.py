"""The StyleGAN2 core. Imports only torch; knows nothing about files, registries, CLI or methods."""

from .config import GeneratorConfig
from .generator import NOISE_MODES, Generator, MappingNetwork, SynthesisNetwork, normalize_2nd_moment
from .modconv import modulated_conv2d
from .resample import make_kernel, upfirdn2d, upsample2x
from .specs import LEVELS, LayerSpec, layer_specs, level_of, select_layers

__all__ = [
    "LEVELS",
    "NOISE_MODES",
    "Generator",
    "GeneratorConfig",
    "LayerSpec",
    "MappingNetwork",
    "SynthesisNetwork",
    "layer_specs",
    "level_of",
    "make_kernel",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "select_layers",
    "upfirdn2d",
    "upsample2x",
]
