"""GANSpace directions (Härkönen et al. 2020) for any generator: PCA of sampled w, and edits along the components.

PCA: w = mapping(z) for ``samples`` random z (no truncation); mean μ, then the eigen-decomposition of the covariance
(exact, ``torch.linalg.eigh`` of the w_dim × w_dim matrix, accumulated in float64 over batches). Components are
orthonormal rows, sorted by decreasing variance; ``std[k]`` is the standard deviation of the samples' coordinate
along component k. Each component's sign is fixed so that its largest-magnitude entry is positive (reproducible).

File format (``.pt``, read by ``gantune edit`` and by the e4e / PTI / HyperStyle editors): the published GANSpace
layout ``{'mean': (1, w), 'std': (K,), 'comp': (K, 1, w)}``; gantune adds ``'gantune'``: a dict of plain values
(samples, seed, generator, num_ws, ``layer_ranges`` = W+ rows per level as [start, end) pairs). Published files
(``ffhq_pca.pt``, ``cars_pca.pt``) load too (no layer ranges: the whole W+ code).

Two application conventions (METHODS_AND_USERS.md §C.2), on W+ rows ``start:end`` (end exclusive):

* ``absolute`` (e4e / HyperStyle ``get_delta``): the coordinate c = ⟨w − μ, comp_k⟩ / std_k is **set** to ``strength``:
  w ← w + (strength − c) · std_k · comp_k;
* ``additive`` (GANSpace notebooks): w ← w + strength · std_k · comp_k (strength in standard deviations).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..sampling import random_c
from ..io.atomic import atomic_path
from ..weights import safe_torch_load

CONVENTIONS = ("absolute", "additive")


@dataclass
class GANSpace:
    """PCA of a generator's W space."""

    mean: torch.Tensor  # (w_dim,)
    comp: torch.Tensor  # (K, w_dim) orthonormal rows, decreasing variance
    std: torch.Tensor  # (K,) standard deviation of the coordinate along each component
    layer_ranges: dict[str, list[int]] = field(default_factory=dict)  # level -> [start, end) W+ rows ({} if unknown)
    meta: dict = field(default_factory=dict)  # provenance (samples, seed, generator)

    @property
    def num_components(self) -> int:
        return self.comp.shape[0]

    def coordinates(self, w: torch.Tensor) -> torch.Tensor:
        """(..., w_dim) -> (..., K) coordinates in standard deviations: ⟨w − μ, comp⟩ / std."""
        w = w.float()
        return ((w - self.mean.to(w.device)) @ self.comp.to(w.device).T) / self.std.to(w.device)

    def direction(self, index: int) -> torch.Tensor:
        """Component ``index`` scaled by its standard deviation, (w_dim,): one σ along it."""
        self._check(index)
        return self.comp[index] * self.std[index]

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_components:
            raise InputError(f"GANSpace component {index} does not exist (the file has {self.num_components})")

    def apply(
        self,
        latent: torch.Tensor,  # (num_ws, w) or (B, num_ws, w) W+ code
        index: int,  # component
        strength: float,  # target coordinate (absolute) or offset (additive), in standard deviations
        *,
        start: int = 0,  # first W+ row to edit
        end: int | None = None,  # one past the last row (None = all)
        convention: str = "absolute",  # absolute (e4e form) or additive (GANSpace notebooks)
    ) -> torch.Tensor:
        self._check(index)
        if convention not in CONVENTIONS:
            raise InputError(f"GANSpace convention {convention!r}: expected one of {', '.join(CONVENTIONS)}")
        num_ws = latent.shape[-2]
        end = num_ws if end is None else end
        if not 0 <= start < end <= num_ws:
            raise InputError(f"GANSpace layers {start}:{end} are outside the latent's {num_ws} rows")
        out = latent.clone()
        d = self.direction(index).to(latent.device, latent.dtype)
        rows = out[..., start:end, :]
        if convention == "additive":
            rows += strength * d
        else:
            c = self.coordinates(rows)[..., index : index + 1].to(latent.dtype)  # (..., rows, 1) per-row coordinate
            rows += (strength - c) * d
        return out

    # --- files -------------------------------------------------------------------------------------------------------
    def to_file_dict(self) -> dict:
        return {"mean": self.mean.float().cpu()[None].clone(), "std": self.std.float().cpu().clone(),
                "comp": self.comp.float().cpu()[:, None, :].clone(),
                "gantune": {"layer_ranges": {k: list(v) for k, v in self.layer_ranges.items()}, **self.meta}}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(self.to_file_dict(), tmp)
        return path


def is_ganspace_dict(obj) -> bool:
    return isinstance(obj, dict) and {"mean", "std", "comp"} <= set(obj)


def ganspace_from_dict(obj: dict, source: str = "GANSpace file") -> GANSpace:
    """Published ``{'mean' (1, w), 'std' (K,), 'comp' (K, 1, w)}`` (or gantune's, with its ``gantune`` entry)."""
    if not is_ganspace_dict(obj):
        raise InputError(f"{source}: not a GANSpace file (needs mean, std and comp)")
    try:
        mean = torch.as_tensor(obj["mean"]).float().reshape(-1)
        std = torch.as_tensor(obj["std"]).float().reshape(-1)
        comp = torch.as_tensor(obj["comp"]).float()
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{source}: unreadable GANSpace tensors ({e})") from None
    w = mean.shape[0]
    if comp.ndim == 3 and comp.shape[1] == 1:
        comp = comp[:, 0]
    if comp.ndim != 2 or comp.shape[1] != w or comp.shape[0] != std.shape[0]:
        raise InputError(f"{source}: comp {tuple(obj['comp'].shape)}, std {tuple(std.shape)} and mean ({w},) do not fit "
                         "the GANSpace layout (K, 1, w), (K,), (1, w)")
    if not (torch.isfinite(comp).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise InputError(f"{source}: GANSpace std must be positive and all values finite")
    extra = obj.get("gantune") if isinstance(obj.get("gantune"), dict) else {}
    ranges = {str(k): [int(v[0]), int(v[1])] for k, v in (extra.get("layer_ranges") or {}).items()}
    meta = {k: v for k, v in extra.items() if k != "layer_ranges"}
    return GANSpace(mean=mean, comp=comp, std=std, layer_ranges=ranges, meta=meta)


def load_ganspace(path: str | os.PathLike) -> GANSpace:
    """A GANSpace ``.pt`` file, read without executing code."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such GANSpace file")
    return ganspace_from_dict(safe_torch_load(p), str(p))


def level_ranges(G) -> dict[str, list[int]]:
    """W+ rows per level, [start, end): from the generator's layer specs (coarse / medium / fine)."""
    out: dict[str, list[int]] = {}
    for s in G.specs:
        lo, hi = out.get(s.level, [s.ws_index, s.ws_index + 1])
        out[s.level] = [min(lo, s.ws_index), max(hi, s.ws_index + 1)]
    out["all"] = [0, G.num_ws]
    return out


@torch.no_grad()
def compute_ganspace(
    G,  # core.Generator (any: standard or overparameterized; PCA is taken of mapping(z) rows)
    *,
    samples: int = 100_000,  # number of z samples (GANSpace default 300k; 1e5 gives stable leading components)
    components: int = 80,  # K (the published files have 80)
    seed: int = 0,  # z seed
    batch: int = 4096,  # z per mapping call
    device="cpu",
    progress=None,  # called with (done, total) after every batch
) -> GANSpace:
    w_dim = G.cfg.w_dim
    if not 1 <= components <= w_dim:
        raise InputError(f"--components {components}: between 1 and w_dim = {w_dim}")
    if samples < components + 1:
        raise InputError(f"--samples {samples}: need more samples than components ({components})")
    gen = torch.Generator().manual_seed(seed)
    s1 = torch.zeros(w_dim, dtype=torch.float64)
    s2 = torch.zeros(w_dim, w_dim, dtype=torch.float64)
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        z = torch.randn(n, G.cfg.z_dim, generator=gen).to(device)
        c = random_c(G, n, gen)  # classes drawn uniformly for a class-conditional generator
        w = G.map(z, c=None if c is None else c.to(device))[:, 0]  # (n, w_dim), no truncation
        w = w.double().cpu()
        s1 += w.sum(0)
        s2 += w.T @ w
        done += n
        if progress:
            progress(done, samples)
    mean = s1 / samples
    cov = (s2 - samples * torch.outer(mean, mean)) / (samples - 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(evals, descending=True)[:components]
    comp = evecs[:, order].T.contiguous()  # (K, w_dim)
    idx = comp.abs().argmax(dim=1)
    sign = torch.sign(comp[torch.arange(components), idx])
    comp = comp * sign[:, None]
    std = evals[order].clamp_min(0).sqrt()
    meta = {"samples": int(samples), "seed": int(seed), "num_ws": int(G.num_ws), "w_dim": int(w_dim),
            "explained_variance": [float(v) for v in (evals[order] / evals.clamp_min(0).sum())]}
    return GANSpace(mean=mean.float(), comp=comp.float(), std=std.float(), layer_ranges=level_ranges(G), meta=meta)
