"""Layer specs: every modulated layer of the synthesis network, addressed by name.

Names follow the block/layer structure (``b4.conv1``, ``b4.torgb``, ``b8.conv0``, ``b8.conv1``, ``b8.torgb``, …).
Each spec also carries the names the official codes use, so translating foreign formats never needs a positional
table outside this module:

* ``rosinality``: module name in rosinality/stylegan2-pytorch (``conv1``, ``to_rgb1``, ``convs.{2i}``, ``to_rgbs.{i}``);
* ``hyperstyle_index``: index in HyperStyle's weight-delta list (0 = conv1, 1 = to_rgb1, 2+3i / 3+3i / 4+3i);
* ``ws_index``: which row of W+ modulates it (toRGB of block i shares its index with the next block's first conv);
* ``level``: coarse (4-8 px), medium (16-32 px) or fine (64 px and up), as in HyperStyle Table 8.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import GeneratorConfig

LEVELS = ("coarse", "medium", "fine")


def level_of(res: int) -> str:
    if res <= 8:
        return "coarse"
    if res <= 32:
        return "medium"
    return "fine"


@dataclass(frozen=True)
class LayerSpec:
    name: str  # gantune name, e.g. "b64.conv0"
    kind: str  # "conv" or "torgb"
    res: int  # output resolution of the layer
    in_ch: int  # input channels
    out_ch: int  # output channels
    kernel: int  # 3 for convs, 1 for toRGB
    up: int  # 2 for the first conv of blocks above 4 px, else 1
    ws_index: int  # row of W+ used by this layer
    noise_index: int | None  # index of the rosinality noise buffer (None for toRGB)
    level: str  # coarse / medium / fine
    rosinality: str  # rosinality module name
    hyperstyle_index: int  # index in the official HyperStyle offset list

    @property
    def block(self) -> str:
        return self.name.split(".")[0]

    @property
    def attr(self) -> str:
        return self.name.split(".")[1]


def layer_specs(cfg: GeneratorConfig) -> list[LayerSpec]:
    """All modulated layers in forward order (the order of the official HyperStyle delta list)."""
    specs: list[LayerSpec] = []
    c4 = cfg.channels(4)
    specs.append(LayerSpec("b4.conv1", "conv", 4, c4, c4, 3, 1, 0, 0, "coarse", "conv1", 0))
    specs.append(LayerSpec("b4.torgb", "torgb", 4, c4, cfg.img_channels, 1, 1, 1, None, "coarse", "to_rgb1", 1))
    for i, res in enumerate(cfg.block_resolutions[1:]):
        cin, cout = cfg.channels(res // 2), cfg.channels(res)
        lvl = level_of(res)
        specs.append(
            LayerSpec(f"b{res}.conv0", "conv", res, cin, cout, 3, 2, 1 + 2 * i, 1 + 2 * i, lvl, f"convs.{2 * i}", 2 + 3 * i)
        )
        specs.append(
            LayerSpec(
                f"b{res}.conv1", "conv", res, cout, cout, 3, 1, 2 + 2 * i, 2 + 2 * i, lvl, f"convs.{2 * i + 1}", 3 + 3 * i
            )
        )
        specs.append(
            LayerSpec(
                f"b{res}.torgb", "torgb", res, cout, cfg.img_channels, 1, 1, 3 + 2 * i, None, lvl, f"to_rgbs.{i}", 4 + 3 * i
            )
        )
    return specs


def select_layers(
    specs: list[LayerSpec], *, levels=("medium", "fine"), kinds=("conv",), names: list[str] | None = None
) -> list[LayerSpec]:
    """Pick layers by level and kind (default: HyperStyle's medium + fine non-toRGB convs), or by explicit names.

    Names may be gantune names (``b64.conv0``) or rosinality names (``convs.8``).
    """
    if names is not None:
        by_name = {s.name: s for s in specs} | {s.rosinality: s for s in specs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"unknown layer name(s) {missing}; valid: {[s.name for s in specs]}")
        return [by_name[n] for n in names]
    bad = set(levels) - set(LEVELS)
    if bad:
        raise ValueError(f"unknown level(s) {sorted(bad)}; valid: {LEVELS}")
    return [s for s in specs if s.level in levels and s.kind in kinds]
