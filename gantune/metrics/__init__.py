"""Image distances used as losses and reported as metrics: L2 and LPIPS (more may join: MS-SSIM, identity)."""

from .l2 import L2Distance, l2_distance
from .lpips import LPIPS_NETS, LPIPSDistance, backbone_name, get_lpips

__all__ = ["L2Distance", "LPIPS_NETS", "LPIPSDistance", "backbone_name", "get_lpips", "l2_distance"]
