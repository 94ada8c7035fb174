"""Image domains of the HyperStyle models: square (faces, AFHQ wild) and ``cars`` (4:3 content in a square generator).

The official cars handling (``dataset_type`` containing ``"cars"``), scaled to any generator resolution R and
encoder input side S (official R = 512, S = 256):

* inputs: ``Resize((192, 256))``, i.e. (3S/4, S) (H, W), for the W-encoder and the hypernetwork (its feature map is
  12×16; the refinement blocks keep their 16×16 conv counts and still end at 1×1, or 2×2 before the average pool);
* the first reconstruction (no offsets): pooled to S×S, then rows S/8 : 7S/8 (32:224);
* later reconstructions: rows R/8 : 7R/8 of the full output (64:448), then average-pooled to (3S/4, S);
* the output image: rows R/8 : 7R/8 (512×384 at 512 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


SQUARE, CARS = "square", "cars"
DOMAINS = (SQUARE, CARS)


def domain_of(dataset_type) -> str | None:
    """The domain an official ``opts['dataset_type']`` means (the official test: ``"cars" in dataset_type``), or
    None when the checkpoint does not say."""
    if not isinstance(dataset_type, str) or not dataset_type:
        return None
    return CARS if "cars" in dataset_type else SQUARE


def input_hw(side: int, domain: str) -> tuple[int, int]:
    """(H, W) of the encoder inputs for an encoder trained on ``side``: (side, side), cars (3·side/4, side)."""
    return (side * 3 // 4, side) if domain == CARS else (side, side)


def crop_rows(height: int, domain: str) -> tuple[int, int] | None:
    """Rows kept of a square ``height``-pixel image: cars (height/8, 7·height/8); None for square domains."""
    return (height // 8, height - height // 8) if domain == CARS else None


def output_crop(resolution: int, domain: str) -> dict | None:
    """The record's ``output_crop`` meta: {"box": [left, top, right, bottom], "size": [W, H]} of the generator output."""
    rows = crop_rows(resolution, domain)
    if rows is None:
        return None
    return {"box": [0, rows[0], resolution, rows[1]], "size": [resolution, resolution]}


def crop_output(y: torch.Tensor, domain: str) -> torch.Tensor:
    """The published part of a full generator output (B, 3, R, R): cars rows R/8 : 7R/8."""
    rows = crop_rows(y.shape[-2], domain)
    return y if rows is None else y[..., rows[0] : rows[1], :]


def pool_reconstruction(y: torch.Tensor, side: int, domain: str, *, first: bool) -> torch.Tensor:
    """The reconstruction as the hypernetwork's second input (not clamped). Square: ``AdaptiveAvgPool2d((S, S))``.
    Cars: the first (W-encoder) reconstruction pooled to S×S then rows S/8 : 7S/8; later ones rows R/8 : 7R/8 then
    ``AdaptiveAvgPool2d((3S/4, S))``."""
    y = y.float()
    if domain != CARS:
        return F.adaptive_avg_pool2d(y, (side, side))
    if first:
        a, b = crop_rows(side, domain)
        return F.adaptive_avg_pool2d(y, (side, side))[..., a:b, :]
    return F.adaptive_avg_pool2d(crop_output(y, domain), input_hw(side, domain))


