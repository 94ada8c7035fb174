"""The W-encoder that gives HyperStyle its initial latent: an IR-SE-50 backbone pooled to one w.

    x (B, 3, 256, 256) in [-1, 1] ──IR-SE-50──▶ (B, 512, 16, 16) ──avg pool──▶ (B, 512) ──EqualLinear──▶ w, repeated

The module tree matches the official ``faces_w_encoder.pt`` encoder keys (``input_layer.*``, ``body.{0..23}.*``,
``linear.*``), so that file's ``encoder.*`` state dict loads strictly after stripping the prefix.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...core.layers import FullyConnected
from ...accel import Conv2d

IR_SE_50_UNITS = (3, 4, 14, 3)  # bottleneck units per stage (IR-SE-50)
STAGE_DEPTHS = (64, 128, 256, 512)  # channels per stage


def check_ir_se(units: tuple[int, ...], width: int) -> None:
    """The IR-SE body's constraints: one unit count per stage, and a first-stage width the squeeze-excite
    reduction (16) divides."""
    if len(units) != len(STAGE_DEPTHS):
        raise ValueError(f"units must give {len(STAGE_DEPTHS)} stages, got {units}")
    if width < 16 or width % 16:
        raise ValueError(f"width must be a multiple of 16 (squeeze-excite reduction), got {width}")


def stage_depths(width: int = STAGE_DEPTHS[0]) -> tuple[int, ...]:
    """Channels per stage for a first-stage width (64: the official IR-SE-50)."""
    return tuple(d * width // STAGE_DEPTHS[0] for d in STAGE_DEPTHS)


class SqueezeExcite(nn.Module):
    """Channel attention: x · sigmoid(fc2(relu(fc1(avgpool(x))))) with 1×1 convs, reduction 16, no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * s


class BottleneckIRSE(nn.Module):
    """Improved-residual unit with squeeze-excitation: BN, 3×3 conv, PReLU, 3×3 conv (stride), BN, SE; plus a
    shortcut that is a strided 1×1 conv + BN when the width changes, else plain subsampling (no parameters)."""

    def __init__(self, cin: int, depth: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            Conv2d(cin, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class WEncoder(nn.Module):
    """IR-SE encoder into W. Output (B, num_ws, w_dim): the same w for every layer (HyperStyle then adds its
    checkpoint's ``latent_avg``)."""

    def __init__(
        self,
        *,
        num_ws: int = 18,  # rows of the returned W+ code (2·log2(resolution) − 2)
        w_dim: int = 512,  # latent size of the generator
        units: tuple[int, ...] = IR_SE_50_UNITS,  # units per stage; (3, 4, 14, 3) is IR-SE-50 (smaller for tests)
        in_channels: int = 3,  # RGB
        width: int = STAGE_DEPTHS[0],  # channels of the first stage (official 64); stages are width·(1, 2, 4, 8)
        input_size: int = 256,  # side of the images it is trained on (official 256); inputs are resized to it
    ) -> None:
        super().__init__()
        check_ir_se(units, width)
        self.num_ws, self.w_dim, self.units = num_ws, w_dim, tuple(units)
        self.width, self.input_size = width, input_size
        self.input_layer = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                         nn.PReLU(width))
        body, cin = [], width
        for depth, n in zip(stage_depths(width), units):
            for i in range(n):
                body.append(BottleneckIRSE(cin, depth, 2 if i == 0 else 1))
                cin = depth
        self.body = nn.Sequential(*body)
        self.linear = FullyConnected(cin, w_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.body(self.input_layer(x))  # (B, 8·width, H/16, W/16)
        w = self.linear(feat.mean(dim=(2, 3)))  # (B, w_dim)
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def extra_repr(self) -> str:
        return f"IR-SE units {self.units}, width {self.width}, input {self.input_size}, w {self.w_dim} x {self.num_ws}"
