"""The LPIPS of the evaluation reports: LPIPS-alex with the ImageNet backbone from the weights registry, or, when
that backbone is not in the cache, a *random-initialised* AlexNet trunk (torch seed 0) with the package's trained
linear heads, named as that substitute everywhere it is shown. Images smaller than 64 px are bilinearly upsampled to
64 px for it, larger than 256 px area-downsampled to 256 px."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import WeightsError
from ..metrics.lpips import LPIPSDistance, backbone_name, get_lpips

LPIPS_MIN_SIDE = 64  # LPIPS inputs smaller than this are bilinearly upsampled to it
LPIPS_MAX_SIDE = 256  # and larger ones area-downsampled to this (as the projector's LPIPS)

LPIPS_SUBSTITUTE_LABEL = "LPIPS* (random AlexNet trunk, seed 0: a substitute, ImageNet weights not available)"
LPIPS_LABEL = "LPIPS (AlexNet, ImageNet backbone)"


@dataclass
class LPIPSMetric:
    """LPIPS-alex between two batches in [-1, 1] -> (B,), with the resizing rule applied; says what it is."""

    distance: torch.nn.Module  # a gantune LPIPSDistance (resolution = LPIPS_MAX_SIDE)
    label: str  # the name shown in tables
    substitute: bool  # True: random-initialised trunk
    note: str  # one line: which network, or why the substitute

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dev = next(self.distance.parameters()).device
        a, b = a.float().to(dev), b.float().to(dev)
        if a.shape[-1] < LPIPS_MIN_SIDE:
            size = (LPIPS_MIN_SIDE, LPIPS_MIN_SIDE)
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return self.distance(a, b).cpu()

    def describe(self) -> dict:
        return {"label": self.label, "net": "alex", "substitute": self.substitute, "note": self.note,
                "resize": f"bilinear up to {LPIPS_MIN_SIDE} px below it, area down to {LPIPS_MAX_SIDE} px above it"}


_SUBSTITUTES: dict[str, torch.nn.Module] = {}


def lpips_metric(device="cpu", *, allow_substitute: bool = True) -> LPIPSMetric:
    """LPIPS-alex with the registry's ImageNet backbone, else the named random-trunk substitute (torch seed 0)."""
    try:
        d = get_lpips("alex", device=device, resolution=LPIPS_MAX_SIDE)
        return LPIPSMetric(d, LPIPS_LABEL, False, f"LPIPS-alex with the ImageNet backbone {backbone_name('alex')}")
    except WeightsError as e:
        if not allow_substitute:
            raise
        why = str(e).splitlines()[0]
    key = str(torch.device(device))
    if key not in _SUBSTITUTES:  # built once per process and device (the AlexNet classifier init takes seconds)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _SUBSTITUTES[key] = LPIPSDistance("alex", resolution=LPIPS_MAX_SIDE, allow_random=True).to(device)
    return LPIPSMetric(_SUBSTITUTES[key], LPIPS_SUBSTITUTE_LABEL, True,
                       f"SUBSTITUTE: AlexNet trunk randomly initialised with torch seed 0, the lpips package's trained "
                       f"linear heads; the ImageNet backbone is not available ({why}); run `gantune weights fetch "
                       f"{backbone_name('alex')}` for real LPIPS")
