"""StyleGAN2 losses: non-saturating logistic loss, R1 gradient penalty, path-length regularization.

Every function returns a per-process mean; under data parallelism the gradients are averaged across processes,
which turns those means into means over the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))) = softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """E ||∇_x D(x)||² over real images (x must require grad); differentiable w.r.t. D's parameters."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_lengths(img: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample ||J_wᵀ y||, y ~ N(0, I)/sqrt(H·W): squared gradient summed over w_dim, averaged over the other latent
    axes (layers and/or rows). ``latent`` is what the synthesis consumed and must require grad."""
    h, w = img.shape[-2:]
    (grad,) = torch.autograd.grad((img * noise / math.sqrt(h * w)).sum(), latent, create_graph=True)
    return grad.square().sum(-1).flatten(1).mean(1).sqrt()


def path_length_penalty(lengths: torch.Tensor, pl_mean: torch.Tensor) -> torch.Tensor:
    """mean (||J_wᵀ y|| - a)², a = running mean of the lengths (updated by the caller)."""
    return (lengths - pl_mean).square().mean()
