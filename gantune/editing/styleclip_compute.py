"""Computing StyleCLIP statistics for any generator (StyleCLIP's ``SingleChannel.py``): every channel of every covered
conv layer is set to its mean ± 5 σ on the same base images, both renders are embedded with CLIP, and R's row is the
normalised mean of the normalised embedding differences. The computation is batched, runs on any device and writes
its progress to a partial file after each chunk, from which a later run continues."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InputError
from ..io.atomic import atomic_write
from ..sampling import random_c
from .clip import CLIP_MODEL, clip_image_input, clip_image_size
from .styleclip_stats import StyleStats

PERTURB_SIGMAS = 5.0  # StyleCLIP perturbs each channel to mean ± 5 σ


def _latents(G, z: torch.Tensor, truncation: float, cutoff: int | None, c: torch.Tensor | None = None):
    if G.cfg.overparam:
        return {"wmat": G.map(z, truncation=truncation)}
    cut = None if cutoff is None or cutoff >= G.num_ws else cutoff
    c = None if c is None else c.to(z.device)
    return {"ws": G.map(z, c=c, truncation=truncation, truncation_cutoff=cut if truncation != 1.0 else None)}


def _sample_z(G, n: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` latents and, for a class-conditional generator, uniformly drawn class labels (else None)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = G.sample_z(n, generator=g, device="cpu").to(device)
    return z, random_c(G, n, g)


@torch.no_grad()
def style_mean_std(G, *, samples: int, seed: int, truncation: float, cutoff: int | None, batch_size: int,
                   device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-channel mean and std of every layer's styles over ``samples`` mapped random latents (float64 sums); for a
    latent matrix over its rows too."""
    acc = {s.name: [torch.zeros(s.in_ch, dtype=torch.float64), torch.zeros(s.in_ch, dtype=torch.float64), 0]
           for s in G.specs}
    g = torch.Generator(device="cpu").manual_seed(seed)
    done = 0
    while done < samples:
        b = min(batch_size, samples - done)
        z = G.sample_z(b, generator=g, device="cpu").to(device)
        S = G.synthesis.styles(**_latents(G, z, truncation, cutoff, random_c(G, b, g)))
        for name, s in S.items():
            s = s.double().reshape(-1, s.shape[-1]).cpu()
            a = acc[name]
            a[0] += s.sum(0)
            a[1] += s.square().sum(0)
            a[2] += s.shape[0]
        done += b
    mean, std = {}, {}
    for name, (s1, s2, n) in acc.items():
        m = s1 / n
        var = (s2 / n - m.square()).clamp_min(0) * (n / max(n - 1, 1))
        mean[name], std[name] = m.float(), var.sqrt().float()
    return mean, std


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _load_partial(path: Path, key: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable partial file is recomputed
        return None
    if not isinstance(obj, dict) or obj.get("key") != json.dumps(key, sort_keys=True):
        return None
    return obj


def _save_partial(path: Path, state: dict) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def _covered_layers(G, max_res: int | None) -> list:
    """The conv layers whose channels get relevance rows: all, or those up to ``max_res``."""
    layers = [s for s in G.specs if s.kind == "conv" and (max_res is None or s.res <= max_res)]
    if not layers:
        raise InputError(f"no conv layer at or below --max-res {max_res}", "raise --max-res")
    return layers


def _start_partial(G, path: Path, key: dict, batch_size: int, device) -> dict:
    """A new partial file for the run ``key``: the style statistics, no relevance rows yet."""
    mean, std = style_mean_std(G, samples=key["stat_samples"], seed=key["seed"], truncation=key["truncation"],
                               cutoff=key["cutoff"], batch_size=max(batch_size, 256), device=device)
    part = {"key": json.dumps(key, sort_keys=True), "layer": 0, "chunk": 0,
            "rows": torch.zeros(0), "acc": torch.zeros(0),
            **{f"s_mean.{n}": t for n, t in mean.items()}, **{f"s_std.{n}": t for n, t in std.items()}}
    _save_partial(path, part)
    return part


class _RelevanceRun:
    """The relevance rows of the covered layers, computed chunk of base images by chunk and written to the partial
    file after each chunk; a run continues where the partial file ``part`` stopped."""

    def __init__(self, G, clip_model, layers: list, lat_all: dict, part: dict, part_path: Path, *, images: int,
                 per_chunk: int, size: int, device, progress: Callable[[int, int, str], None] | None) -> None:
        self.G, self.clip_model, self.layers, self.size, self.device = G, clip_model, layers, size, device
        self.part, self.part_path, self.progress = part, part_path, progress
        self.lkey = next(iter(lat_all))
        self.lat = lat_all[self.lkey]
        self.chunks = [(i, min(i + per_chunk, images)) for i in range(0, images, per_chunk)]
        self.total = sum(s.in_ch for s in layers)
        self.mean = {s.name: part[f"s_mean.{s.name}"] for s in G.specs}
        self.std = {s.name: part[f"s_std.{s.name}"] for s in G.specs}

    def rows(self) -> torch.Tensor:
        """(Σ in_ch, clip_dim): the unit relevance rows of every covered layer, in layer order."""
        part = self.part
        rows = [part["rows"]] if part["rows"].numel() else []
        done = sum(s.in_ch for s in self.layers[: part["layer"]])
        for li in range(part["layer"], len(self.layers)):
            spec = self.layers[li]
            rows.append(self._layer_rows(li, spec, done))
            done += spec.in_ch
            part.update(layer=li + 1, chunk=0, acc=torch.zeros(0), rows=torch.cat(rows))
            _save_partial(self.part_path, part)
            if self.progress is not None:
                self.progress(done, self.total, spec.name)
        return torch.cat(rows)

    def _layer_rows(self, li: int, spec, done: int) -> torch.Tensor:
        """Layer ``spec``'s unit rows: the chunks' sums, from the partial file's chunk when it stopped in this layer."""
        part = self.part
        start_chunk = part["chunk"] if li == part["layer"] else 0
        acc = part["acc"] if li == part["layer"] and start_chunk > 0 else None
        for ci in range(start_chunk, len(self.chunks)):
            a, b = self.chunks[ci]
            chunk_acc = self._chunk_sums(spec, a, b, done)
            acc = chunk_acc if acc is None else acc + chunk_acc
            if ci + 1 < len(self.chunks):
                part.update(layer=li, chunk=ci + 1, acc=acc)
                _save_partial(self.part_path, part)
        return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def _chunk_sums(self, spec, a: int, b: int, done: int) -> torch.Tensor:
        """(in_ch, clip_dim): for each channel of ``spec``, the sum over base images a…b−1 of the unit differences
        of the unit CLIP image embeddings at mean + 5 σ and at mean − 5 σ."""
        G, device, lkey = self.G, self.device, self.lkey
        lat = self.lat[a:b]
        n = b - a
        lat2 = torch.cat([lat, lat])  # first half at mean - 5σ, second half at mean + 5σ
        s_base = G.synthesis.styles(**{lkey: lat2})[spec.name]
        if s_base.ndim == 3:  # latent matrix: one offset for all rows, relative to the row mean
            s_base = s_base.mean(1)
        pre = G.synthesis.prefix(**{lkey: lat2}, until=spec.name) if spec.name != G.specs[0].name else None
        m, sd = self.mean[spec.name].to(device), self.std[spec.name].to(device)
        sign = torch.cat([torch.full((n,), -PERTURB_SIGMAS), torch.full((n,), PERTURB_SIGMAS)]).to(device)
        emb_rows = []
        for c in range(spec.in_ch):
            off = torch.zeros(2 * n, spec.in_ch, device=device)
            off[:, c] = m[c] + sign * sd[c] - s_base[:, c]
            img = G.synthesis(**{lkey: lat2}, style_offsets={spec.name: off}, prefix=pre)
            f = self.clip_model.encode_image(clip_image_input(img, self.size)).float()
            f = f / f.norm(dim=-1, keepdim=True)
            d = f[n:] - f[:n]
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            emb_rows.append(d.sum(0))
            if self.progress is not None:
                self.progress(done + c, self.total, f"{spec.name} images {a}-{b}")
        return torch.stack(emb_rows).cpu()


@torch.no_grad()
def compute_style_stats(
    G,
    clip_model,
    *,
    out: str | os.PathLike,  # the final file; progress goes to OUT.partial and is continued from there
    images: int = 100,  # base images each channel is perturbed on (StyleCLIP: 100)
    stat_samples: int = 100_000,  # latents for the style mean / std (StyleCLIP: 100 000)
    seed: int = 5,  # StyleCLIP's seed for its style codes
    truncation: float = 0.7,  # StyleCLIP's Manipulator: ψ 0.7 on the first 8 W+ rows
    truncation_cutoff: int | None = 8,
    max_res: int | None = None,  # cover conv layers up to this resolution (default all; StyleCLIP's port: 128)
    batch_size: int = 32,  # renders per forward pass
    device=None,
    progress: Callable[[int, int, str], None] | None = None,  # (channels done, total channels, layer)
    meta: dict | None = None,
) -> StyleStats:
    """The channel relevance matrix and style statistics of ``G`` (see the module doc)."""
    device = device or G.w_avg.device
    clip_model = clip_model.to(device).eval()
    size = clip_image_size(clip_model)
    layers = _covered_layers(G, max_res)
    key = {"images": images, "stat_samples": stat_samples, "seed": seed, "truncation": truncation,
           "cutoff": truncation_cutoff, "layers": [s.name for s in layers],
           "clip_dim": int(clip_model.text_projection.shape[-1]) if hasattr(clip_model, "text_projection") else None}
    out = Path(out)
    part_path = _partial_path(out)
    part = _load_partial(part_path, key)
    if part is None:
        part = _start_partial(G, part_path, key, batch_size, device)

    z, c = _sample_z(G, images, seed + 1, device)
    lat_all = _latents(G, z, truncation, truncation_cutoff, c)
    per_chunk = max(1, batch_size // 2)  # base images per pass: each is rendered at -5 σ and +5 σ
    run = _RelevanceRun(G, clip_model, layers, lat_all, part, part_path, images=images, per_chunk=per_chunk, size=size,
                        device=device, progress=progress)
    rows = run.rows()
    info = dict(meta or {}, clip=CLIP_MODEL, **{k: v for k, v in key.items() if k != "layers"}, source="gantune",
                max_res=max_res, perturbation_sigmas=PERTURB_SIGMAS)
    stats = StyleStats([s.name for s in layers], rows, run.mean, run.std, info)
    stats.save(out)
    part_path.unlink(missing_ok=True)
    return stats
