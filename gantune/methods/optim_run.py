"""The optimization methods (``optim``: W / W+ projector with optional PTI; ``overparam``: latent matrix) as methods
of the registry (:mod:`gantune.methods.registry`): settings from ``KEY=VALUE`` parameters, the generator and the
distances loaded once, and a batch callable that the invert pipeline and the Python API both run."""

from __future__ import annotations

import dataclasses
import hashlib

import torch
import torch.nn.functional as F

from ..checks import finite_float
from ..errors import InputError
from ..io.record import class_label
from ..metrics.l2 import L2Distance
from ..metrics.lpips import get_lpips
from ..runtime import resolve_device
from ..weights import load_generator
from .optim import ProjectorSettings, TuneSettings, project_and_tune
from .overparam import OverparamSettings, invert_overparam, latent_rows
from .pipeline import InvertOptions, MethodRun

FRAME_SIDE = 256  # progress frames are downsampled to at most this side
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def lpips_network(net: str, device, resolution: int = 256):
    """The LPIPS network of a run (a seam for tests, which use a random backbone)."""
    return get_lpips(net, device=device, resolution=resolution)


def distance_for(settings, device):
    """The distance of a loss: LPIPS-VGG for the projector / overparam settings with loss lpips, LPIPS-<lpips_net>
    for tune settings with loss lpips, pixel L2 with loss l2 (no ImageNet network)."""
    if getattr(settings, "loss", "lpips") == "l2":
        return L2Distance()
    if isinstance(settings, TuneSettings):
        return lpips_network(settings.lpips_net, device)
    return lpips_network("vgg", device, settings.loss_resolution)


class FrameCollector:
    """Progress callback: keeps a small frame every ``every`` steps per image (becomes the results' intermediates)."""

    def __init__(self, every: int, names: list[str]) -> None:
        self.every, self.names = every, names
        self.frames: dict[int, list] = {i: [] for i in range(len(names))}

    def __call__(self, info) -> None:
        if not self.every or (info.step % self.every and info.step != info.total):
            return
        imgs = info.images.detach().float()
        if imgs.shape[-1] > FRAME_SIDE:
            imgs = F.interpolate(imgs, size=(FRAME_SIDE, FRAME_SIDE), mode="area")
        for k, i in enumerate(info.indices):
            self.frames[i].append(imgs[k].clamp(-1, 1).half().cpu())


def image_seed(seed: int, name: str) -> int:
    """A per-image seed from the run seed and the image name, so results do not depend on batch composition."""
    h = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(h[:4], "little")


@dataclasses.dataclass
class OptimMethod:
    """A loaded generator + settings: ``(images (B,3,H,W) in [-1,1], names) -> list[InversionResult]``."""

    G: object  # gantune Generator
    method: str  # optim | overparam
    settings: object  # ProjectorSettings or OverparamSettings
    tune_settings: object = None  # TuneSettings for PTI, or None
    device: object = "cpu"  # torch.device
    seed: int = 0  # base seed; each image's seed is derived from it and the image name
    c: torch.Tensor | None = None  # (1, c_dim) class label of a class-conditional generator, or None
    progress_every: int = 0  # keep a frame every K steps (0 = none)
    info: dict = dataclasses.field(default_factory=dict)  # generator provenance
    _nets: tuple | None = dataclasses.field(default=None, repr=False)  # (main distance, tuning distance), once built

    def distances(self) -> tuple:
        """(main distance, tuning distance or None), built on first use: a missing LPIPS backbone fails here, with
        a one-line WeightsError that names the fetch command."""
        if self._nets is None:
            main = distance_for(self.settings, self.device)
            self._nets = (main, distance_for(self.tune_settings, self.device) if self.tune_settings is not None
                          else None)
        return self._nets

    def record_meta(self) -> dict:
        gen = {k: self.info.get(k) for k in ("spec", "name", "path", "sha256") if self.info.get(k) is not None}
        return {"generator": {**gen, "config": self.G.cfg.to_dict()}}

    def __call__(self, images, names):
        frames = FrameCollector(self.progress_every, list(names)) if self.progress_every else None
        seeds = [image_seed(self.seed, n) for n in names]
        dist, tdist = self.distances()
        if self.method == "optim":
            out = project_and_tune(self.G, images, self.settings, self.tune_settings, names=list(names), distance=dist,
                                   tune_distance=tdist, device=self.device, seed=seeds, callback=frames, c=self.c)
        else:
            out = invert_overparam(self.G, images, self.settings, names=list(names), distance=dist, device=self.device,
                                   seed=seeds, callback=frames)
        for i, r in enumerate(out.results):
            if frames is not None:
                r.intermediates = [f.float() for f in frames.frames[i]]
            r.meta["params"]["run_seed"] = self.seed
        return out.results


def convert_param(field_type, text: str, key: str):
    """``--param KEY=VALUE`` text as the settings field's type (bool, optional int, int, finite float, text). A value
    that is not text is already typed (an option of invert-optim / invert-overparam, checked there) and kept."""
    if not isinstance(text, str):
        return text
    t = str(field_type)
    try:
        if "bool" in t:
            low = text.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            return low in _TRUE
        if "int" in t and "None" in t and text.lower() in ("none", ""):
            return None
        if "int" in t:
            return int(text)
        if "float" in t:
            return finite_float(text, f"--param {key}")
        return text
    except ValueError:
        raise InputError(f"--param {key}={text}: not a valid {t}") from None


def settings_from_params(cls, params: dict, prefix: str = "") -> tuple[dict, set]:
    """The fields of settings dataclass ``cls`` found in ``params`` (keys starting with ``prefix``), converted; and
    the keys used."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out, used = {}, set()
    for k, v in params.items():
        name = k[len(prefix):] if prefix and k.startswith(prefix) else (None if prefix else k)
        if name in fields:
            out[name] = convert_param(fields[name].type, v, k)
            used.add(k)
    return out, used


def _settings(method: str, opts: InvertOptions, params: dict):
    """(settings, tune settings or None) of an optim / overparam run from its options and parameters."""
    if method == "optim":
        kw, used = settings_from_params(ProjectorSettings, params)
        tune = convert_param(bool, params.get("tune", "false"), "tune")
        used.add("tune")
        tkw, tused = settings_from_params(TuneSettings, params, prefix="tune_")
        used |= tused
        tkw.setdefault("loss", kw.get("loss", "lpips"))  # the tuning objective follows the projector's loss
    else:
        kw, used = settings_from_params(OverparamSettings, params)
        kw.setdefault("noise_mode", "none" if opts.noise == "none" else "const")
    if opts.iters is not None:
        kw["num_steps"] = opts.iters
    unknown = set(params) - used
    if unknown:
        raise InputError(f"{method} takes no --param {', '.join(sorted(unknown))}", f"see gantune invert-{method} --help")
    try:
        if method == "optim":
            return ProjectorSettings(**kw), (TuneSettings(**tkw) if tune else None)
        return OverparamSettings(**kw), None
    except ValueError as e:
        raise InputError(f"--param: {e}", f"see gantune invert-{method} --help") from None


def setup_optim(opts: InvertOptions) -> MethodRun:
    """The ``optim`` method: parameters are any ProjectorSettings field (space, num_steps, mse_weight, …), ``tune``
    (true/false), ``tune_<TuneSettings field>``, ``seed``, ``progress_every``."""
    return _setup("optim", opts)


def setup_overparam(opts: InvertOptions) -> MethodRun:
    """The ``overparam`` method: parameters are any OverparamSettings field (per_layer, num_steps, …), ``seed``,
    ``progress_every``."""
    return _setup("overparam", opts)


def run_settings(method: str, opts: InvertOptions) -> tuple:
    """What the options of an ``optim`` / ``overparam`` run ask for: (settings, tune settings or None, seed, frame
    interval (0: no frames)). Parameters are named after the settings fields: ``KEY=VALUE`` text from ``--param``,
    or the typed options of invert-optim / invert-overparam, which have the same names."""
    params = dict(opts.params)
    seed = int(params.pop("seed", 0))
    every = int(params.pop("progress_every", 10 if opts.save_intermediate else 0))
    settings, tune_settings = _settings(method, opts, params)
    return settings, tune_settings, seed, every if opts.save_intermediate else 0


def _setup(method: str, opts: InvertOptions) -> MethodRun:
    settings, tune_settings, seed, every = run_settings(method, opts)
    if not opts.weights:
        raise InputError(f"--method {method} needs the generator", "give --weights (e.g. ffhq-1024 or a .pt/.pkl path)")
    return build_method(method, opts.weights, settings, tune_settings, device=resolve_device(opts.device), seed=seed,
                        progress_every=every, class_index=opts.class_index)


def _describe(method: str, G, settings, tune_settings, device) -> str:
    if method == "optim":
        desc = f"projector: {settings.space}, {settings.num_steps} steps"
        if tune_settings is not None:
            ts = tune_settings
            desc += (f", then PTI ({'pixel MSE' if ts.loss == 'l2' else f'L2 + LPIPS-{ts.lpips_net}'}) up to "
                     f"{ts.num_steps} steps or distance <= {ts.stop_target:g}") + (f", rank {ts.rank}" if ts.rank else "")
    else:
        desc = (f"overparameterized latent: {'W+ (one matrix per layer)' if settings.per_layer else 'W'} "
                f"{latent_rows(G, settings.rows)}x{G.cfg.w_dim}, {settings.num_steps} steps")
    return desc + f"; generator {G.cfg.resolution}px on {device}"


def build_method(method, weights, settings, tune_settings=None, *, device, seed=0, progress_every=0,
                 class_index: int | None = None) -> MethodRun:
    """Load the generator and every network the run needs (so a missing LPIPS backbone fails now, before any image)
    and wrap them as a ``MethodRun``."""
    G, info = load_generator(weights, device=device)
    G = G.eval()
    info = dict(info, spec=str(weights))
    c = class_label(G.cfg.c_dim, class_index, what="the generator")
    m = OptimMethod(G=G, method=method, settings=settings, tune_settings=tune_settings, device=device, seed=seed,
                    progress_every=progress_every, info=info, c=c)
    m.distances()
    return MethodRun(invert_batch=m, input_size=G.cfg.resolution, record_meta=m.record_meta(),
                     describe=_describe(method, G, settings, tune_settings, device))
