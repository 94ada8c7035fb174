"""Evaluation: reconstruction quality of the inversion methods on held-out faces, and face-detection rates.

**Reconstruction** (``gantune eval reconstruction``). Held-out images are drawn from the same ``synthetic-faces``
source the trainers use (the DCGAN of ``gan-face-generate``, :mod:`gantune.train.data`), but from a torch generator
seeded with ``HELDOUT_SEED_OFFSET + seed`` = 10 000 000 + S. The trainers seed their data draws with the small
``--seed`` given to ``gantune train`` (the generator trainer with seed + 1, the encoder trainers with seed), so the
held-out latents come from a different random stream (z is continuous: a repeat has probability zero). A folder of
images can be given instead (the first N files in sorted order). Images are resized to each method's generator
resolution and every method sees the same targets. Methods (rows):

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
seed 0) and the package's trained linear heads, and is named as that substitute everywhere it is shown.

**Detection** (``gantune eval detection``): the share of images in which dlib's frontal HOG face detector (the one
``gantune align`` uses, with one upsampling pass) finds a face, for samples of each generator and for the DCGAN
source faces, all upscaled (LANCZOS) to the same side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..align.landmarks import hog_detector
from ..errors import InputError, WeightsError
from ..io.images import IMAGE_SUFFIXES, ImageError, load_image, pil_to_tensor, tensor_to_pil, to_rgb
from ..methods.hyper.method import HyperStyle
from ..methods.optim import ProjectorSettings
from ..metrics.identity import identity_distance
from ..metrics.l2 import L2Distance, l2_distance
from ..metrics.lpips import LPIPSDistance, backbone_name, get_lpips
from ..metrics.msssim import ms_ssim
from ..runtime import resolve_device
from ..sampling import generate
from ..train.data import SYNTHETIC_FACES, SyntheticFaces, dcgan_weights_path
from ..weights import load_generator

HELDOUT_SEED_OFFSET = 10_000_000  # held-out draws use torch seed 10_000_000 + S; training uses --seed (and seed + 1)
LPIPS_MIN_SIDE = 64  # LPIPS inputs smaller than this are bilinearly upsampled to it
LPIPS_MAX_SIDE = 256  # and larger ones area-downsampled to this (as the projector's LPIPS)
DETECT_UPSAMPLE = 1  # dlib HOG upsampling passes (gantune align's default)
DCGAN_SIDE = 64  # the synthetic-faces DCGAN's native resolution

METRICS = ("l2", "lpips", "ms_ssim", "identity")
LOWER_IS_BETTER = {"l2": True, "lpips": True, "ms_ssim": False, "identity": True}
ROWS = ("W-encoder", "HyperStyle 1 iter", "HyperStyle 5 iters", "W+ optim", "overparam optim")
HYPER_ITERS = {"W-encoder": 0, "HyperStyle 1 iter": 1, "HyperStyle 5 iters": 5}

# The papers' expected orderings: (claim, source, better row, worse row)
ORDERINGS = (
    ("HyperStyle better than the W-encoder alone", "HyperStyle, Alaluf et al. CVPR 2022", "HyperStyle 5 iters", "W-encoder"),
    ("overparameterized latent better than W+", "Overparameterized StyleGAN, Poirier-Ginter et al. 2022", "overparam optim",
     "W+ optim"),
)

LPIPS_SUBSTITUTE_LABEL = "LPIPS* (random AlexNet trunk, seed 0: a substitute, ImageNet weights not available)"
LPIPS_LABEL = "LPIPS (AlexNet, ImageNet backbone)"


def heldout_seed(seed: int) -> int:
    """The torch seed of the held-out draws for ``--seed S`` (never one the trainers use for their data)."""
    return HELDOUT_SEED_OFFSET + int(seed)


def _say(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)


# --- held-out images ---------------------------------------------------------------------------------------------------
class HeldOutImages:
    """N evaluation images, available at any resolution (the same images each time).

    ``synthetic-faces``: z ~ N(0, I) from ``torch.Generator().manual_seed(10_000_000 + seed)``, rendered by the DCGAN
    and resized by the training source itself (:class:`gantune.train.data.SyntheticFaces`: area down, bilinear up).
    A folder: its first ``count`` images (sorted, recursive), resized with LANCZOS to a square.
    """

    def __init__(self, data: str = SYNTHETIC_FACES, count: int = 16, seed: int = 0) -> None:
        if count < 1:
            raise InputError(f"--count {count}: need at least one image")
        self.data, self.count, self.seed = str(data), int(count), int(seed)
        self.notes: list[str] = []
        self._cache: dict[int, torch.Tensor] = {}
        if self.data == SYNTHETIC_FACES:
            dcgan_weights_path()  # the one-line error now, if the package is missing
            self.files: list[Path] = []
            self.names = [f"heldout{i:04d}" for i in range(self.count)]
        else:
            folder = Path(self.data)
            if not folder.is_dir():
                raise InputError(f"--data {folder}: not a folder", f"give a folder of images or '{SYNTHETIC_FACES}'")
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"--data {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
            if len(files) < self.count:
                self.notes.append(f"--data {folder} has {len(files)} images: all of them are used (--count {self.count})")
            self.files = files[: self.count]
            self.names = [p.stem for p in self.files]

    def at(self, resolution: int) -> torch.Tensor:
        """(N, 3, resolution, resolution) in [-1, 1] on the CPU."""
        if resolution not in self._cache:
            self._cache[resolution] = self._load(resolution)
        return self._cache[resolution]

    def _load(self, resolution: int) -> torch.Tensor:
        if self.data == SYNTHETIC_FACES:
            g = torch.Generator().manual_seed(heldout_seed(self.seed))
            return SyntheticFaces(resolution).sample(self.count, g).float().cpu()

        xs, names = [], []
        for p in self.files:
            try:
                xs.append(pil_to_tensor(load_image(p), resolution))
                names.append(p.stem)
            except ImageError as e:
                note = f"skipped {p}: {e}"
                if note not in self.notes:
                    self.notes.append(note)
        if not xs:
            raise InputError(f"--data {self.data}: none of the {len(self.files)} images could be read")
        self.names = names
        return torch.cat(xs)

    def describe(self) -> dict:
        if self.data == SYNTHETIC_FACES:
            return {"source": SYNTHETIC_FACES, "count": self.count, "seed": self.seed,
                    "heldout_torch_seed": heldout_seed(self.seed),
                    "rule": f"z ~ N(0, I) (100-d) from torch.Generator().manual_seed({HELDOUT_SEED_OFFSET} + seed); "
                            "training draws use the torch seed given to `gantune train` (and seed + 1), never this one",
                    "resize": "the training source's own rule: area down, bilinear (antialiased) up"}
        return {"source": self.data, "count": len(self.names), "files": [str(p) for p in self.files],
                "resize": "LANCZOS to a square at the generator resolution"}


# --- metrics -------------------------------------------------------------------------------------------------------
@dataclass
class LPIPSMetric:
    """LPIPS-alex between two batches in [-1, 1] -> (B,), with the resizing rule applied; says what it is."""

    distance: torch.nn.Module  # a gantune LPIPSDistance (resolution = LPIPS_MAX_SIDE)
    label: str  # the name shown in tables
    substitute: bool  # True: random-initialised trunk
    note: str  # one line: which network, or why the substitute

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dev = next(self.distance.parameters()).device
        a, b = a.float().to(dev), b.float().to(dev)
        if a.shape[-1] < LPIPS_MIN_SIDE:
            size = (LPIPS_MIN_SIDE, LPIPS_MIN_SIDE)
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return self.distance(a, b).cpu()

    def describe(self) -> dict:
        return {"label": self.label, "net": "alex", "substitute": self.substitute, "note": self.note,
                "resize": f"bilinear up to {LPIPS_MIN_SIDE} px below it, area down to {LPIPS_MAX_SIDE} px above it"}


_SUBSTITUTES: dict[str, torch.nn.Module] = {}


def lpips_metric(device="cpu", *, allow_substitute: bool = True) -> LPIPSMetric:
    """LPIPS-alex with the registry's ImageNet backbone, else the named random-trunk substitute (torch seed 0)."""
    try:
        d = get_lpips("alex", device=device, resolution=LPIPS_MAX_SIDE)
        return LPIPSMetric(d, LPIPS_LABEL, False, f"LPIPS-alex with the ImageNet backbone {backbone_name('alex')}")
    except WeightsError as e:
        if not allow_substitute:
            raise
        why = str(e).splitlines()[0]
    key = str(torch.device(device))
    if key not in _SUBSTITUTES:  # built once per process and device (the AlexNet classifier init takes seconds)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _SUBSTITUTES[key] = LPIPSDistance("alex", resolution=LPIPS_MAX_SIDE, allow_random=True).to(device)
    return LPIPSMetric(_SUBSTITUTES[key], LPIPS_SUBSTITUTE_LABEL, True,
                       f"SUBSTITUTE: AlexNet trunk randomly initialised with torch seed 0, the lpips package's trained "
                       f"linear heads; the ImageNet backbone is not available ({why}); run `gantune weights fetch "
                       f"{backbone_name('alex')}` for real LPIPS")


@torch.no_grad()
def image_metrics(recon: torch.Tensor, target: torch.Tensor, lpips: Callable | None,
                  identity: bool = True) -> dict[str, list[float]]:
    """Per-image L2, LPIPS, MS-SSIM and identity distance (dlib face-recognition ResNet, see
    :mod:`gantune.metrics.identity`) of (B, 3, H, W) reconstructions against targets, both in [-1, 1].
    Reconstructions are clamped to [-1, 1] first. ``lpips=None`` leaves LPIPS out."""
    if recon.shape != target.shape:
        raise ValueError(f"reconstructions {tuple(recon.shape)} and targets {tuple(target.shape)} differ in shape")
    r, t = recon.detach().float().cpu().clamp(-1, 1), target.detach().float().cpu()
    out = {"l2": l2_distance(r, t).tolist(), "ms_ssim": ms_ssim(r, t).tolist()}
    if lpips is not None:
        out["lpips"] = [float(v) for v in lpips(r, t)]
    if identity:
        out["identity"] = [identity_distance(tensor_to_pil(a), tensor_to_pil(b)) for a, b in zip(r, t)]
    return out


def summarize(values: Sequence[float]) -> dict:
    """{"mean", "std" (sample, n − 1; 0 for one value), "n"}."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    mean = math.fsum(v) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def aggregate(per_image: dict[str, Sequence[float]]) -> dict[str, dict]:
    """{metric: per-image values} -> {metric: summarize(values)}."""
    return {k: summarize(v) for k, v in per_image.items()}


def ordering_verdict(better: dict, worse: dict, metrics: Sequence[str] = METRICS) -> dict:
    """Does the row ``better`` beat the row ``worse`` on each metric (means; L2 and LPIPS lower, MS-SSIM higher)?

    ``better``/``worse``: {metric: mean} or {metric: {"mean": …}}. Returns {"per_metric": {metric: bool},
    "holds": True (every metric) / False (none) / None (mixed or nothing to compare), "verdict": text}."""

    def mean(row, m):
        v = row.get(m)
        v = v.get("mean") if isinstance(v, dict) else v
        return None if v is None or not math.isfinite(float(v)) else float(v)

    per = {}
    for m in metrics:
        a, b = mean(better, m), mean(worse, m)
        if a is None or b is None:
            continue
        per[m] = a < b if LOWER_IS_BETTER[m] else a > b
    if not per:
        return {"per_metric": per, "holds": None, "verdict": "not measured"}
    if all(per.values()):
        return {"per_metric": per, "holds": True, "verdict": "holds (better on " + ", ".join(_short(m) for m in per) + ")"}
    if not any(per.values()):
        return {"per_metric": per, "holds": False,
                "verdict": "does not hold (not better on " + ", ".join(_short(m) for m in per) + ")"}
    yes = ", ".join(_short(m) for m, ok in per.items() if ok)
    no = ", ".join(_short(m) for m, ok in per.items() if not ok)
    return {"per_metric": per, "holds": None, "verdict": f"mixed (better on {yes}; not on {no})"}


def _short(metric: str) -> str:
    return {"l2": "L2", "lpips": "LPIPS", "ms_ssim": "MS-SSIM", "identity": "identity"}.get(metric, metric)


def orderings(rows: list[dict]) -> list[dict]:
    """The papers' expected orderings, checked against the measured rows."""
    by = {r["method"]: r for r in rows}
    out = []
    for claim, source, hi, lo in ORDERINGS:
        if hi in by and lo in by:
            v = ordering_verdict(by[hi]["metrics"], by[lo]["metrics"])
        else:
            missing = [m for m in (hi, lo) if m not in by]
            v = {"per_metric": {}, "holds": None, "verdict": f"not measured ({', '.join(missing)} not run)"}
        out.append({"claim": claim, "source": source, "better": hi, "worse": lo, **v})
    return out


# --- reconstruction ------------------------------------------------------------------------------------------------
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


def _gen_desc(spec, G, info: dict | None = None) -> dict:
    d = {"spec": str(spec), "resolution": G.cfg.resolution, "kind": "overparameterized" if G.cfg.overparam else "standard"}
    for k in ("name", "sha256"):
        if info and info.get(k):
            d[k] = info[k]
    return d


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
    import gantune

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    K = int(steps) if steps is not None else default_steps()
    if K < 1:
        raise InputError(f"--steps {K}: must be at least 1")
    if not (weights or overparam_weights or (encoder and hypernet)):
        raise InputError("nothing to evaluate", "give --weights (W+ optim), --overparam-weights (overparam optim) "
                         "and/or --encoder with --hypernet (W-encoder, HyperStyle)")
    dev = resolve_device(device)
    held = HeldOutImages(data, count, seed)
    lpips = lpips or lpips_metric(dev)
    _say(log, f"LPIPS: {lpips.note}")
    rows: list[dict] = []
    skipped: list[dict] = []
    notes: list[str] = []
    optim_loss = None

    # HyperStyle: one loaded inverter, run with 0, 1 and 5 passes (each row timed on its own)
    hs = None
    if encoder and hypernet:
        hs = HyperStyle.load(hypernet, encoder, device=dev, iters=0, hash_files=False)
        x = held.at(hs.G.cfg.resolution)
        gen = {"spec": f"{hypernet} (the generator inside the HyperStyle file)", "resolution": hs.G.cfg.resolution,
               "kind": "standard"}
        hs.iters = 1
        gantune.invert(x[:1], method="hyperstyle", inverter=hs, batch_size=1)  # warm-up (not timed)
        for label, iters in HYPER_ITERS.items():
            _say(log, f"{label}: {x.shape[0]} images …")
            hs.iters = iters
            t0 = time.perf_counter()
            res = gantune.invert(x, method="hyperstyle", inverter=hs, batch_size=batch_size)
            secs = time.perf_counter() - t0
            recon = torch.stack([r.image for r in res])
            rows.append(_row(label, recon, x, held.names, secs, lpips, gen,
                             {"iters": iters, "noise_mode": hs.noise_mode, "encoder": str(encoder),
                              "tuned_layers": len(hs.hypernet.layers)}))
    else:
        need = "--encoder and --hypernet" if not (encoder or hypernet) else ("--hypernet" if encoder else "--encoder")
        for label in HYPER_ITERS:
            skipped.append({"method": label, "reason": f"needs {need}"})

    K_note = {"steps": K}
    for label, spec, method in (("W+ optim", weights, "optim"), ("overparam optim", overparam_weights, "overparam")):
        if not spec:
            skipped.append({"method": label, "reason": "needs " + ("--weights" if method == "optim" else "--overparam-weights")})
            continue
        G, info = load_generator(spec, device=dev)
        G = G.eval()
        if method == "optim" and G.cfg.overparam:
            skipped.append({"method": label, "reason": f"--weights {spec} is an overparameterized generator; "
                                                      "the W+ projector needs a standard one"})
            continue
        if method == "overparam" and not G.cfg.overparam:
            notes.append(f"--overparam-weights {spec} is a standard generator: the latent matrix is fitted to it "
                         "(rows = its widest layer)")
        if method == "optim" and hs is not None:
            same = _same_function(G, hs.G, dev)
            notes.append(f"the HyperStyle rows use the generator inside {hypernet}; it renders "
                         f"{'the same images as' if same else 'DIFFERENT images from'} --weights {spec}")
        if optim_loss is None:
            dist, loss_name, optim_loss = _optim_distance(dev)
            _say(log, f"optimization loss: {optim_loss}")
        x = held.at(G.cfg.resolution)
        _say(log, f"{label}: {x.shape[0]} images, {K} steps …")
        settings = {"num_steps": K, "loss": loss_name}
        if method == "optim":
            settings["space"] = "w+"
        t0 = time.perf_counter()
        res = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            seeds = [int(seed) + j for j in range(i, i + xb.shape[0])]
            res += gantune.invert(xb, method=method, weights=G, device=dev, seed=seeds, distance=dist, **settings)
        secs = time.perf_counter() - t0
        recon = torch.stack([r.image for r in res])
        rows.append(_row(label, recon, x, held.names, secs, lpips, _gen_desc(spec, G, info), {**settings, **K_note}))
        del G

    order = {m: i for i, m in enumerate(ROWS)}
    rows.sort(key=lambda r: order[r["method"]])
    skipped.sort(key=lambda r: order[r["method"]])
    resolutions = sorted({r["resolution"] for r in rows})
    return {
        "kind": "gantune-eval-reconstruction",
        "format": 1,
        "gantune": gantune.__version__,
        "torch": torch.__version__,
        "device": str(dev),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": held.describe(),
        "images": list(held.names),
        "metrics": {
            "l2": "mean squared error on [-1, 1] images at the generator resolution (gantune.metrics.l2)",
            "lpips": lpips.describe(),
            "ms_ssim": "MS-SSIM at the generator resolution (gantune.metrics.msssim; scales reduced to fit small images)",
            "identity": "distance of dlib face-recognition descriptors (dlib_face_recognition_resnet_model_v1.dat) of "
                        "reconstruction and target, upscaled to 256 px; the face box from dlib's HOG detector, else "
                        "the FFHQ central box; the papers report ArcFace similarity, which is not available here",
            "seconds_per_image": "wall time of the method's call / images (model loading excluded; HyperStyle warmed up)",
            "aggregate": "mean ± sample std (n − 1) over images; reconstructions clamped to [-1, 1]",
        },
        "compared_at": resolutions,
        "steps": K,
        "optim_loss": optim_loss,
        "rows": rows,
        "skipped": skipped,
        "notes": held.notes + notes,
        "orderings": orderings(rows),
    }


# --- text output ---------------------------------------------------------------------------------------------------
def fmt_stat(s: dict, digits: int = 4) -> str:
    if not s or s.get("n", 0) == 0 or not math.isfinite(s["mean"]):
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def fmt_seconds(s: float) -> str:
    return f"{s:.3g}"


def reconstruction_columns(report: dict) -> list[str]:
    return ["method", "generator", "px", "L2 ↓", report["metrics"]["lpips"]["label"] + " ↓", "MS-SSIM ↑", "ID dist ↓",
            "s / image"]


def reconstruction_cells(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        m = r["metrics"]
        out.append([r["method"], Path(str(r["generator"]["spec"]).split(" (")[0]).name, str(r["resolution"]),
                    fmt_stat(m.get("l2", {})), fmt_stat(m.get("lpips", {})), fmt_stat(m.get("ms_ssim", {})),
                    fmt_stat(m.get("identity", {}), 3), fmt_seconds(r["seconds_per_image"])])
    return out


def caption(report: dict) -> str:
    d = report["data"]
    if d["source"] == SYNTHETIC_FACES:
        src = (f"{d['count']} held-out synthetic-faces images (DCGAN, torch seed {HELDOUT_SEED_OFFSET:_} + {d['seed']}, "
               "a seed training never uses)")
    else:
        src = f"{d['count']} images from {d['source']}"
    px = "/".join(str(r) for r in report["compared_at"]) or "–"
    lp = report["metrics"]["lpips"]
    lp_txt = "LPIPS* = " + ("random-trunk substitute" if lp["substitute"] else "LPIPS-alex")
    return (f"{src}; compared at the generator resolution ({px} px; LPIPS inputs upsampled to {LPIPS_MIN_SIDE} px when "
            f"smaller); mean ± std over images; optimizations: {report['steps']} steps, loss "
            f"{(report['optim_loss'] or '–').split(' (')[0]}; device {report['device']}."
            + ("" if not lp["substitute"] else f" {lp_txt}: not comparable to published LPIPS."))


def ordering_lines(report: dict) -> list[str]:
    return [f"Expected ({o['source']}): {o['claim']} — measured: {o['verdict']}." for o in report["orderings"]]


def markdown_table(columns: list[str], cells: list[list[str]]) -> str:
    def esc(s):
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def reconstruction_markdown(report: dict) -> str:
    parts = [markdown_table(reconstruction_columns(report), reconstruction_cells(report)), "", caption(report), ""]
    parts += [f"- {line}" for line in ordering_lines(report)]
    for s in report["skipped"]:
        parts.append(f"- {s['method']}: not run ({s['reason']}).")
    parts += [f"- Note: {n}." for n in report["notes"]]
    return "\n".join(parts)


# --- detection -----------------------------------------------------------------------------------------------------
def _as_pil_list(images) -> list:
    """A (B, 3, H, W) tensor in [-1, 1], or a sequence of PIL images / (3, H, W) tensors / paths / HxWx3 uint8 arrays."""
    import numpy as np
    from PIL import Image

    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        return list(tensor_to_pil(x.detach().float().cpu().clamp(-1, 1)))
    out = []
    for im in images:
        if isinstance(im, torch.Tensor):
            out.append(tensor_to_pil(im.detach().float().cpu().clamp(-1, 1)))
        elif isinstance(im, np.ndarray):
            out.append(Image.fromarray(im).convert("RGB"))
        elif isinstance(im, Image.Image):
            out.append(to_rgb(im))
        else:
            out.append(load_image(im))
    return out


def upscaled(img, side: int):
    """The image resized with LANCZOS so that its longer side is ``side``."""
    from PIL import Image

    w, h = img.size
    s = side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return img if size == img.size else img.resize(size, Image.LANCZOS)


def detection_rate(images, *, upscale: int = 256, upsample: int = DETECT_UPSAMPLE) -> dict:
    """Share of images in which dlib's frontal HOG detector finds at least one face after a LANCZOS resize to
    ``upscale`` px. {"count", "found", "rate", "faces": per-image face counts}."""
    import numpy as np

    det = hog_detector()
    faces = []
    for im in _as_pil_list(images):
        arr = np.ascontiguousarray(np.asarray(upscaled(im, upscale).convert("RGB")))
        faces.append(len(det(arr, upsample)))
    n = len(faces)
    found = sum(1 for f in faces if f > 0)
    return {"count": n, "found": found, "rate": found / n if n else float("nan"), "faces": faces}


def evaluate_detection(
    weights: Sequence[str] = (),  # generators (registry names, paths, URLs)
    *,
    count: int = 100,  # samples per generator (seeds S … S+N−1, as `gantune generate --seeds`)
    upscale: int = 256,  # side the images are resized to before detection
    seed: int = 0,  # first sample seed; the source faces use the held-out torch seed 10_000_000 + S
    truncation: float = 1.0,  # generator sampling psi
    source_too: bool = False,  # also the DCGAN synthetic-faces source
    device="auto",
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Face-detection rates of generator samples (and the DCGAN source) under one detector and one resize."""
    if count < 1:
        raise InputError(f"--count {count}: need at least one image")
    if upscale < 16:
        raise InputError(f"--upscale {upscale}: too small for the detector (use e.g. 256)")
    if not weights and not source_too:
        raise InputError("nothing to evaluate", "give --weights (repeatable) and/or --source-too")
    if not (isinstance(truncation, (int, float)) and math.isfinite(truncation)):
        raise InputError(f"--truncation {truncation!r}: not a finite number", "give a psi such as 0.7 or 1")
    dev = resolve_device(device)
    rows = []
    sides = {DCGAN_SIDE}  # the source at its own side and at every generator's (the side it was trained at)
    for spec in weights:
        G, info = load_generator(spec, device=dev)
        G = G.eval()
        _say(log, f"{spec}: {count} samples at {G.cfg.resolution} px …")
        imgs = [s.image for s in generate(G, list(range(seed, seed + count)), truncation=truncation,
                                          batch_size=batch_size, device=dev)]
        r = detection_rate(torch.stack(imgs), upscale=upscale)
        rows.append({"images": Path(str(spec)).name, "kind": "generator", "generator": _gen_desc(spec, G, info),
                     "resolution": G.cfg.resolution, "sampling": {"seeds": f"{seed}-{seed + count - 1}",
                                                                  "truncation": truncation, "noise_mode": "const"},
                     **r})
        sides.add(G.cfg.resolution)
        del G
    if source_too:
        held = HeldOutImages(SYNTHETIC_FACES, count, seed)
        for side in sorted(sides, reverse=True):
            _say(log, f"{SYNTHETIC_FACES}: {count} DCGAN faces at {side} px …")
            r = detection_rate(held.at(side), upscale=upscale)
            what = "DCGAN source" if side == DCGAN_SIDE else f"DCGAN source at {side} px, as a {side} px generator trains"
            rows.append({"images": f"{SYNTHETIC_FACES} ({what})", "kind": "source", "resolution": side,
                         "sampling": {"heldout_torch_seed": heldout_seed(seed)}, **r})
    import gantune

    return {
        "kind": "gantune-eval-detection",
        "format": 1,
        "gantune": gantune.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "detector": f"dlib frontal face detector (HOG, dlib.get_frontal_face_detector()), {DETECT_UPSAMPLE} upsampling "
                    "pass, as gantune align",
        "upscale": upscale,
        "resize": "LANCZOS, longer side to --upscale",
        "count": count,
        "rows": rows,
    }


def detection_columns() -> list[str]:
    return ["images", "px", "upscaled to", "faces found", "rate"]


def detection_cells(report: dict) -> list[list[str]]:
    return [[r["images"], str(r["resolution"]), str(report["upscale"]), f"{r['found']} / {r['count']}",
             f"{r['rate']:.1%}"] for r in report["rows"]]


def detection_markdown(report: dict) -> str:
    return "\n".join([markdown_table(detection_columns(), detection_cells(report)), "",
                      f"Detector: {report['detector']}; images resized ({report['resize']}) to {report['upscale']} px."])

