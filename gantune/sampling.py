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


def seed_c(G: Generator, seed: int) -> torch.Tensor | None:
    """The class label (1, c_dim) a statistic over seeds uses for a class-conditional generator: class
    ``seed mod c_dim``, so consecutive seeds cover the classes evenly; None for an unconditional generator."""
    return G.class_label(seed % G.cfg.c_dim, device="cpu") if G.cfg.conditional else None


def random_c(G: Generator, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """``n`` class labels (n, c_dim) drawn uniformly for a class-conditional generator (statistics over random
    samples: GANSpace, StyleCLIP's style statistics), from ``generator`` after the z it drew; None otherwise."""
    if not G.cfg.conditional:
        return None
    return torch.nn.functional.one_hot(torch.randint(G.cfg.c_dim, (n,), generator=generator), G.cfg.c_dim).float()


def seeds_c(G: Generator, seeds: list[int]) -> torch.Tensor | None:
    """:func:`seed_c` of every seed, stacked (B, c_dim), or None."""
    return torch.cat([seed_c(G, s) for s in seeds]) if G.cfg.conditional else None


@torch.no_grad()
def generate(
    G: Generator,
    seeds: list[int],
    *,
    truncation: float = 1.0,  # psi, toward w_avg
    noise_mode: str = "const",  # const / random / none
    batch_size: int = 4,  # images per forward pass
    device: torch.device | str = "cpu",
    c: torch.Tensor | None = None,  # (1, c_dim) class label; None on a conditional generator: seed_c of each seed
) -> Iterator[Sample]:
    for i in range(0, len(seeds), batch_size):
        chunk = seeds[i : i + batch_size]
        z = torch.cat([seed_z(G, s) for s in chunk]).to(device)
        cc = seeds_c(G, chunk) if c is None else c
        lat = G.map(z, c=None if cc is None else cc.to(device), truncation=truncation)
        if G.cfg.overparam:
            imgs, kind = G.synthesis(wmat=lat, noise_mode=noise_mode), "W"
        else:
            imgs, kind = G.synthesis(lat, noise_mode=noise_mode), "w+"
        for k, (s, img, l) in enumerate(zip(chunk, imgs, lat)):
            label = None if cc is None else cc[min(k, cc.shape[0] - 1)][None].cpu()
            yield Sample(seed=s, image=img.cpu(), latent=l.cpu(), latent_kind=kind, c=label)
