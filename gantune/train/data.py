"""Training images: a folder of images, or unlimited synthetic faces from a small DCGAN.

Every source draws its randomness from a ``torch.Generator`` passed in by the caller and always for the GLOBAL batch;
each data-parallel rank then keeps its own contiguous slice. So the images a run sees do not depend on the number of
processes, and a resumed run sees exactly what an uninterrupted one would have seen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..io.images import ImageError, load_image, pil_to_tensor

SYNTHETIC_FACES = "synthetic-faces"

# Where the synthetic faces come from and what that means for anything trained on them.
LICENSE_NOTE = (
    "synthetic-faces: images drawn from the DCGAN of the `gan-face-generate` package, trained on DigiFace-1M "
    "(Microsoft; licensed for non-commercial research only). Weights trained on these images inherit that "
    "restriction: NON-COMMERCIAL use only."
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def slice_for_rank(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of a global batch along dim 0 (the batch must divide evenly)."""
    if x.shape[0] % world:
        raise ValueError(f"global batch {x.shape[0]} is not divisible by world size {world}")
    n = x.shape[0] // world
    return x[rank * n : (rank + 1) * n]


class DCGANGenerator(nn.Module):
    """The PyTorch-tutorial DCGAN generator (z 100 -> 64x64 RGB), laid out so the package's ``netG_state_dict``
    loads strictly: ``main.{0,3,6,9,12}`` transposed convs, ``main.{1,4,7,10}`` batch norms."""

    def __init__(
        self,
        nz: int = 100,  # latent size
        ngf: int = 64,  # feature maps of the last hidden layer (x8, x4, x2, x1 from 4 px up)
        nc: int = 3,  # output channels
    ) -> None:
        super().__init__()
        self.nz = nz
        chans = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, chans[0], 4, 1, 0, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, nz) -> (B, nc, 64, 64) in [-1, 1]."""
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


def dcgan_weights_path() -> Path:
    """The weights file shipped inside the optional ``gan-face-generate`` package (found without importing it)."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "--data synthetic-faces needs the optional package gan-face-generate",
            hint="pip install --no-deps gan-face-generate",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.tar"
    if not path.is_file():
        raise InputError(f"gan-face-generate is installed but has no weights file ({path})", hint="reinstall it")
    return path


def load_dcgan(device: str | torch.device = "cpu") -> DCGANGenerator:
    """The DigiFace-1M DCGAN in eval mode (batch norms use their running statistics: deterministic per z)."""
    ckpt = torch.load(dcgan_weights_path(), map_location="cpu", weights_only=True)
    sd = ckpt.get("netG_state_dict") if isinstance(ckpt, dict) else None
    if sd is None:
        raise InputError("gan-face-generate weights.tar has no netG_state_dict", hint="reinstall gan-face-generate")
    net = DCGANGenerator()
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False).to(device)


class SyntheticFaces:
    """Unlimited 64x64 faces from the DCGAN, resized (area) to ``resolution``; deterministic per generator state."""

    name = SYNTHETIC_FACES
    license_note = LICENSE_NOTE

    def __init__(self, resolution: int, device: str | torch.device = "cpu") -> None:
        self.resolution = resolution
        self.device = torch.device(device)
        self.net = load_dcgan(self.device)

    @torch.no_grad()
    def render(self, z: torch.Tensor) -> torch.Tensor:
        img = self.net(z.to(self.device)).clamp(-1, 1)
        if self.resolution != img.shape[-1]:
            img = F.interpolate(img, size=(self.resolution,) * 2, mode="area" if self.resolution < img.shape[-1] else "bilinear",
                                **({} if self.resolution < img.shape[-1] else {"antialias": True, "align_corners": False}))
        return img

    @property
    def teacher_dim(self) -> int:
        return self.net.nz

    def teacher(self, z: torch.Tensor) -> torch.Tensor:
        """The faces for given latents (B, nz), as the generator under training should draw them (distillation)."""
        return self.render(z)

    def sample(self, batch: int, generator: torch.Generator, *, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Rank's share of a global batch of ``batch`` faces, (batch // world, 3, res, res) in [-1, 1]."""
        z = torch.randn(batch, self.net.nz, generator=generator)
        return self.render(slice_for_rank(z, rank, world))

    def describe(self) -> dict:
        return {"data": self.name, "license": "non-commercial (DigiFace-1M)", "license_note": LICENSE_NOTE}


class ImageFolder:
    """Every image under a folder (recursively), resized to ``resolution`` once and kept in memory as uint8;
    batches are drawn uniformly with replacement; random horizontal flips optional."""

    def __init__(self, folder: str | Path, resolution: int, device: str | torch.device = "cpu", *, xflip: bool = False) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"--data {folder}: not a folder", hint=f"give a folder of images or '{SYNTHETIC_FACES}'")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"--data {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        imgs, self.skipped = [], []
        for p in files:
            try:
                t = pil_to_tensor(load_image(p), resolution)
            except ImageError as e:
                self.skipped.append(f"{p}: {e}")
                continue
            imgs.append(((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
        if not imgs:
            raise InputError(f"--data {folder}: none of the {len(files)} images could be read")
        self.folder, self.resolution, self.xflip = folder, resolution, xflip
        self.device = torch.device(device)
        self.images = torch.cat(imgs)  # (N, 3, res, res) uint8
        self.name = str(folder)

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, batch: int, generator: torch.Generator, *, rank: int = 0, world: int = 1) -> torch.Tensor:
        idx = torch.randint(len(self), (batch,), generator=generator)
        flip = torch.rand(batch, generator=generator) < 0.5
        idx, flip = slice_for_rank(idx, rank, world), slice_for_rank(flip, rank, world)
        x = self.images[idx].float() / 127.5 - 1.0
        if self.xflip:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.to(self.device)

    def describe(self) -> dict:
        return {"data": self.name, "images": len(self), "xflip": self.xflip}


def open_source(spec: str, resolution: int, device: str | torch.device = "cpu", *, xflip: bool = False):
    """``synthetic-faces`` or a folder of images."""
    if spec == SYNTHETIC_FACES:
        return SyntheticFaces(resolution, device)
    return ImageFolder(spec, resolution, device, xflip=xflip)
