"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, with nothing downloaded behind the user's back.

Two parts make an LPIPS network:

* the ImageNet backbone (torchvision's VGG16 or AlexNet ``features``): comes from the gantune weights registry
  (``lpips-vgg-backbone`` = torchvision ``vgg16-397923af.pth``, ``lpips-alex-backbone`` = ``alexnet-owt-7be5be79.pth``);
  ``gantune weights fetch lpips-vgg-backbone`` puts it in the cache;
* the linear calibration layers ``lin0..lin4``: shipped inside the ``lpips`` package (``weights/v0.1/<net>.pth``).

The package is built with a random trunk (``pnet_rand=True``, so torchvision never downloads) and without its own
linear-layer loading; both state dicts are then loaded here with ``weights_only=True`` and every key accounted for.
``allow_random=True`` keeps the random trunk: a deterministic but meaningless distance, for tests and timing only.
"""

from __future__ import annotations

import inspect
import os
import re
import threading
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import WeightsError

LPIPS_NETS = ("vgg", "alex")


def backbone_name(net: str) -> str:
    """Registry name of the ImageNet backbone of an LPIPS network."""
    return f"lpips-{net}-backbone"


def _check_net(net: str) -> str:
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    return net


def _linear_layers_path(net: str) -> Path:
    import lpips

    return Path(inspect.getfile(lpips)).parent / "weights" / "v0.1" / f"{net}.pth"


def _backbone_path(net: str) -> Path:
    """The cached backbone file, or a WeightsError that says how to fetch it."""
    name = backbone_name(net)
    hint = f"run: gantune weights fetch {name}"
    try:
        from ..weights import resolve
    except ImportError as e:  # the registry module is missing from this install
        raise WeightsError(f"LPIPS-{net} needs its ImageNet backbone but the weights registry is unavailable ({e})", hint) from None
    try:
        path = Path(resolve(name))
    except WeightsError as e:
        raise WeightsError(f"LPIPS-{net} needs its ImageNet backbone '{name}', which is not available: {e}", hint) from None
    if not path.is_file():
        raise WeightsError(f"LPIPS-{net} backbone '{name}' resolved to {path}, which does not exist", hint)
    return path


def _load_backbone(model: nn.Module, path: Path, net: str) -> None:
    """torchvision ``features.<i>.<p>`` -> lpips ``net.slice<k>.<i>.<p>``; every trunk key must be present."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a weights problem
        raise WeightsError(f"{path}: cannot read the LPIPS-{net} backbone ({e})", f"gantune weights fetch {backbone_name(net)} --force") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    mapped, missing = {}, []
    for key in model.net.state_dict():
        m = re.fullmatch(r"slice\d+\.(\d+)\.(weight|bias)", key)
        if m is None:
            raise RuntimeError(f"unexpected key in the lpips {net} trunk: {key}")  # lpips package changed: a bug here
        src = f"features.{m.group(1)}.{m.group(2)}"
        if src not in sd:
            missing.append(src)
        else:
            mapped[key] = sd[src]
    if missing:
        raise WeightsError(f"{path}: not a torchvision {net} checkpoint (missing {missing[:4]}{' …' if len(missing) > 4 else ''})",
                           f"gantune weights fetch {backbone_name(net)} --force")
    try:
        model.net.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: backbone shapes do not match LPIPS-{net} ({e})") from None


def _build(net: str, allow_random: bool) -> nn.Module:
    import lpips

    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" notes, from inside the package
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    lin = torch.load(_linear_layers_path(net), map_location="cpu", weights_only=True)
    want = {k for k in model.state_dict() if re.match(r"lin\d+\.", k)}  # (also listed as lins.<i>)
    if set(lin) != want:
        raise WeightsError(f"the lpips package's {net} linear layers do not match (got {sorted(lin)})", "reinstall lpips")
    model.load_state_dict(lin, strict=False)
    if not allow_random:
        _load_backbone(model, _backbone_path(net), net)
    model.eval().requires_grad_(False)
    return model


class LPIPSDistance(nn.Module):
    """LPIPS between two image batches in [-1, 1]: ``dist(x, y) -> (B,)``.

    Images larger than ``resolution`` are area-downsampled to it first (the StyleGAN2 projector compares at 256 px).
    Gradients flow to the inputs; the network itself is frozen.
    """

    def __init__(
        self,
        net: str = "vgg",  # backbone: vgg (projector, metrics) or alex (PTI tuning)
        *,
        resolution: int | None = 256,  # compare at most at this side length; None = as given
        allow_random: bool = False,  # tests/benchmarks only: random ImageNet trunk instead of the registry's
    ) -> None:
        super().__init__()
        self.net_name = _check_net(net)
        self.resolution = resolution
        self.random_backbone = allow_random
        self.model = _build(net, allow_random)
        self._fixed: tuple | None = None  # (y, its version, its normalised features): the last y without gradient

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution is not None and x.shape[-1] > self.resolution:
            x = F.interpolate(x.float(), size=(self.resolution, self.resolution), mode="area")
        return x.float()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != y.shape[1:] or (x.shape[0] != y.shape[0] and 1 not in (x.shape[0], y.shape[0])):
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        import lpips

        m = self.model
        if y.requires_grad or not isinstance(m, lpips.LPIPS) or m.spatial or not m.lpips or m.version != "0.1":
            return m(self.prepare(x), self.prepare(y)).flatten(1).mean(1)
        # lpips.LPIPS.forward step for step, with the features of a fixed y (the projector's and PTI's target)
        # computed once: a backbone forward saved per step, same bits
        feats_y = self._target_features(y)
        feats_x = [lpips.normalize_tensor(o) for o in m.net.forward(m.scaling_layer(self.prepare(x)))]
        val = 0
        for kk in range(m.L):
            val += lpips.spatial_average(m.lins[kk]((feats_x[kk] - feats_y[kk]) ** 2), keepdim=True)
        return val.flatten(1).mean(1)

    def _target_features(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Normalised backbone features of ``y``, kept while the same tensor (same object, unchanged) comes again.
        The reference held keeps its memory from being reused by another tensor."""
        import lpips

        kept = self._fixed  # one read: a distance may be shared between threads
        if kept is not None and kept[0] is y and kept[1] == y._version:
            return kept[2]
        m = self.model
        with torch.no_grad():
            feats = [lpips.normalize_tensor(o) for o in m.net.forward(m.scaling_layer(self.prepare(y)))]
        self._fixed = (y, y._version, feats)
        return feats

    def extra_repr(self) -> str:
        return f"net={self.net_name}, resolution={self.resolution}, random_backbone={self.random_backbone}"


_CACHE: dict[tuple, LPIPSDistance] = {}
_CACHE_LOCK = threading.Lock()


def get_lpips(
    net: str = "vgg", *, device: torch.device | str = "cpu", resolution: int | None = 256, allow_random: bool = False
) -> LPIPSDistance:
    """A shared, frozen :class:`LPIPSDistance` per (net, device, resolution, allow_random): built once per process."""
    key = (net, str(torch.device(device)), resolution, allow_random, os.environ.get("GANTUNE_HOME"))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = LPIPSDistance(net, resolution=resolution, allow_random=allow_random).to(device)
        return _CACHE[key]
