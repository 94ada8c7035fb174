"""Sampling images from a generator by seed (``gantune generate``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .core import Generator
from .errors import InputError


def parse_seeds(text: str) -> list[int]:
    """``0-7``, ``1,5,9`` or ``0-3,10`` -> list of ints (ranges inclusive)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise InputError(f"--seeds {text!r} is not a list of seeds", "e.g. 0-7, 1,5,9 or 0-3,10") from None
    if not seeds or min(seeds) < 0:
        raise InputError(f"--seeds {text!r}: need at least one seed, all >= 0")
    return seeds


@dataclass
class Sample:
    seed: int  # the seed this sample was drawn with
    image: torch.Tensor  # (3, H, W) in [-1, 1]
    latent: torch.Tensor  # W+ (num_ws, w_dim), or the matrix W (rows, w_dim) for an overparameterized generator
    latent_kind: str  # "w+" or "W"
    c: torch.Tensor | None = None  # (1, c_dim) class label of a class-conditional generator


def seed_z(G: Generator, seed: int) -> torch.Tensor:
    """The z of one seed, independent of batching and device (drawn on the CPU)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return G.sample_z(1, generator=g, device="cpu")


@torch.no_grad()
def generate(
    G: Generator,
    seeds: list[int],
    *,
    truncation: float = 1.0,  # psi, toward w_avg
    noise_mode: str = "const",  # const / random / none
    batch_size: int = 4,  # images per forward pass
    device: torch.device | str = "cpu",
    c: torch.Tensor | None = None,  # (1, c_dim) class label for a class-conditional generator
) -> Iterator[Sample]:
    for i in range(0, len(seeds), batch_size):
        chunk = seeds[i : i + batch_size]
        z = torch.cat([seed_z(G, s) for s in chunk]).to(device)
        lat = G.map(z, c=None if c is None else c.to(device), truncation=truncation)
        if G.cfg.overparam:
            imgs, kind = G.synthesis(wmat=lat, noise_mode=noise_mode), "W"
        else:
            imgs, kind = G.synthesis(lat, noise_mode=noise_mode), "w+"
        for s, img, l in zip(chunk, imgs, lat):
            yield Sample(seed=s, image=img.cpu(), latent=l.cpu(), latent_kind=kind, c=c)
