"""Reconstruction quality of the inversion methods on held-out faces (``gantune eval reconstruction``).

Every method sees the same targets (:class:`~gantune.evaluation.data.HeldOutImages`: held-out synthetic faces or a
folder of images, resized to each method's generator resolution). Methods (rows):

* ``W-encoder`` — HyperStyle with 0 refinement passes: the W-encoder's latent (+ latent_avg) rendered as it is;
* ``HyperStyle 1 iter`` / ``HyperStyle 5 iters`` — the hypernetwork's weight offsets after 1 / 5 passes;
* ``W+ optim`` — gantune's projector in W+ (``gantune.invert(method="optim", space="w+")``), K steps;
* ``overparam optim`` — the latent-matrix inversion (``gantune.invert(method="overparam")``) on the
  overparameterized generator, K steps.

The optimizations use LPIPS-VGG as their loss when its ImageNet backbone is available, else pixel L2 (``--loss l2``).

Metrics per image (reconstructions clamped to [-1, 1], as a saved image would be), then mean ± std over images
(sample std, n − 1): **L2** = mean squared error on [-1, 1] images (:mod:`gantune.metrics.l2`), **LPIPS**
(AlexNet; images smaller than 64 px are bilinearly upsampled to 64 px for it, larger than 256 px area-downsampled to
256 px), **MS-SSIM** (:mod:`gantune.metrics.msssim`, at the generator resolution) and seconds per image (wall time
of the method's call divided by the number of images; model loading not included). When the ImageNet AlexNet
backbone is not in the weights registry cache, LPIPS is computed with a *random-initialised* AlexNet trunk (torch
seed 0) and the package's trained linear heads, and is named as that substitute everywhere it is shown
(:mod:`gantune.evaluation.lpips`). The report's tables: :mod:`gantune.evaluation.report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


from .. import __version__
from ..errors import InputError, WeightsError
from ..methods.hyper.method import HyperStyle
from ..methods.invert import invert
from ..methods.optim import ProjectorSettings
from ..metrics.l2 import L2Distance
from ..metrics.lpips import backbone_name, get_lpips
from ..runtime import resolve_device
from ..train.data import SYNTHETIC_FACES
from ..weights import load_generator
from .common import describe_generator, say
from .data import HeldOutImages
from .lpips import LPIPSMetric, lpips_metric
from .stats import aggregate, image_metrics
from .verdicts import orderings

ROWS = ("W-encoder", "HyperStyle 1 iter", "HyperStyle 5 iters", "W+ optim", "overparam optim")
HYPER_ITERS = {"W-encoder": 0, "HyperStyle 1 iter": 1, "HyperStyle 5 iters": 5}

def default_steps() -> int:
    """The projector's own default step count (ProjectorSettings.num_steps)."""
    return ProjectorSettings().num_steps


def _optim_distance(device):
    """The optimizations' loss: LPIPS-VGG (the projector's) if its backbone is available, else pixel L2."""
    try:
        return get_lpips("vgg", device=device, resolution=256), "lpips", "LPIPS-VGG (the projector's loss)"
    except WeightsError as e:
        why = str(e).splitlines()[0]
        return L2Distance(), "l2", (f"pixel L2 (--loss l2): the LPIPS-VGG backbone is not available ({why}); "
                                    f"`gantune weights fetch {backbone_name('vgg')}` for the projector's LPIPS loss")


@torch.no_grad()
def _same_function(G1, G2, device) -> bool:
    """Do two standard generators render the same images (mapping + synthesis, no noise) for a few z?"""
    if (G1.cfg.overparam or G2.cfg.overparam or G1.cfg.resolution != G2.cfg.resolution or G1.num_ws != G2.num_ws
            or G1.cfg.w_dim != G2.cfg.w_dim or G1.cfg.z_dim != G2.cfg.z_dim):
        return False
    z = torch.randn(2, G1.cfg.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    a = G1.synthesis(G1.map(z), noise_mode="none").float()
    b = G2.synthesis(G2.map(z), noise_mode="none").float()
    return bool((a - b).abs().max() <= 1e-3 * max(1.0, float(a.abs().max())))


def _row(method: str, recon: torch.Tensor, target: torch.Tensor, names: list[str], seconds: float, lpips,
         generator: dict, settings: dict) -> dict:
    per = image_metrics(recon, target, lpips)
    n = recon.shape[0]
    return {"method": method, "generator": generator, "resolution": int(target.shape[-1]), "n": n,
            "metrics": aggregate(per), "seconds_per_image": seconds / n, "settings": settings,
            "per_image": {"names": list(names), **per}}


@dataclass
class _Run:
    """One evaluation: what every row shares, and the rows, skipped rows and notes found so far."""

    held: HeldOutImages
    device: torch.device
    seed: int
    steps: int
    batch_size: int
    lpips: LPIPSMetric
    log: Callable[[str], None] | None
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    optim: tuple | None = None  # (distance, loss name, description) of the optimizations, chosen on first use


def _checked_steps(steps: int | None, batch_size: int, given: bool) -> int:
    """K, the optimization steps, after the one-line refusals of a bad batch size, step count or nothing given."""
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    K = int(steps) if steps is not None else default_steps()
    if K < 1:
        raise InputError(f"--steps {K}: must be at least 1")
    if not given:
        raise InputError("nothing to evaluate", "give --weights (W+ optim), --overparam-weights (overparam optim) "
                         "and/or --encoder with --hypernet (W-encoder, HyperStyle)")
    return K


def _hyperstyle_rows(run: _Run, encoder: str | None, hypernet: str | None) -> HyperStyle | None:
    """The W-encoder and HyperStyle rows: one loaded inverter, run with 0, 1 and 5 passes (each row timed on its
    own); skipped without both files. Returns the inverter (None when skipped)."""
    if not (encoder and hypernet):
        need = "--encoder and --hypernet" if not (encoder or hypernet) else ("--hypernet" if encoder else "--encoder")
        for label in HYPER_ITERS:
            run.skipped.append({"method": label, "reason": f"needs {need}"})
        return None
    hs = HyperStyle.load(hypernet, encoder, device=run.device, iters=0, hash_files=False)
    x = run.held.at(hs.G.cfg.resolution)
    gen = {"spec": f"{hypernet} (the generator inside the HyperStyle file)", "resolution": hs.G.cfg.resolution,
           "kind": "standard"}
    hs.iters = 1
    invert(x[:1], method="hyperstyle", inverter=hs, batch_size=1)  # warm-up (not timed)
    for label, iters in HYPER_ITERS.items():
        say(run.log, f"{label}: {x.shape[0]} images …")
        hs.iters = iters
        t0 = time.perf_counter()
        res = invert(x, method="hyperstyle", inverter=hs, batch_size=run.batch_size)
        secs = time.perf_counter() - t0
        recon = torch.stack([r.image for r in res])
        run.rows.append(_row(label, recon, x, run.held.names, secs, run.lpips, gen,
                             {"iters": iters, "noise_mode": hs.noise_mode, "encoder": str(encoder),
                              "tuned_layers": len(hs.hypernet.layers)}))
    return hs


def _optim_row(run: _Run, label: str, spec: str | None, method: str, hs: HyperStyle | None,
               hypernet: str | None) -> None:
    """The ``W+ optim`` (method "optim") or ``overparam optim`` row of generator ``spec``, or why it was skipped."""
    if not spec:
        need = "--weights" if method == "optim" else "--overparam-weights"
        run.skipped.append({"method": label, "reason": "needs " + need})
        return
    G, info = load_generator(spec, device=run.device)
    G = G.eval()
    if method == "optim" and G.cfg.overparam:
        run.skipped.append({"method": label, "reason": f"--weights {spec} is an overparameterized generator; "
                                                      "the W+ projector needs a standard one"})
        return
    if method == "overparam" and not G.cfg.overparam:
        run.notes.append(f"--overparam-weights {spec} is a standard generator: the latent matrix is fitted to it "
                         "(rows = its widest layer)")
    if method == "optim" and hs is not None:
        same = _same_function(G, hs.G, run.device)
        run.notes.append(f"the HyperStyle rows use the generator inside {hypernet}; it renders "
                         f"{'the same images as' if same else 'DIFFERENT images from'} --weights {spec}")
    if run.optim is None:
        run.optim = _optim_distance(run.device)
        say(run.log, f"optimization loss: {run.optim[2]}")
    dist, loss_name, _ = run.optim
    x = run.held.at(G.cfg.resolution)
    say(run.log, f"{label}: {x.shape[0]} images, {run.steps} steps …")
    settings = {"num_steps": run.steps, "loss": loss_name}
    if method == "optim":
        settings["space"] = "w+"
    t0 = time.perf_counter()
    res = []
    for i in range(0, x.shape[0], run.batch_size):
        xb = x[i : i + run.batch_size]
        seeds = [int(run.seed) + j for j in range(i, i + xb.shape[0])]
        res += invert(xb, method=method, weights=G, device=run.device, seed=seeds, distance=dist, **settings)
    secs = time.perf_counter() - t0
    recon = torch.stack([r.image for r in res])
    run.rows.append(_row(label, recon, x, run.held.names, secs, run.lpips, describe_generator(spec, G, info),
                         {**settings, "steps": run.steps}))


def _report(run: _Run) -> dict:
    """The report (a JSON-able dict) of a finished run: rows and skipped rows in ROWS order, the orderings."""
    order = {m: i for i, m in enumerate(ROWS)}
    rows = sorted(run.rows, key=lambda r: order[r["method"]])
    skipped = sorted(run.skipped, key=lambda r: order[r["method"]])
    resolutions = sorted({r["resolution"] for r in rows})
    return {
        "kind": "gantune-eval-reconstruction",
        "format": 1,
        "gantune": __version__,
        "torch": torch.__version__,
        "device": str(run.device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": run.held.describe(),
        "images": list(run.held.names),
        "metrics": {
            "l2": "mean squared error on [-1, 1] images at the generator resolution (gantune.metrics.l2)",
            "lpips": run.lpips.describe(),
            "ms_ssim": "MS-SSIM at the generator resolution (gantune.metrics.msssim; scales reduced to fit small images)",
            "identity": "distance of dlib face-recognition descriptors (dlib_face_recognition_resnet_model_v1.dat) of "
                        "reconstruction and target, upscaled to 256 px; the face box from dlib's HOG detector, else "
                        "the FFHQ central box; the papers report ArcFace similarity, which is not available here",
            "seconds_per_image": "wall time of the method's call / images (model loading excluded; HyperStyle warmed up)",
            "aggregate": "mean ± sample std (n − 1) over images; reconstructions clamped to [-1, 1]",
        },
        "compared_at": resolutions,
        "steps": run.steps,
        "optim_loss": run.optim[2] if run.optim else None,
        "rows": rows,
        "skipped": skipped,
        "notes": run.held.notes + run.notes,
        "orderings": orderings(rows),
    }


def evaluate_reconstruction(
    *,
    weights: str | None = None,  # standard generator: W+ optim row
    overparam_weights: str | None = None,  # overparameterized generator: overparam optim row
    encoder: str | None = None,  # W-encoder file: W-encoder and HyperStyle rows (with hypernet)
    hypernet: str | None = None,  # HyperStyle file (hypernetwork + its generator)
    data: str = SYNTHETIC_FACES,  # synthetic-faces or a folder of images
    count: int = 16,  # held-out images
    seed: int = 0,  # held-out seed S (torch seed 10_000_000 + S)
    steps: int | None = None,  # optimization steps K (default: the projector's default)
    device="auto",
    batch_size: int = 4,  # images per call
    lpips: LPIPSMetric | None = None,  # default: lpips_metric(device)
    log: Callable[[str], None] | None = None,  # progress messages
) -> dict:
    """Run every method whose inputs are given on the same held-out images; returns the report (a JSON-able dict)."""
    K = _checked_steps(steps, batch_size, bool(weights or overparam_weights or (encoder and hypernet)))
    dev = resolve_device(device)
    held = HeldOutImages(data, count, seed)
    lpips = lpips or lpips_metric(dev)
    say(log, f"LPIPS: {lpips.note}")
    run = _Run(held, dev, seed, K, batch_size, lpips, log)
    hs = _hyperstyle_rows(run, encoder, hypernet)
    for label, spec, method in (("W+ optim", weights, "optim"), ("overparam optim", overparam_weights, "overparam")):
        _optim_row(run, label, spec, method, hs, hypernet)
    return _report(run)
