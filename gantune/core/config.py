"""Architecture configuration of the StyleGAN2 core.

The config is everything needed to rebuild a generator from a state dict; it is stored as JSON next to the
weights in the native format (see ``gantune.weights.native``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


_OPTIONAL_FIELDS = ("c_dim", "embed_features", "num_fp16_res")


@dataclass(frozen=True)
class GeneratorConfig:
    resolution: int = 1024  # output side in pixels, a power of two from 8 to 1024 (larger works, untested)
    z_dim: int = 512  # input latent z size
    w_dim: int = 512  # intermediate latent w size (style vector)
    mapping_layers: int = 8  # fully connected layers in the mapping network (official FFHQ: 8, ADA --cfg auto: 2)
    mapping_lr_mul: float = 0.01  # equalized-lr multiplier of the mapping layers (both official codes: 0.01)
    channel_base: int = 32768  # channels at resolution r are min(channel_base // r, channel_max); 32768 = rosinality cm 2
    channel_max: int = 512  # cap on channels per layer
    use_noise: bool = True  # per-pixel noise inputs (the overparameterized paper trains without them)
    img_channels: int = 3  # output image channels
    # Overparameterized latent (Poirier-Ginter et al. 2022): a (latent_rows x z_dim) latent matrix whose rows
    # modulate each output row of every conv separately. 0 means the standard StyleGAN2 latent.
    latent_rows: int = 0
    # NVIDIA's clamp of every synthesis layer's output to +-value, after bias, activation and its gain (toRGB too);
    # ADA's configs set 256. None = off.
    conv_clamp: float | None = None
    # Class-conditional mapping (stylegan2-ada ``c_dim``): the label c (B, c_dim) is embedded by a linear layer to
    # ``embed_features`` (0 = w_dim), both z and the embedding are normalised (2nd moment) and concatenated.
    c_dim: int = 0
    embed_features: int = 0
    # Provenance only: how many top resolutions the original network ran in float16 (gantune renders float32).
    num_fp16_res: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # free-form provenance, never used in maths

    def __post_init__(self) -> None:
        self._check_fields()
        if not _is_pow2(self.resolution) or self.resolution < 8:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if self.mapping_layers < 1:
            raise ValueError(f"mapping_layers must be >= 1, got {self.mapping_layers}")
        if self.latent_rows < 0:
            raise ValueError("latent_rows must be >= 0")
        if self.latent_rows and self.latent_rows < max(self.channels(r) for r in self.block_resolutions):
            raise ValueError(
                f"latent_rows={self.latent_rows} is smaller than the widest layer "
                f"({max(self.channels(r) for r in self.block_resolutions)} channels)"
            )

    def _check_fields(self) -> None:
        """Every field of the right type and range (a config read from a file is untrusted)."""
        for name in ("resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "img_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1 << 20:
                raise ValueError(f"{name} must be a positive whole number (at most {1 << 20}), got {v!r}")
        for name in ("latent_rows", "c_dim", "embed_features", "num_fp16_res"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 1 << 20:
                raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
        lr = self.mapping_lr_mul
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"mapping_lr_mul must be a finite number > 0, got {lr!r}")
        c = self.conv_clamp
        if c is not None and (not isinstance(c, (int, float)) or isinstance(c, bool) or not math.isfinite(c) or c <= 0):
            raise ValueError(f"conv_clamp must be a finite number > 0 or null, got {c!r}")
        if not isinstance(self.use_noise, bool):
            raise ValueError(f"use_noise must be true or false, got {self.use_noise!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be an object, got {type(self.extra).__name__}")
        if self.c_dim and self.latent_rows:
            raise ValueError("a class-conditional generator cannot also have an overparameterized latent")
        if self.embed_features and not self.c_dim:
            raise ValueError("embed_features is set but c_dim is 0 (an unconditional generator embeds no label)")

    # --- derived quantities -------------------------------------------------------------------------------------
    @property
    def log2_res(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, self.log2_res + 1)]

    def channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))

    @property
    def num_ws(self) -> int:
        """Number of w vectors the synthesis network consumes (18 at 1024 px)."""
        return 2 * self.log2_res - 2

    @property
    def conditional(self) -> bool:
        return self.c_dim > 0

    @property
    def embed_dim(self) -> int:
        """Size of the embedded class label (0 for an unconditional generator)."""
        return (self.embed_features or self.w_dim) if self.c_dim else 0

    @property
    def overparam(self) -> bool:
        return self.latent_rows > 0

    @property
    def channel_multiplier(self) -> float:
        """The rosinality `channel_multiplier` equivalent of `channel_base` (2 for the official FFHQ model)."""
        return self.channel_base / 16384

    # --- (de)serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """All fields; the conditional and fp16 fields only when set, so unconditional configs keep their keys."""
        d = dataclasses.asdict(self)
        for name in _OPTIONAL_FIELDS:
            if d[name] == 0:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a generator config must be an object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown generator config fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **kw) -> "GeneratorConfig":
        return dataclasses.replace(self, **kw)

    def describe(self) -> str:
        chans = ", ".join(f"{r}:{self.channels(r)}" for r in self.block_resolutions)
        kind = f"overparameterized ({self.latent_rows}x{self.z_dim} latent)" if self.overparam else "standard"
        if self.conditional:
            kind += f", class-conditional ({self.c_dim} classes)"
        if self.conv_clamp is not None:
            kind += f", conv_clamp {self.conv_clamp:g}"
        return (
            f"StyleGAN2 {self.resolution}px, {kind}, mapping {self.mapping_layers} layers, "
            f"z {self.z_dim}, w {self.w_dim}, noise {'on' if self.use_noise else 'off'}, channels {{{chans}}}"
        )
