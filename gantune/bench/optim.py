"""``make bench`` section for the optimisation methods: :func:`bench_optim` returns printable lines.

1. Milliseconds per optimisation step on CPU at 256 and 1024 px for the W projector, the W+ projector, PTI and the
   overparameterized W, with random generators of the official architectures (ADA 256 px layout; FFHQ config-f at
   1024 px) and LPIPS-VGG with a random trunk (same cost as the real one). Three steps run; the shorter of the two
   intervals between their timestamps (from the progress callback) counts, so neither set-up such as the w mean nor
   the first steps' allocations and kernel creation are counted: what a run of hundreds of steps takes per step. (On
   an AMX Xeon a 1024 px W projector's first step, timed from the call, took 7.4 s against 2.6 s for later ones.)
2. The tiny recovery task: a 32 px generator, a target rendered from a known latent, each method run until the LPIPS
   (AlexNet trunk, random, 32 px) between its current image and the target falls below a fixed threshold: steps and
   seconds to get there (or "not reached" within the step limit).
"""

from __future__ import annotations

import time

import torch

from ..accel import accelerate
from ..core import Generator, GeneratorConfig
from .generator import conv_rate, generator_flops
from ..metrics.lpips import LPIPSDistance
from ..methods.optim import TuneSettings, project, tune
from ..methods.overparam import invert_overparam

RECOVERY_LPIPS = 0.02  # threshold of the tiny recovery task
RECOVERY_MAX_STEPS = 300


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.stamps: list[float] = []
        self.losses: list[float] = []

    def __call__(self, info) -> None:
        self.stamps.append(time.perf_counter())
        self.losses.append(float(info.loss.float().mean()))

    def step_ms(self) -> float:
        d = [b - a for a, b in zip(self.stamps[:-1], self.stamps[1:])]
        if not d and self.stamps:  # a single step: from the call, set-up included
            d = [self.stamps[0] - self.t0]
        return 1000 * min(d) if d else float("nan")


def _official(res: int) -> GeneratorConfig:
    # 1024: FFHQ config-f (8 mapping layers, channel_base 32768); 256: the ADA 256 px layout of the same family
    return GeneratorConfig(resolution=res)


def conv_flops(net: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """FLOPs (2 per multiply-add) of the convolutions and linear layers of one forward pass of ``net``."""
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return float(total)


def _lpips_flops(dist: LPIPSDistance, device: torch.device) -> float:
    """One LPIPS call with a gradient for its first image against a fixed target (whose features are kept): the
    image through the backbone, then its input gradient (about a forward's FLOPs): 2 backbone forwards."""
    side = dist.resolution or 256
    return 2 * conv_flops(dist.model.net, torch.zeros(1, 3, side, side, device=device))


# generator passes per step, in forward-pass units: the projectors differentiate the latent of a frozen generator
# whose per-image modulation is rank 1 (forward + input gradient); PTI and the overparameterized latent (a full
# per-row modulation, folded into the weight) also need a weight gradient
G_PASSES = {"projector w": 2, "projector w+": 2, "PTI": 3, "overparam W": 3}


def _step_times(res: int, device: torch.device, steps: int | None = None) -> dict[str, float]:
    steps = steps or 3
    torch.manual_seed(0)
    G = accelerate(Generator(_official(res)).to(device).eval())
    dist = LPIPSDistance("vgg", allow_random=True).to(device)
    alex = LPIPSDistance("alex", allow_random=True).to(device)
    with torch.no_grad():
        target = G.synthesis(G.map(torch.randn(1, G.cfg.z_dim, device=device))).clamp(-1, 1)
    out = {}
    g_fwd = generator_flops(G.cfg, 1)
    flops = {k: n * g_fwd + _lpips_flops(alex if k == "PTI" else dist, device) for k, n in G_PASSES.items()}
    for space in ("w", "w+"):
        c = _Clock()
        pr = project(G, target, space=space, num_steps=steps, w_avg_samples=100, distance=dist, callback=c)
        out[f"projector {space}"] = c.step_ms()
    c = _Clock()
    tune(G, target, pr.results[0], TuneSettings(num_steps=steps, stop_at=0.0), distance=alex, metric=dist,
         callback=c)
    out["PTI"] = c.step_ms()
    c = _Clock()
    invert_overparam(G, target, num_steps=steps, w_avg_samples=100, distance=dist, callback=c)
    out["overparam W"] = c.step_ms()
    return out, flops


def _recovery(device: torch.device) -> list[str]:
    cfg = GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32)
    torch.manual_seed(0)
    G = accelerate(Generator(cfg).to(device).eval())
    d = LPIPSDistance("alex", allow_random=True, resolution=None).to(device)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        target = G.synthesis(G.map(torch.randn(1, cfg.z_dim, generator=g).to(device)))
    lines = []

    def reach(name, fn):
        c = _Clock()
        t0 = time.perf_counter()
        fn(c)
        hit = next((i for i, v in enumerate(c.losses) if v <= RECOVERY_LPIPS), None)
        if hit is None:
            lines.append(f"  {name:<22} not reached in {len(c.losses)} steps (last {c.losses[-1]:.4f})")
        else:
            lines.append(f"  {name:<22} {hit + 1:4d} steps, {c.stamps[hit] - t0:6.2f} s")

    kw = dict(num_steps=RECOVERY_MAX_STEPS, w_avg_samples=1000, distance=d)
    reach("projector w", lambda c: project(G, target, space="w", optimize_noise=False, callback=c, **kw))
    reach("projector w+", lambda c: project(G, target, space="w+", optimize_noise=False, callback=c, **kw))
    reach("overparam W", lambda c: invert_overparam(G, target, callback=c, **kw))
    reach("overparam W+", lambda c: invert_overparam(G, target, per_layer=True, callback=c, **kw))
    return lines


def bench_optim(device: str | torch.device = "cpu", *, resolutions=(256, 1024), recovery: bool = True,
                quick: bool = False) -> list[str]:
    device = torch.device(device)
    if quick:  # make bench --quick: the 256 px steps only
        resolutions = tuple(r for r in resolutions if r <= 256) or resolutions[:1]
    threads = torch.get_num_threads()
    lines = [f"optimisation inversion ({device}, {threads} threads): ms per step, batch 1, LPIPS-VGG at 256 px "
             "(PTI: LPIPS-AlexNet)"]
    rate = conv_rate(torch.float32, device) if device.type == "cpu" else None
    for res in resolutions:
        t, flops = _step_times(res, device)
        lines.append(f"  {res:>4} px: " + ", ".join(f"{k} {v:,.0f} ms" for k, v in t.items()))
        if rate:
            lines.append(f"  {res:>4} px, GFLOP per step (generator passes: {G_PASSES}, + LPIPS) and × conv rate "
                         f"({rate / 1e9:.0f} GFLOP/s; target >= 0.5 at 1024 px for W+ and PTI): " + ", ".join(
                             f"{k} {flops[k] / 1e9:.0f} GF = {flops[k] / (t[k] / 1000) / rate:.2f}" for k in t))
    if recovery:
        lines.append(f"tiny recovery (32 px generator, target from a known latent): steps/seconds to LPIPS <= {RECOVERY_LPIPS}")
        lines += _recovery(device)
    return lines


if __name__ == "__main__":
    import sys

    quick = "--quick" in sys.argv
    for line in bench_optim(resolutions=(256,) if quick else (256, 1024)):
        print(line)
