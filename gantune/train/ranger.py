"""Ranger = RAdam + Lookahead (+ gradient centralization), the optimizer HyperStyle trains with.

The official HyperStyle training (coach_hyperstyle.py) uses Ranger with alpha 0.5, k 6, betas (0.95, 0.999), eps 1e-5, no weight
decay and gradient centralization. RAdam comes from ``torch.optim.RAdam`` (its variance rectification switches the
adaptive step on once the SMA length exceeds 5, the same threshold as the reference); Lookahead is the small wrapper
below (Zhang et al. 2019):

    every k inner steps:   slow ← slow + α · (fast − slow);   fast ← slow

Gradient centralization (Yong et al. 2020) subtracts from each gradient of a parameter with ≥ 2 dimensions its mean
over all dimensions but the first, before the inner step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Lookahead:
    """Wraps any optimizer; keeps a slow copy of every parameter and pulls the fast weights back every ``k`` steps."""

    def __init__(
        self,
        inner: torch.optim.Optimizer,  # the fast optimizer (RAdam for Ranger)
        *,
        k: int = 6,  # inner steps between synchronisations
        alpha: float = 0.5,  # slow-weight step: slow += alpha * (fast - slow)
        centralize_gradients: bool = False,  # gradient centralization before each inner step (Ranger: True)
    ) -> None:
        if k < 1 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 <= alpha <= 1 (got k={k}, alpha={alpha})")
        self.inner, self.k, self.alpha, self.centralize = inner, int(k), float(alpha), centralize_gradients
        self.param_groups = inner.param_groups  # shared with the inner optimizer (change lr there or here)
        self.steps = 0  # inner steps taken
        self.slow = [p.detach().clone() for g in self.param_groups for p in g["params"]]

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        if self.centralize:
            for p in self._params():
                if p.grad is not None and p.grad.ndim > 1:
                    p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.ndim)), keepdim=True))
        loss = self.inner.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            for p, s in zip(self._params(), self.slow):
                s.add_(p.detach() - s, alpha=self.alpha)
                p.copy_(s)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "steps": self.steps, "slow": [s.clone() for s in self.slow],
                "k": self.k, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        if len(state["slow"]) != len(self.slow):
            raise ValueError(f"optimizer state has {len(state['slow'])} slow tensors, the model {len(self.slow)}")
        self.inner.load_state_dict(state["inner"])
        self.steps = int(state["steps"])
        for s, v in zip(self.slow, state["slow"]):
            s.copy_(v)

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, centralize={self.centralize}, inner={self.inner!r})"


def ranger(
    params: Iterable[torch.Tensor],
    *,
    lr: float = 1e-4,  # HyperStyle's default learning rate
    betas: tuple[float, float] = (0.95, 0.999),  # reference Ranger betas
    eps: float = 1e-5,  # reference Ranger eps
    weight_decay: float = 0.0,
    k: int = 6,  # Lookahead period
    alpha: float = 0.5,  # Lookahead slow step
    centralize_gradients: bool = True,  # reference: use_gc=True
) -> Lookahead:
    """RAdam (torch.optim) wrapped in :class:`Lookahead` with the reference settings."""
    inner = torch.optim.RAdam(list(params), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return Lookahead(inner, k=k, alpha=alpha, centralize_gradients=centralize_gradients)
