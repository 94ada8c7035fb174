"""Overparameterized-latent inversion (Poirier-Ginter et al. 2022, §3.2 and §4.2).

Optimise the latent matrix W (rows × w_dim, one row per output row of every conv; rows beyond a layer's outputs are
dropped) — or, with ``per_layer``, one matrix per layer (the paper's W+). Paper settings: every row starts at the
mean µ_W, Adam lr 0.05 (β 0.9, 0.999), 1000 steps, LPIPS loss as in the StyleGAN2 projector, and a 0.9 truncation
toward µ_W "before each optimization step, disabled halfway". We apply that truncation to the optimised matrix itself
(W ← µ + 0.9 (W − µ) before each of the first half of the steps): a pull toward the mean that regularises the start,
as the paper's footnote 7 describes ("regularized initialization").

Works on a generator trained with the overparameterized latent and on any standard StyleGAN2 checkpoint: the matrix
then has as many rows as the widest layer, and with all rows equal it renders exactly the standard image of that w.
The record stores W in fp16 (latent kind ``W`` or ``W+``); the reconstruction is rendered from the rounded matrix.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..io.record import InversionRecord
from .optim import (OptimOutput, ProgressFn, StepInfo, adam_step, batch_loss, batch_results, latent_stats, prepare_run,
                    report_step, synthesize)


@dataclass(frozen=True)
class OverparamSettings:
    """Defaults follow the paper's §4.2."""

    per_layer: bool = False  # one matrix per layer (W+, num_ws × rows × w_dim) instead of one shared matrix (W)
    num_steps: int = 1000  # optimisation steps
    learning_rate: float = 0.05  # Adam, constant (β 0.9, 0.999)
    truncation: float = 0.9  # W ← µ + ψ (W − µ) before each step while the truncation is on; 1 = off
    truncation_until: float = 0.5  # fraction of the steps during which it is applied
    w_avg_samples: int = 10_000  # z samples for µ_W
    w_avg_seed: int = 123  # seed of those samples
    mse_weight: float = 0.0  # weight of an extra pixel MSE term
    loss_resolution: int = 256  # images are area-downsampled to this side for LPIPS
    loss: str = "lpips"  # lpips (the paper's loss) or l2 (pixel MSE only: no ImageNet network)
    rows: int | None = None  # latent rows; default: the generator's latent_rows, else its widest layer
    noise_mode: str = "const"  # noise inputs of a standard checkpoint: const (stored buffers) or none

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError("num_steps must be >= 1")
        if not 0 < self.truncation <= 1:
            raise ValueError("truncation must be in (0, 1]")
        if self.loss not in ("lpips", "l2"):
            raise ValueError(f"loss must be lpips or l2, got {self.loss!r}")
        if self.noise_mode not in ("const", "none"):
            raise ValueError("noise_mode must be const or none (random noise cannot be re-rendered)")


def latent_rows(G, rows: int | None = None) -> int:
    """Rows of the latent matrix for ``G``: its own (overparameterized training) or the widest layer's outputs."""
    need = max(s.out_ch for s in G.specs)
    n = rows or G.cfg.latent_rows or need
    if n < need:
        raise ValueError(f"rows={n} is fewer than the widest layer's {need} output channels")
    return n


def invert_overparam(
    G,
    targets: torch.Tensor,  # (B, 3, H, W) in [-1, 1] at the generator's resolution
    settings: OverparamSettings | None = None,
    *,
    names: list[str] | None = None,
    distance=None,  # LPIPSDistance for loss and metric (default LPIPS-VGG from the registry)
    device=None,
    seed: int | list[int] = 0,  # recorded only: the method itself is deterministic
    callback: ProgressFn | None = None,
    **overrides,  # any OverparamSettings field
) -> OptimOutput:
    s = dataclasses.replace(settings or OverparamSettings(), **overrides)
    if G.cfg.conditional:
        raise InputError(f"overparameterized inversion of a class-conditional generator ({G.cfg.c_dim} classes) is "
                         "not supported", "use --method optim with --class K")
    device, targets, names, distance, G = prepare_run(G, targets, names, distance, device, s)
    B = targets.shape[0]
    t_start = time.perf_counter()

    rows = latent_rows(G, s.rows)
    mu, _ = latent_stats(G, s.w_avg_samples, seed=s.w_avg_seed)
    shape = (B, G.num_ws, rows, G.cfg.w_dim) if s.per_layer else (B, rows, G.cfg.w_dim)
    W = mu.expand(shape).clone().requires_grad_(True)
    opt = torch.optim.Adam([W], lr=s.learning_rate, betas=(0.9, 0.999))
    trunc_steps = int(round(s.truncation_until * s.num_steps)) if s.truncation < 1 else 0

    history = []
    for step in range(s.num_steps):
        if step < trunc_steps:
            with torch.no_grad():
                W.sub_(mu).mul_(s.truncation).add_(mu)
        synth = synthesize(G, wmat=W, noise_mode=s.noise_mode)
        loss = batch_loss(synth, targets, distance, s.mse_weight)
        adam_step(opt, loss)
        history.append(loss.detach().cpu())
        report_step(step + 1, s.num_steps, "step", callback,
                    lambda: StepInfo("overparam", step + 1, s.num_steps, loss.detach(), synth.detach(), tuple(range(B))))

    kind = "W+" if s.per_layer else "W"
    # stored in fp16 (the issue: "the record stores W in fp16"); rendering reads the same rounded values
    records = [
        InversionRecord(latent=W[i].detach().half().cpu(), latent_kind=kind, method="overparam", meta={})
        for i in range(B)
    ]
    params = {**dataclasses.asdict(s), "rows": rows, "seed": seed}
    results = batch_results(G, records, targets, names, distance, t_start, steps=s.num_steps, method="overparam",
                            params={"overparam": params}, noise_mode=s.noise_mode)
    return OptimOutput(results=results, history=torch.stack(history))
