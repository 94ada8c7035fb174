"""Reconstruction losses for encoder / hypernetwork training, with documented substitutes for missing networks.

The reference HyperStyle loss is ``λ_l2·L2 + λ_lpips·LPIPS(alex) + λ_id·(1 − cos ArcFace)`` (OFFICIAL_FORMATS.md §7).
Two of those networks need weights that may not be on the machine:

* **LPIPS** needs its ImageNet backbone (``lpips-alex-backbone`` / ``lpips-vgg-backbone`` in the weights registry).
  When it is missing, the perceptual term becomes **1 − MS-SSIM** (:mod:`gantune.metrics.msssim`): a structural
  similarity that needs no trained network. A random-trunk LPIPS is never used.
* **Identity similarity** needs a face-recognition network (IR-SE-50 ArcFace ``model_ir_se50.pth``), which gantune
  does not ship. The substitute is **discriminator-feature similarity**: 1 − cos between the penultimate features of a
  *trained* StyleGAN2 discriminator for the target and the reconstruction (the features the discriminator uses to
  judge the image, so it is specific to the generator's domain). Without a discriminator the term is off (λ_sim = 0).

Every choice is returned with a one-line description, and the training commands print it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import WeightsError
from ..metrics.msssim import ms_ssim


@dataclass
class Term:
    """One loss term: ``fn(y_hat, y) -> (B,)`` plus what it is."""

    name: str  # short name for logs: lpips-alex, ms-ssim, disc-feat, …
    fn: object  # callable (y_hat, y) -> (B,)
    description: str  # one line for the user: which network, or which substitute and why


def _at_256(x: torch.Tensor) -> torch.Tensor:
    """LPIPS compares at 256 px, as the reference (face-pooled 256 images; smaller images are upsampled)."""
    from ..methods.hyper.inference import face_pool, to_input_size

    return face_pool(x) if x.shape[-1] > 256 else to_input_size(x)


def _at_most_256(x: torch.Tensor) -> torch.Tensor:
    """MS-SSIM compares at the generator's resolution (pooled to 256 when larger): upsampling would only blur."""
    from ..methods.hyper.inference import face_pool

    return face_pool(x) if x.shape[-1] > 256 else x.float()


def perceptual_term(net: str = "alex", *, device="cpu", allow_substitute: bool = True) -> Term:
    """LPIPS with the registry's ImageNet backbone, or 1 − MS-SSIM when the backbone is not available."""
    from ..metrics.lpips import backbone_name, get_lpips

    try:
        lp = get_lpips(net, device=device, resolution=256)
        return Term(f"lpips-{net}", lambda a, b: lp(_at_256(a), _at_256(b)), f"LPIPS-{net} at 256 px (ImageNet backbone {backbone_name(net)})")
    except WeightsError as e:
        if not allow_substitute:
            raise
        why = str(e).splitlines()[0]
        return Term("ms-ssim", lambda a, b: 1.0 - ms_ssim(_at_most_256(a), _at_most_256(b)),
                    f"SUBSTITUTE 1 − MS-SSIM for LPIPS-{net}: its ImageNet backbone is not available ({why}); "
                    f"run `gantune weights fetch {backbone_name(net)}` to train with LPIPS")


def _penultimate_module(D: nn.Module) -> nn.Module:
    """The last fully-connected layer of a discriminator (its input = the penultimate features)."""
    last = None
    for m in D.modules():
        if isinstance(m, nn.Linear) or type(m).__name__ in ("FullyConnected", "EqualLinear", "FullyConnectedLayer"):
            last = m
    if last is None:
        raise WeightsError("the discriminator has no fully-connected output layer to take features from")
    return last


class DiscriminatorFeatures(nn.Module):
    """Penultimate features of a frozen discriminator: the input of its last fully-connected layer, (B, F).
    A discriminator with a ``features(x)`` method is used through that method instead."""

    def __init__(self, D: nn.Module) -> None:
        super().__init__()
        self.D = D.eval().requires_grad_(False)
        if hasattr(D, "mbstd_group"):
            D.mbstd_group = 1  # per-image features: the minibatch-stddev channel must not mix target and batch-mates
        self._hook_target = None if hasattr(D, "features") else _penultimate_module(D)
        self.resolution = getattr(getattr(D, "cfg", None), "resolution", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution and x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)
        if self._hook_target is None:
            return self.D.features(x).flatten(1)
        got = []
        h = self._hook_target.register_forward_hook(lambda m, inp, out: got.append(inp[0]))
        try:
            self.D(x)
        finally:
            h.remove()
        return got[-1].flatten(1)


def similarity_term(discriminator: nn.Module | None) -> Term | None:
    """Identity-loss substitute: 1 − cos of trained-discriminator features; None (term off) without one."""
    if discriminator is None:
        return None
    feats = DiscriminatorFeatures(discriminator)
    return Term("disc-feat", lambda a, b: 1.0 - F.cosine_similarity(feats(a), feats(b), dim=1),
                "SUBSTITUTE for the identity loss (no face-recognition network): 1 − cos of the trained "
                "discriminator's penultimate features")


def load_discriminator(path, device="cpu") -> nn.Module:
    """The trained discriminator from a ``gantune train generator`` training state (``training-state-*.pt``)."""
    from ..core import GeneratorConfig
    from .checkpoint import load_state
    from .discriminator import Discriminator

    state = load_state(path)
    D = Discriminator(GeneratorConfig.from_dict(state["gen_config"]))
    D.load_state_dict(state["D"])
    return D.to(device).eval().requires_grad_(False)


def no_similarity_description() -> str:
    return ("identity loss OFF: no face-recognition network in gantune and no --discriminator given "
            "(its substitute, discriminator-feature similarity, needs a trained discriminator)")
