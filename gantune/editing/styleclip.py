"""StyleCLIP global directions (Patashnik et al. 2021, §6) in the style space S of any gantune generator.

A text pair (neutral, target) becomes a direction in CLIP's joint space, Δt: the normalised difference of the two
prompt-ensembled text embeddings. The generator's **channel relevance** matrix R (one row per style channel of the
conv layers, in layer order; StyleCLIP's ``fs3.npy``) says how the CLIP *image* embedding moves when that channel is
perturbed. The edit is

    r = R · Δt;  r_c = 0 where |r_c| < β;  r /= max |r|;  Δs = r ⊙ σ_S;  s' = s + α · Δs

with σ_S the per-channel standard deviation of the styles (StyleCLIP's ``S_mean_std``); toRGB styles and channels
the relevance matrix does not cover are left alone.

:class:`~gantune.editing.styleclip_stats.StyleStats` holds R, the style means and standard deviations per layer name,
and where they came from. It is either imported from the published FFHQ files
(:func:`~gantune.editing.styleclip_stats.import_styleclip_stats`) or computed for any generator
(:func:`~gantune.editing.styleclip_compute.compute_style_stats`): every channel of every covered conv layer is set to
its mean ± 5 σ on the same base images, both renders are embedded with CLIP (:mod:`gantune.editing.clip`), and R's
row is the normalised mean of the normalised embedding differences (StyleCLIP's ``SingleChannel.py``).

This module makes the edit: Δt from a text pair (:func:`text_direction`) and Δs from Δt (:func:`global_direction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from .styleclip_stats import StyleStats


# --- the text direction -----------------------------------------------------------------------------------------------
def imagenet_templates() -> list[str]:
    """The prompt templates of StyleCLIP's text ensembling: OpenAI's ImageNet templates ("a bad photo of a {}." …),
    without "a photo of many {}.", which StyleCLIP leaves out (79 templates)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    out = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [t for t in out if t != "a photo of many {}."]


@torch.no_grad()
def text_embedding(model, tokenizer, text: str, templates: list[str] | None = None) -> torch.Tensor:
    """The unit CLIP embedding of ``text``: each template filled in, embedded, normalised, averaged, normalised."""
    templates = imagenet_templates() if templates is None else templates
    device = next(model.parameters()).device
    tokens = tokenizer([t.format(text) for t in templates]).to(device)
    e = model.encode_text(tokens).float()
    e = e / e.norm(dim=-1, keepdim=True)
    m = e.mean(0)
    return m / m.norm()


def text_direction(model, tokenizer, target: str, neutral: str, templates: list[str] | None = None) -> torch.Tensor:
    """Δt: the unit difference of the target and neutral text embeddings."""
    d = text_embedding(model, tokenizer, target, templates) - text_embedding(model, tokenizer, neutral, templates)
    n = d.norm()
    if not torch.isfinite(n) or n < 1e-8:
        raise InputError(f"--text {target!r} and --neutral {neutral!r} have the same CLIP embedding",
                         "give a target text that differs from the neutral one")
    return d / n


# --- the edit -------------------------------------------------------------------------------------------------------
@dataclass
class GlobalDirection:
    """Δs per layer (only the covered conv layers) and how many channels it moves."""

    offsets: dict[str, torch.Tensor]  # layer name -> (in,) Δs (to be scaled by α)
    channels: int  # channels with |r| ≥ β
    top: list[tuple[str, int, float]]  # the most relevant channels (layer, channel, r/max|r|)


def global_direction(stats: StyleStats, delta_t: torch.Tensor, beta: float) -> GlobalDirection:
    """StyleCLIP's Δs for text direction Δt and disentanglement threshold β."""
    rel = stats.relevance.to(delta_t.device, torch.float32)
    if rel.shape[1] != delta_t.shape[0]:
        raise InputError(f"the relevance matrix has CLIP size {rel.shape[1]}, the CLIP model gives {delta_t.shape[0]}",
                         "use the CLIP model the statistics were computed with (ViT-B/32)")
    r = rel @ delta_t.float()
    r = torch.where(r.abs() < beta, torch.zeros_like(r), r)
    kept = int((r != 0).sum())
    if kept == 0:
        top = float(rel.matmul(delta_t.float()).abs().max())
        raise InputError(f"no style channel reaches --beta {beta:g} for this text (the largest relevance is {top:.3f})",
                         f"lower --beta below {top:.3f}")
    r = r / r.abs().max()
    offsets, top, start = {}, [], 0
    for name in stats.layers:
        std = stats.s_std[name].to(r.device)
        n = std.shape[0]
        rl = r[start:start + n]
        offsets[name] = (rl * std).cpu()
        top += [(name, int(c), float(rl[c])) for c in torch.nonzero(rl).flatten().tolist()]
        start += n
    top.sort(key=lambda t: -abs(t[2]))
    return GlobalDirection(offsets, kept, top[:10])

