"""The e4e and ReStyle-e4e encoders: an IR-SE backbone with one style head per W+ row.

Both predict a base code w₀ from their first head and add a per-row offset from every other head:
``w[:, 0] = head₀(F)``, ``w[:, i] = head₀(F) + headᵢ(Fᵢ)``. They differ in which feature map a head reads.

* **e4e** (``Encoder4Editing``, RGB input): a feature pyramid over the outputs c1, c2, c3 of IR-SE stages 2, 3 and 4.
  Rows 0–2 read c3 (16×16 at 256 px input), rows 3–6 read ``p2 = up(c3) + lat1(c2)`` (32×32), the rest
  ``p1 = up(p2) + lat2(c1)`` (64×64); ``up`` is bilinear with aligned corners, ``lat1`` / ``lat2`` are 1×1 convs.
* **ReStyle-e4e** (``ProgressiveBackboneEncoder``): every head reads c3, and the input has 6 channels, the target
  concatenated with the current reconstruction.

A head (``GradualStyleBlock``) is a stack of stride-2 3×3 convs with LeakyReLU(0.01) that reduces its map to 1×1,
then an equalised-lr linear layer. The module names are the official ones (``input_layer``, ``body``, ``styles``,
``latlayer1``, ``latlayer2``), so an official ``encoder.*`` state dict loads strictly after stripping the prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.layers import FullyConnected
from ..hyper.wencoder import IR_SE_50_UNITS, STAGE_DEPTHS, BottleneckIRSE, check_ir_se, stage_depths

COARSE_ROWS = 3  # e4e: rows read from c3
MIDDLE_ROWS = 7  # e4e: rows below this (and from COARSE_ROWS) read p2; the rest p1


class StyleHead(nn.Module):
    """Stride-2 3×3 convs (LeakyReLU 0.01 after each) down to 1×1, then an equalised-lr linear layer."""

    def __init__(self, cin: int, dim: int, n_convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [nn.Conv2d(cin if i == 0 else dim, dim, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = FullyConnected(dim, dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"a style head reduced its feature map to {tuple(x.shape[-2:])}, not 1×1: the input "
                             "image has another size than the encoder was built for")
        return self.linear(x.flatten(1))


def default_head_convs(num_ws: int, input_size: int, fpn: bool) -> tuple[int, ...]:
    """Convs per head: log2 of the side of the map each head reads (16/32/64 px at a 256 px input)."""
    base = int(math.log2(input_size // 16))
    if not fpn:
        return (base,) * num_ws
    return tuple(base + (0 if i < COARSE_ROWS else 1 if i < MIDDLE_ROWS else 2) for i in range(num_ws))


class StyleEncoder(nn.Module):
    """e4e (``fpn=True``) or ReStyle-e4e (``fpn=False``). Input (B, in_channels, S, S) in [-1, 1]; output the
    offsets from the file's ``latent_avg`` (or, for ReStyle, from the previous code), shape (B, num_ws, w_dim)."""

    def __init__(
        self,
        *,
        fpn: bool,  # e4e's feature pyramid (True) or ReStyle's single 16×16 map (False)
        num_ws: int = 18,  # W+ rows (2·log2(resolution) − 2)
        w_dim: int = 512,  # latent size of the generator (the heads' width)
        units: tuple[int, ...] = IR_SE_50_UNITS,  # IR-SE units per stage; (3, 4, 14, 3) is IR-SE-50
        in_channels: int = 3,  # 3 for e4e, 6 for ReStyle (target ‖ reconstruction)
        width: int = STAGE_DEPTHS[0],  # first-stage channels (official 64)
        head_convs: tuple[int, ...] | None = None,  # convs per head (default from input_size, as the official files)
        input_size: int = 256,  # side the encoder was trained on (official 256); not visible in the weights
    ) -> None:
        super().__init__()
        check_ir_se(units, width)
        head_convs = tuple(head_convs or default_head_convs(num_ws, input_size, fpn))
        if len(head_convs) != num_ws:
            raise ValueError(f"head_convs gives {len(head_convs)} heads for {num_ws} rows")
        self.fpn, self.num_ws, self.w_dim, self.units = fpn, num_ws, w_dim, tuple(units)
        self.width, self.in_channels, self.input_size, self.head_convs = width, in_channels, input_size, head_convs
        depths = stage_depths(width)
        self.input_layer = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                         nn.PReLU(width))
        body, cin = [], width
        for depth, n in zip(depths, units):
            for i in range(n):
                body.append(BottleneckIRSE(cin, depth, 2 if i == 0 else 1))
                cin = depth
        self.body = nn.Sequential(*body)
        ends = [sum(units[:k + 1]) - 1 for k in range(len(units))]
        self._taps = {ends[1]: "c1", ends[2]: "c2", ends[3]: "c3"}
        self.styles = nn.ModuleList(StyleHead(depths[3], w_dim, n) for n in head_convs)
        if fpn:
            self.latlayer1 = nn.Conv2d(depths[2], depths[3], 1)
            self.latlayer2 = nn.Conv2d(depths[1], depths[3], 1)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = {}
        x = self.input_layer(x)
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._taps:
                feats[self._taps[i]] = x
        return feats

    @staticmethod
    def _up_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the encoder takes {self.in_channels} input channels, got {x.shape[1]}")
        f = self.features(x)
        c3 = f["c3"]
        w0 = self.styles[0](c3)
        rows = [w0]
        feat = c3
        for i in range(1, self.num_ws):
            if self.fpn and i == COARSE_ROWS:
                p2 = feat = self._up_add(c3, self.latlayer1(f["c2"]))
            elif self.fpn and i == MIDDLE_ROWS:
                feat = self._up_add(p2, self.latlayer2(f["c1"]))
            rows.append(w0 + self.styles[i](feat))
        return torch.stack(rows, dim=1)

    def extra_repr(self) -> str:
        kind = "e4e FPN" if self.fpn else "ReStyle-e4e"
        return (f"{kind}, IR-SE units {self.units}, width {self.width}, in {self.in_channels}, input {self.input_size}, "
                f"w {self.w_dim} x {self.num_ws}")
