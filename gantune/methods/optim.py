"""Optimization inversion: the StyleGAN2 W / W+ projector and pivotal tuning (PTI).

* :func:`project` — the NVIDIA projector's recipe, batched: start every image at the mean w of many samples, Adam
  with a linear learning-rate ramp-up and a cosine ramp-down, Gaussian noise added to the latent that decays to zero,
  per-image noise maps optimised with the multi-scale autocorrelation penalty and renormalised after every step,
  LPIPS-VGG at (at most) 256 px plus an optional MSE. Each image has its own latent and noise maps; the loss is the
  sum over the batch, so Adam (elementwise) moves each image as if it were alone.
* :func:`tune` — PTI (Roich et al. 2021): keep the pivot latent, tune the synthesis weights with L2 + LPIPS(alex)
  (``loss="lpips"``, PTI's objective) or pixel MSE alone (``loss="l2"``, no ImageNet network), optional locality
  regulariser; stop once the tuning distance (LPIPS, or MSE) reaches a target or at a step limit. One image at a
  time: every image gets its own generator. The result stores θ̂ − θ compactly (fp16, or rank-r factors).

Everything that changes the generator for one image (optimised noise maps, tuned weights) is stored as
``tuned.<state-dict name>`` differences in the record, and the returned reconstruction is rendered *from the record*
(:func:`render_record`), so re-rendering a saved record gives the saved image bit for bit on the same device.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import progress
from ..io.render import render_record, synthesize  # noqa: F401 - render_record re-exported
from ..io.record import InversionRecord
from ..metrics.l2 import L2Distance, l2_distance
from ..metrics.lpips import get_lpips
from .result import InversionResult

SPACES = ("w", "w+")


# --- progress ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepInfo:
    """What the progress callback sees after every optimisation step."""

    stage: str  # "project", "tune" or "overparam"
    step: int  # 1-based step just done
    total: int  # step limit of this stage
    loss: torch.Tensor  # (B,) loss per image at this step (before the update)
    images: torch.Tensor  # (B, 3, H, W) images rendered at this step, detached (noisy latent in the projector)
    indices: tuple[int, ...]  # which images of the batch these are (PTI tunes one image at a time)


ProgressFn = Callable[[StepInfo], None]


@dataclass
class OptimOutput:
    """A batch of optimisation inversions: one :class:`InversionResult` per image plus the loss curve."""

    results: list[InversionResult]  # in input order; ``image`` is rendered from the record
    history: torch.Tensor  # (steps, B) loss per image per step of the main optimisation (projection / overparam)
    tune_history: list[list[float]] = field(default_factory=list)  # per image: PTI loss per tuning step ([] if none)


# --- settings ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectorSettings:
    """Defaults follow the NVIDIA StyleGAN2(-ADA) projector."""

    space: str = "w"  # w: one w for every layer (NVIDIA); w+: one w per layer (rosinality --w_plus)
    num_steps: int = 1000  # optimisation steps
    w_avg_samples: int = 10_000  # z samples for the start point (mean w) and the latent-noise scale (w std)
    w_avg_seed: int = 123  # seed of those samples
    learning_rate: float = 0.1  # peak Adam learning rate (betas 0.9, 0.999)
    lr_rampup: float = 0.05  # fraction of the steps with a linear ramp-up from 0
    lr_rampdown: float = 0.25  # fraction of the steps with a cosine ramp-down to 0
    latent_noise: float = 0.05  # std of the noise added to the latent at step 0, in units of the w std
    latent_noise_ramp: float = 0.75  # fraction of the steps over which that noise decays (quadratically) to 0
    optimize_noise: bool = True  # optimise per-image noise maps (generators with noise inputs only)
    noise_regularize: float = 1e5  # weight of the multi-scale noise autocorrelation penalty
    mse_weight: float = 0.0  # weight of an extra pixel MSE term (rosinality --mse)
    loss_resolution: int = 256  # images are area-downsampled to this side for LPIPS
    loss: str = "lpips"  # lpips (LPIPS-VGG, the projector's distance) or l2 (pixel MSE only: no ImageNet network)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.num_steps < 1:
            raise ValueError("num_steps must be >= 1")


# Default stop targets of the tuning distance, per tuning loss.
TUNE_TARGETS = {
    "lpips": 0.06,  # LPIPS-alex: PTI's LPIPS_value_threshold
    "l2": 0.001,  # pixel MSE on [-1, 1] images: 2.5e-4 on [0, 1], a PSNR of 36 dB (a near-exact reconstruction)
}
TUNE_STOPS = ("target", "step_limit")  # why tuning stopped: the distance reached the target / the step limit ran out


@dataclass(frozen=True)
class TuneSettings:
    """Pivotal tuning; defaults follow danielroich/PTI (configs/hyperparameters.py)."""

    num_steps: int = 350  # step limit (PTI max_pti_steps)
    learning_rate: float = 3e-4  # Adam, constant, on all synthesis parameters
    loss: str = "lpips"  # lpips: l2_weight·MSE + lpips_weight·LPIPS (PTI); l2: pixel MSE only (no ImageNet network)
    lpips_net: str = "alex"  # LPIPS backbone of the tuning loss with loss lpips (PTI: AlexNet)
    l2_weight: float = 1.0  # weight of the pixel L2 (MSE) term (loss lpips)
    lpips_weight: float = 1.0  # weight of the LPIPS term (loss lpips)
    stop_at: float | None = None  # stop once the tuning distance (LPIPS, or MSE with loss l2) is at or below this;
    # None: TUNE_TARGETS[loss]
    locality: bool = False  # PTI's locality regulariser (keeps the generator unchanged away from the pivot)
    locality_alpha: float = 30.0  # distance from the pivot, in w space, of the regulariser's sample
    locality_psi: float = 0.5  # truncation of the regulariser's random w
    locality_l2: float = 0.1  # weight of its L2 term
    locality_lpips: float = 0.1  # weight of its LPIPS term
    rank: int | None = None  # store each weight difference as rank-r factors u @ v; None = full fp16 difference

    def __post_init__(self) -> None:
        if self.num_steps < 0:
            raise ValueError("num_steps must be >= 0")
        if self.rank is not None and self.rank < 1:
            raise ValueError("rank must be >= 1")
        if self.loss not in LOSSES:
            raise ValueError(f"tuning loss must be one of {LOSSES}, got {self.loss!r}")
        if self.stop_at is not None and not (math.isfinite(self.stop_at) and self.stop_at >= 0):
            raise ValueError(f"tuning target stop_at must be a finite number >= 0, got {self.stop_at!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError(f"tuning learning rate must be a finite number >= 0, got {self.learning_rate!r}")

    @property
    def stop_target(self) -> float:
        """The tuning distance at which tuning stops (``stop_at``, or the loss's default)."""
        return TUNE_TARGETS[self.loss] if self.stop_at is None else float(self.stop_at)


# --- helpers shared with overparam.py ------------------------------------------------------------------------------
@torch.no_grad()
def latent_stats(G, n: int = 10_000, *, seed: int = 123, batch: int = 1000,
                 c: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Mean w (w_dim,) and the RMS distance of samples from it (a scalar, the projector's ``w_std``); for a
    class-conditional generator, of the samples of class label ``c`` (1, c_dim)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    dev = G.w_avg.device
    chunks = []
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = torch.randn(b, G.cfg.z_dim, generator=g).to(dev)
        chunks.append(G.mapping(z, None if c is None else c.to(dev)).double().cpu())
        done += b
    w = torch.cat(chunks)
    mean = w.mean(0)
    std = float((w - mean).square().sum(1).mean().sqrt())
    return mean.float().to(dev), std


def lr_schedule(t: float, peak: float, rampup: float, rampdown: float) -> float:
    """Learning rate at progress t in [0, 1): linear warm-up over ``rampup``, cosine decay over the last ``rampdown``."""
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(down * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return peak * ramp


def noise_layer_names(G) -> list[str]:
    """State-dict prefixes (``synthesis.layers.b8.conv0``) of the conv layers that take a noise input."""
    out = []
    for s in G.specs:
        layer = G.synthesis.layer(s.name)
        if getattr(layer, "use_noise", False):
            out.append(f"synthesis.layers.{s.name}")
    return out


def noise_regularization(maps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over maps and scales of the squared mean autocorrelation at a one-pixel shift (x and y), per image: (B,).
    Each map is average-pooled by 2 until it is 8×8."""
    total = None
    for m in maps.values():
        x = m
        while True:
            ac_x = (x * torch.roll(x, shifts=1, dims=3)).mean(dim=(1, 2, 3))
            ac_y = (x * torch.roll(x, shifts=1, dims=2)).mean(dim=(1, 2, 3))
            r = ac_x.square() + ac_y.square()
            total = r if total is None else total + r
            if x.shape[-1] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total


def _normalize_maps_(maps: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for m in maps.values():
            mean = m.mean(dim=(1, 2, 3), keepdim=True)
            std = (m - mean).square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            m.sub_(mean).div_(std.clamp_min(1e-8))


def batch_loss(synth: torch.Tensor, targets: torch.Tensor, distance, mse_weight: float) -> torch.Tensor:
    """The loss per image (B,) of the projector and the overparameterized inversion: the distance, plus
    ``mse_weight`` times the pixel MSE."""
    loss = distance(synth, targets)
    if mse_weight:
        loss = loss + mse_weight * l2_distance(synth, targets)
    return loss


def adam_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One update on the summed loss (Adam is elementwise: each image moves as if it were alone)."""
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    opt.step()


def report_step(step: int, total: int, what: str, callback: ProgressFn | None, info: Callable[[], StepInfo]) -> None:
    """Step ``step`` of ``total`` done: the progress display's count (``what``), and ``info()`` to the callback (made
    only when there is one)."""
    progress.step(step, total, what)
    if callback is not None:
        callback(info())


def _device(G, device) -> torch.device:
    return torch.device(device) if device is not None else G.w_avg.device


def _check_targets(G, targets: torch.Tensor) -> torch.Tensor:
    res = G.cfg.resolution
    if targets.ndim != 4 or targets.shape[1] != 3 or targets.shape[2:] != (res, res):
        raise ValueError(f"targets must be (B, 3, {res}, {res}) in [-1, 1], got {tuple(targets.shape)}")
    return targets.float()


LOSSES = ("lpips", "l2")


def make_distance(loss: str, device, resolution: int = 256, net: str = "vgg"):
    """The loss/metric network: ``lpips`` (LPIPS, ImageNet backbone from the registry) or ``l2`` (pixel MSE)."""
    if loss == "l2":
        return L2Distance()
    if loss != "lpips":
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")

    return get_lpips(net, device=device, resolution=resolution)


def _default_distance(distance, device, resolution, net="vgg", loss="lpips"):
    return distance if distance is not None else make_distance(loss, device, resolution, net)


def compact_difference(diff: torch.Tensor, rank: int | None = None) -> dict[str, torch.Tensor]:
    """θ̂ − θ as stored in a record (relative names ``""``, ``".u"``, ``".v"``): fp16, or rank-r factors (fp16) of the
    difference reshaped to (out, rest) when that is smaller than the full difference."""
    if rank is not None and diff.ndim >= 2:
        mat = diff.float().reshape(diff.shape[0], -1)
        rows, cols = mat.shape
        if rank * (rows + cols) < rows * cols:
            U, S, Vh = torch.linalg.svd(mat, full_matrices=False)
            u = (U[:, :rank] * S[:rank].sqrt()).half().contiguous()
            v = (S[:rank].sqrt()[:, None] * Vh[:rank]).half().contiguous()
            return {".u": u, ".v": v}
    return {"": diff.detach().half().contiguous()}


def batch_results(G, records, targets, names, distance, t_start: float, *, steps: int, method: str, params: dict,
                  noise_mode: str = "const") -> list[InversionResult]:
    """The results of a batch optimised together for ``steps`` steps since ``t_start`` (each image gets an equal
    share of the time)."""
    B = len(records)
    seconds = (time.perf_counter() - t_start) / B
    return _results_from_records(G, records, targets, names, distance, seconds=[seconds] * B, steps=[steps] * B,
                                 method=method, params=params, noise_mode=noise_mode)


def _results_from_records(G, records, targets, names, distance, *, seconds, steps, method, params, noise_mode="const"):
    """Render each record, measure it against its target, and wrap it as an InversionResult."""
    out = []
    for i, rec in enumerate(records):
        rec.meta["noise_mode"] = noise_mode
        img = render_record(G, rec).float()  # on the CPU
        target = targets[i : i + 1]
        img_t = img.to(target.device)  # measured where the targets and the distance's network are (a GPU's, say)
        with torch.no_grad():
            lp = float(distance(img_t, target))
            l2 = float(l2_distance(img_t, target))
        metrics = {"l2": l2, "steps": steps[i], "seconds": seconds[i]}
        metrics[getattr(distance, "metric_name", "lpips")] = lp
        out.append(
            InversionResult(
                name=names[i],
                image=img[0].cpu(),
                latent=rec.latent,
                latent_kind=rec.latent_kind,
                method=method,
                tuned=dict(rec.tuned),
                meta={"params": copy.deepcopy(params), "metrics": metrics, "noise_mode": noise_mode},
                timings={"seconds": seconds[i]},
                c=rec.c,
            )
        )
    return out


def prepare_run(G, targets: torch.Tensor, names, distance, device, s):
    """What the projector and the overparameterized inversion start from: (device, targets on it, one name per
    image, the distance (default from the settings' loss), G frozen in eval mode)."""
    device = _device(G, device)
    targets = _check_targets(G, targets).to(device)
    names = _names(names, targets.shape[0])
    distance = _default_distance(distance, device, s.loss_resolution, loss=s.loss)
    return device, targets, names, distance, G.eval().requires_grad_(False)


def _seeds(seed, n: int) -> list[int]:
    if isinstance(seed, int):
        return [seed + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"{len(seed)} seeds for {n} images")
    return [int(v) for v in seed]


def _names(names, n):
    if names is None:
        return [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} images")
    return list(names)


# --- the projector -------------------------------------------------------------------------------------------------
def project(
    G,
    targets: torch.Tensor,  # (B, 3, H, W) in [-1, 1] at the generator's resolution
    settings: ProjectorSettings | None = None,
    *,
    names: list[str] | None = None,  # per-image names for the results (default "0", "1", …)
    distance=None,  # LPIPSDistance for the loss and the reported metric (default: LPIPS-VGG from the registry)
    device=None,  # default: the generator's device
    seed: int | list[int] = 0,  # latent noise and noise-map start; a list gives each image its own (batch-independent)
    callback: ProgressFn | None = None,
    c: torch.Tensor | None = None,  # (1, c_dim) class label of a class-conditional generator (start point, w std)
    **overrides,  # any ProjectorSettings field
) -> OptimOutput:
    s = dataclasses.replace(settings or ProjectorSettings(), **overrides)
    device, targets, names, distance, G = prepare_run(G, targets, names, distance, device, s)
    B = targets.shape[0]
    t_start = time.perf_counter()

    w_avg, w_std = latent_stats(G, s.w_avg_samples, seed=s.w_avg_seed, c=c)
    seeds = _seeds(seed, B)
    gens = [torch.Generator(device="cpu").manual_seed(sd) for sd in seeds]

    def randn(*shape):  # (B, *shape), image i drawn from its own generator
        return torch.stack([torch.randn(*shape, generator=g) for g in gens]).to(device)

    if s.space == "w":
        w_opt = w_avg[None].repeat(B, 1)
    else:
        w_opt = w_avg[None, None].repeat(B, G.num_ws, 1)
    w_opt = w_opt.clone().requires_grad_(True)

    maps: dict[str, torch.Tensor] = {}
    if s.optimize_noise:
        for prefix in noise_layer_names(G):
            res = G.get_buffer(prefix + ".noise_const").shape[-1]
            maps[prefix] = randn(1, res, res).requires_grad_(True)
    opt = torch.optim.Adam([w_opt, *maps.values()], lr=s.learning_rate, betas=(0.9, 0.999))

    history = []
    for step in range(s.num_steps):
        t = step / s.num_steps
        noise_scale = w_std * s.latent_noise * max(0.0, 1.0 - t / s.latent_noise_ramp) ** 2
        for group in opt.param_groups:
            group["lr"] = lr_schedule(t, s.learning_rate, s.lr_rampup, s.lr_rampdown)
        w_noise = randn(*w_opt.shape[1:]) * noise_scale
        synth = synthesize(G, noise_maps=maps, ws=w_opt + w_noise)
        loss = batch_loss(synth, targets, distance, s.mse_weight)
        if maps and s.noise_regularize:
            loss = loss + s.noise_regularize * noise_regularization(maps)
        adam_step(opt, loss)
        _normalize_maps_(maps)
        history.append(loss.detach().cpu())
        report_step(step + 1, s.num_steps, "projector step", callback,
                    lambda: StepInfo("project", step + 1, s.num_steps, loss.detach(), synth.detach(), tuple(range(B))))

    params = {**dataclasses.asdict(s), "seed": seed}
    base = G.state_dict()
    records = []
    for i in range(B):
        lat = w_opt[i].detach().float().cpu()
        lat = lat[None] if s.space == "w" else lat
        tuned = {f"{p}.noise_const": (maps[p][i, 0].detach() - base[p + ".noise_const"]).half().cpu() for p in maps}
        records.append(InversionRecord(latent=lat, latent_kind=s.space, method="optim", tuned=tuned, meta={}, c=c))
    results = batch_results(G, records, targets, names, distance, t_start, steps=s.num_steps, method="optim",
                            params={"projector": params})
    for r, sd in zip(results, seeds):
        r.meta["params"]["projector"]["seed"] = sd
    return OptimOutput(results=results, history=torch.stack(history))


# --- pivotal tuning ------------------------------------------------------------------------------------------------
def _tunable(G) -> dict[str, torch.Tensor]:
    return {f"synthesis.{k}": v for k, v in G.synthesis.named_parameters()}


def tune(
    G,
    target: torch.Tensor,  # (1, 3, H, W) in [-1, 1]
    pivot: InversionResult,  # a projector result (its latent and noise maps stay fixed)
    settings: TuneSettings | None = None,
    *,
    distance=None,  # tuning distance: LPIPS with loss lpips (default LPIPS-<lpips_net> from the registry); with loss l2
    # pixel MSE (default)
    metric=None,  # distance of the reported metric (default: LPIPS-VGG with loss lpips, pixel L2 with loss l2)
    device=None,
    seed: int = 0,  # locality-regulariser samples
    index: int = 0,  # position of this image in its batch (reported to the callback)
    callback: ProgressFn | None = None,
    c: torch.Tensor | None = None,  # (1, c_dim) class label of a class-conditional generator (locality samples)
    **overrides,  # any TuneSettings field
) -> tuple[InversionResult, list[float]]:
    """PTI for one image: returns the pivot's result with tuned weights added (and re-rendered), and the loss curve.

    Before every step the tuning distance of the current generator is measured; tuning stops when it is at or below
    ``settings.stop_target`` or after ``num_steps`` updates. The metrics say how many steps ran (``tune_steps``), why
    they stopped (``tune_stop``: ``target`` or ``step_limit``) and the tuning distance of the pivot and of the result
    (``tune_distance_pivot``, ``tune_distance``, in ``tune_loss`` units, against ``tune_target``)."""
    s = dataclasses.replace(settings or TuneSettings(), **overrides)
    device = _device(G, device)
    target = _check_targets(G, target).to(device)
    distance, metric = _tune_distances(s, distance, metric, device)
    G = G.eval().requires_grad_(False)
    t_start = time.perf_counter()

    pivot_rec = pivot.to_record()
    base = G.state_dict()
    fixed = pivot_rec.tuned_state(base) if pivot_rec.tuned else {}  # the pivot's noise maps
    base_params = {k: v.detach() for k, v in _tunable(G).items()}
    params = {k: v.clone().requires_grad_(True) for k, v in base_params.items()}
    kw = {k: v for k, v in pivot_rec.synthesis_kwargs(device=device).items() if v is not None}
    pivot_w = kw.get("ws")
    locality = None
    if s.locality and pivot_w is not None:
        locality = _Locality(G, s, fixed, pivot_w, torch.Generator(device="cpu").manual_seed(seed), c, device, distance)

    def on_step(steps: int, loss: torch.Tensor, img: torch.Tensor) -> None:
        report_step(steps, s.num_steps, "tuning step", callback,
                    lambda: StepInfo("tune", steps, s.num_steps, loss.detach().reshape(1), img.detach(), (index,)))

    history, steps, stop, d_pivot, d_now = _tune_steps(
        lambda: synthesize(G, {**fixed, **params}, noise_mode="const", **kw), params, target, distance, s, locality,
        on_step)
    tuned = dict(pivot_rec.tuned)
    tuned.update(_tuned_differences(params, base_params, s.rank))
    rec = InversionRecord(latent=pivot_rec.latent, latent_kind=pivot_rec.latent_kind, method="optim", tuned=tuned,
                          c=pivot_rec.c)
    seconds = time.perf_counter() - t_start
    tune_params = {**dataclasses.asdict(s), "stop_at": s.stop_target, "seed": seed}
    params_meta = {**pivot.meta.get("params", {}), "tune": tune_params}
    [res] = _results_from_records(
        G, [rec], target, [pivot.name], metric, seconds=[seconds], steps=[steps], method="optim", params=params_meta
    )
    _tune_metrics(res, pivot, s, seconds, steps=steps, stop=stop, d_pivot=d_pivot, d_now=d_now)
    return res, history


def _tune_distances(s: TuneSettings, distance, metric, device) -> tuple:
    """(tuning distance, metric distance), each the given one or the loss's default."""
    if s.loss == "l2":
        return _default_distance(distance, device, 256, loss="l2"), _default_distance(metric, device, 256, loss="l2")
    return _default_distance(distance, device, 256, s.lpips_net), _default_distance(metric, device, 256, "vgg")


@dataclass
class _Locality:
    """PTI's locality regulariser: at a random w a fixed distance from the pivot (toward a truncated sample), the
    tuned generator should render what the pivot's generator renders."""

    G: object
    s: TuneSettings
    fixed: dict  # the pivot's tuned tensors (noise maps)
    pivot_w: torch.Tensor
    gen: torch.Generator  # draws the samples
    c: torch.Tensor | None
    device: object
    distance: object

    def add(self, loss: torch.Tensor, params: dict) -> torch.Tensor:
        """``loss`` plus the regulariser's L2 (and, with loss lpips, LPIPS) terms at a new sample."""
        G, s, pivot_w = self.G, self.s, self.pivot_w
        z = torch.randn(1, G.cfg.z_dim, generator=self.gen).to(self.device)
        with torch.no_grad():
            w_rand = G.truncate(G.mapping(z, None if self.c is None else self.c.to(self.device)), s.locality_psi)
            if pivot_w.ndim == 3:
                w_rand = w_rand[:, None].expand_as(pivot_w)
            direction = w_rand - pivot_w
            w_loc = pivot_w + s.locality_alpha * direction / direction.norm().clamp_min(1e-8)
            old = synthesize(G, self.fixed, ws=w_loc, noise_mode="none")
        new = synthesize(G, {**self.fixed, **params}, ws=w_loc, noise_mode="none")
        loss = loss + s.locality_l2 * l2_distance(new, old)
        if s.loss == "lpips":
            loss = loss + s.locality_lpips * self.distance(new, old)
        return loss


def _tune_steps(render, params: dict, target, distance, s: TuneSettings, locality: _Locality | None, on_step):
    """Adam on ``params`` until the tuning distance of ``render()`` is at or below the target, or ``s.num_steps``
    updates have run: (loss per step, steps, why it stopped, distance of the pivot, distance of the result)."""
    opt = torch.optim.Adam(params.values(), lr=s.learning_rate)
    stop_at = s.stop_target
    history: list[float] = []
    d_pivot = None
    for step in range(s.num_steps + 1):  # the extra pass measures the result of the last update
        last = step == s.num_steps
        with torch.no_grad() if last else contextlib.nullcontext():
            img = render()
            d = distance(img, target)
        d_now = float(d if last else d.detach())
        d_pivot = d_now if d_pivot is None else d_pivot
        if d_now <= stop_at:
            return history, step, "target", d_pivot, d_now
        if last:
            return history, step, "step_limit", d_pivot, d_now
        loss = d if s.loss == "l2" else s.l2_weight * l2_distance(img, target) + s.lpips_weight * d
        if locality is not None:
            loss = locality.add(loss, params)
        adam_step(opt, loss)
        history.append(float(loss.detach()))
        on_step(step + 1, loss, img)


def _tuned_differences(params: dict, base_params: dict, rank: int | None) -> dict[str, torch.Tensor]:
    """θ̂ − θ of every tuned tensor that changed, as stored in a record (on the CPU)."""
    tuned = {}
    for name, p in params.items():
        diff = p.detach() - base_params[name]
        if torch.count_nonzero(diff) == 0:
            continue
        for suffix, t in compact_difference(diff, rank).items():
            tuned[name + suffix] = t.cpu()
    return tuned


def _tune_metrics(res: InversionResult, pivot: InversionResult, s: TuneSettings, seconds: float, *, steps: int,
                  stop: str, d_pivot: float, d_now: float) -> None:
    """What the tuned result's metrics and timings add to its pivot's (see :func:`tune`)."""
    m = res.meta["metrics"]
    m["pivot"] = pivot.meta.get("metrics", {})
    m["steps"] = pivot.meta.get("metrics", {}).get("steps", 0)  # projector steps
    m["tune_steps"] = steps
    m["tune_stop"] = stop
    m["tune_loss"] = s.loss if s.loss == "l2" else f"lpips-{s.lpips_net}"
    m["tune_target"] = s.stop_target
    m["tune_distance_pivot"] = d_pivot
    m["tune_distance"] = d_now
    m["seconds"] = seconds + pivot.timings.get("seconds", 0.0)
    res.timings = {"project": pivot.timings.get("seconds", 0.0), "tune": seconds,
                   "seconds": seconds + pivot.timings.get("seconds", 0.0)}


def project_and_tune(
    G,
    targets: torch.Tensor,
    settings: ProjectorSettings | None = None,
    tune_settings: TuneSettings | None = None,
    *,
    names: list[str] | None = None,
    distance=None,  # projector loss + reported metric (LPIPS-VGG)
    tune_distance=None,  # PTI distance (default: LPIPS-alex with tuning loss lpips, pixel MSE with l2)
    device=None,
    seed: int | list[int] = 0,  # one per image, or a base (image i gets seed + i)
    callback: ProgressFn | None = None,
    c: torch.Tensor | None = None,  # (1, c_dim) class label of a class-conditional generator
) -> OptimOutput:
    """The projector on the whole batch, then (with ``tune_settings``) PTI image by image from each pivot. Results
    carry the class label ``c``."""
    out = project(G, targets, settings, names=names, distance=distance, device=device, seed=seed, callback=callback,
                  c=c)
    if tune_settings is None:
        return out
    device = _device(G, device)
    ps = settings or ProjectorSettings()
    metric = _default_distance(distance, device, ps.loss_resolution, loss=ps.loss)
    results, curves = [], []
    seeds = _seeds(seed, len(out.results))
    for i, pivot in enumerate(out.results):
        res, curve = tune(
            G, targets[i : i + 1].to(device), pivot, tune_settings, distance=tune_distance, metric=metric,
            device=device, seed=seeds[i], index=i, callback=callback, c=c,
        )
        results.append(res)
        curves.append(curve)
    return OptimOutput(results=results, history=out.history, tune_history=curves)
