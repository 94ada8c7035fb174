"""``gantune invert-optim`` (W / W+ projector, optional PTI) and ``gantune invert-overparam`` (latent matrix).

Both are also ``gantune invert --method optim|overparam`` (registered in ``INVERT_METHODS``; method options as
``--param KEY=VALUE``, e.g. ``--param space=w+ --param tune=true``). Inputs, outputs, records, manifest and error
handling are the shared batch pipeline's (:mod:`gantune.methods.pipeline`); on top of it these commands write
per-image metrics in the manifest (final L2, LPIPS, steps, seconds) and, with ``--save-intermediate --every K``, a frame every K steps
(``intermediate/<t>/<stem>.png``, and ``<stem>.gif`` with ``--gif``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (AlignOpt, BatchOpt, ClassOpt, DeviceOpt, Fit, FitOpt, InputsArg, IntermediateOpt, Loss, Noise, NoiseOpt,
                     OverwriteOpt,
                     ResizeOpt, SeedOpt, ShardOpt, WeightsOpt, exit_with, OutDirOpt, value)
from .validate import finite

class Space(str, Enum):
    w = "w"
    w_plus = "w+"


FRAME_SIDE = 256  # progress frames are downsampled to at most this side


def _lpips(net: str, device, resolution: int = 256):
    """The LPIPS network of a run (a seam for tests, which use a random backbone)."""
    from ..metrics.lpips import get_lpips

    return get_lpips(net, device=device, resolution=resolution)


def _distance(settings, device):
    """The distance of a loss: LPIPS-VGG for the projector / overparam settings with loss lpips, LPIPS-<lpips_net>
    for tune settings with loss lpips, pixel L2 with loss l2 (no ImageNet network)."""
    from ..methods.optim import TuneSettings

    if getattr(settings, "loss", "lpips") == "l2":
        from ..metrics.l2 import L2Distance

        return L2Distance()
    if isinstance(settings, TuneSettings):
        return _lpips(settings.lpips_net, device)
    return _lpips("vgg", device, settings.loss_resolution)


# --- the method objects the pipeline calls ------------------------------------------------------------------------
class _FrameCollector:
    """Progress callback: keeps a small frame every ``every`` steps per image (becomes the results' intermediates)."""

    def __init__(self, every: int, names: list[str]) -> None:
        self.every, self.names = every, names
        self.frames: dict[int, list] = {i: [] for i in range(len(names))}

    def __call__(self, info) -> None:
        if not self.every or (info.step % self.every and info.step != info.total):
            return
        import torch.nn.functional as F

        imgs = info.images.detach().float()
        if imgs.shape[-1] > FRAME_SIDE:
            imgs = F.interpolate(imgs, size=(FRAME_SIDE, FRAME_SIDE), mode="area")
        for k, i in enumerate(info.indices):
            self.frames[i].append(imgs[k].clamp(-1, 1).half().cpu())


@dataclasses.dataclass
class OptimMethod:
    """A loaded generator + settings: ``(images (B,3,H,W) in [-1,1], names) -> list[InversionResult]``."""

    G: object  # gantune Generator
    method: str  # optim | overparam
    settings: object  # ProjectorSettings or OverparamSettings
    tune_settings: object = None  # TuneSettings for PTI, or None
    device: object = "cpu"  # torch.device
    seed: int = 0  # base seed; each image's seed is derived from it and the image name
    c: object = None  # (1, c_dim) class label of a class-conditional generator, or None
    progress_every: int = 0  # keep a frame every K steps (0 = none)
    info: dict = dataclasses.field(default_factory=dict)  # generator provenance
    _nets: tuple | None = dataclasses.field(default=None, repr=False)  # (main distance, tuning distance), once built

    def distances(self) -> tuple:
        """(main distance, tuning distance or None), built on first use: a missing LPIPS backbone fails here, with
        a one-line WeightsError that names the fetch command."""
        if self._nets is None:
            main = _distance(self.settings, self.device)
            self._nets = (main, _distance(self.tune_settings, self.device) if self.tune_settings is not None else None)
        return self._nets

    def record_meta(self) -> dict:
        gen = {k: self.info.get(k) for k in ("spec", "name", "path", "sha256") if self.info.get(k) is not None}
        return {"generator": {**gen, "config": self.G.cfg.to_dict()}}

    def __call__(self, images, names):
        from ..methods.optim import project_and_tune
        from ..methods.overparam import invert_overparam

        frames = _FrameCollector(self.progress_every, list(names)) if self.progress_every else None
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


def image_seed(seed: int, name: str) -> int:
    """A per-image seed from the run seed and the image name, so results do not depend on batch composition."""
    h = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _load_generator(weights: str, device):
    from ..weights import load_generator

    G, info = load_generator(weights, device=device)
    info = dict(info, spec=str(weights))
    return G.eval(), info


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(field_type, text: str, key: str):
    from ..errors import InputError

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
            from .validate import finite_float

            return finite_float(text, f"--param {key}")
        return text
    except ValueError:
        raise InputError(f"--param {key}={text}: not a valid {t}") from None


def _settings_from_params(cls, params: dict, prefix: str = "") -> tuple[dict, set]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out, used = {}, set()
    for k, v in params.items():
        name = k[len(prefix):] if prefix and k.startswith(prefix) else (None if prefix else k)
        if name in fields:
            out[name] = _convert(fields[name].type, v, k)
            used.add(k)
    return out, used


def setup_optim(opts):
    """``INVERT_METHODS["optim"]``: --param any ProjectorSettings field (space, num_steps, mse_weight, …), ``tune``
    (true/false), ``tune_<TuneSettings field>``, ``seed``, ``progress_every``."""
    return _setup("optim", opts)


def setup_overparam(opts):
    """``INVERT_METHODS["overparam"]``: --param any OverparamSettings field (per_layer, num_steps, …), ``seed``,
    ``progress_every``."""
    return _setup("overparam", opts)


def _setup(method: str, opts):
    from ..errors import InputError
    from ..methods.optim import ProjectorSettings, TuneSettings
    from ..methods.overparam import OverparamSettings
    from ..methods.pipeline import MethodRun
    from ..runtime import resolve_device

    params = dict(opts.params)
    seed = int(params.pop("seed", 0))
    every = int(params.pop("progress_every", 10 if opts.save_intermediate else 0))
    if method == "optim":
        kw, used = _settings_from_params(ProjectorSettings, params)
        tune = _convert(bool, params.get("tune", "false"), "tune")
        used.add("tune")
        tkw, tused = _settings_from_params(TuneSettings, params, prefix="tune_")
        used |= tused
        tkw.setdefault("loss", kw.get("loss", "lpips"))  # the tuning objective follows the projector's loss
        if opts.iters is not None:
            kw["num_steps"] = opts.iters
    else:
        kw, used = _settings_from_params(OverparamSettings, params)
        if opts.iters is not None:
            kw["num_steps"] = opts.iters
        kw.setdefault("noise_mode", "none" if opts.noise == "none" else "const")
    unknown = set(params) - used
    if unknown:
        raise InputError(f"{method} takes no --param {', '.join(sorted(unknown))}", f"see gantune invert-{method} --help")
    try:
        if method == "optim":
            settings, tune_settings = ProjectorSettings(**kw), (TuneSettings(**tkw) if tune else None)
        else:
            settings, tune_settings = OverparamSettings(**kw), None
    except ValueError as e:
        raise InputError(f"--param: {e}", f"see gantune invert-{method} --help") from None
    if not opts.weights:
        raise InputError(f"--method {method} needs the generator", "give --weights (e.g. ffhq-1024 or a .pt/.pkl path)")
    return build_method(method, opts.weights, settings, tune_settings, device=resolve_device(opts.device), seed=seed,
                        progress_every=every if opts.save_intermediate else 0, run_cls=MethodRun,
                        class_index=opts.class_index)


def build_method(method, weights, settings, tune_settings=None, *, device, seed=0, progress_every=0,
                 run_cls=None, class_index: int | None = None):
    """Load the generator and every network the run needs (so a missing LPIPS backbone fails now, before any image)
    and wrap them as a ``MethodRun``."""
    from ..methods.pipeline import MethodRun

    from ..io.record import class_label

    G, info = _load_generator(weights, device)
    c = class_label(G.cfg.c_dim, class_index, what="the generator")
    m = OptimMethod(G=G, method=method, settings=settings, tune_settings=tune_settings, device=device, seed=seed,
                    progress_every=progress_every, info=info, c=c)
    m.distances()
    if method == "optim":
        desc = f"projector: {settings.space}, {settings.num_steps} steps"
        if tune_settings is not None:
            ts = tune_settings
            desc += (f", then PTI ({'pixel MSE' if ts.loss == 'l2' else f'L2 + LPIPS-{ts.lpips_net}'}) up to "
                     f"{ts.num_steps} steps or distance <= {ts.stop_target:g}") + (f", rank {ts.rank}" if ts.rank else "")
    else:
        from ..methods.overparam import latent_rows

        desc = (f"overparameterized latent: {'W+ (one matrix per layer)' if settings.per_layer else 'W'} "
                f"{latent_rows(G, settings.rows)}x{G.cfg.w_dim}, {settings.num_steps} steps")
    desc += f"; generator {G.cfg.resolution}px on {device}"
    return (run_cls or MethodRun)(invert_batch=m, input_size=G.cfg.resolution, record_meta=m.record_meta(), describe=desc)


# --- commands ------------------------------------------------------------------------------------------------------
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")]
MseOpt = Annotated[float, typer.Option("--mse", min=0.0, help="Weight of an extra pixel MSE term (0 = LPIPS only).")]
LossOpt = Annotated[Loss, typer.Option("--loss", help="lpips (LPIPS-VGG; needs `gantune weights fetch lpips-vgg-backbone`) "
                                      "or l2 (pixel MSE only; no ImageNet network, weaker).")]
EveryOpt = Annotated[int, typer.Option("--every", min=1, help="With --save-intermediate: keep a frame every K steps.")]
GifOpt = Annotated[bool, typer.Option("--gif", help="With --save-intermediate: also write <stem>.gif of the frames.")]


def _run(method, inputs, out, settings, tune_settings, *, weights, device, seed, batch_size, shard, resize, align,
         fit, save_intermediate, every, gif, overwrite, class_index=None) -> int:
    from ..runtime import resolve_device
    from .invert_cmd import run_invert

    params = {"method": method, "weights": weights, "settings": dataclasses.asdict(settings), "seed": seed,
              "tune": None if tune_settings is None else dataclasses.asdict(tune_settings), "gif": gif,
              "every": every if save_intermediate else None}

    def setup():
        return build_method(method, weights, settings, tune_settings, device=resolve_device(device), seed=seed,
                            progress_every=every if save_intermediate else 0, class_index=class_index)

    return run_invert(inputs, Path(out), setup, params=params, batch_size=batch_size, shard=shard, overwrite=overwrite,
                      resize=resize, save_intermediate=save_intermediate, align=align, fit=fit, gif=gif, device=device,
                      class_index=class_index)


def invert_optim_command(
    inputs: InputsArg,
    weights: WeightsOpt = None,
    out: OutDirOpt = Path("out/invert-optim"),
    space: Annotated[Space, typer.Option("--space", help="w: one w for all layers (NVIDIA projector); w+: one per layer.")] = Space.w,
    steps: StepsOpt = 1000,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (ramp-up 5%, cosine ramp-down 25%).")] = 0.1,
    mse: MseOpt = 0.0,
    loss: LossOpt = Loss.lpips,
    noise_reg: Annotated[float, typer.Option("--noise-reg", min=0.0, help="Weight of the noise-map regulariser.")] = 1e5,
    optimize_noise: Annotated[bool, typer.Option("--optimize-noise/--fixed-noise", help="Optimise per-image noise maps "
                                                 "(stored in the record) or keep the generator's.")] = True,
    w_avg_samples: Annotated[int, typer.Option("--w-avg-samples", min=1, help="z samples for the start point.")] = 10_000,
    tune: Annotated[bool, typer.Option("--tune", help="Pivotal tuning (PTI) of the generator after the projection.")] = False,
    tune_steps: Annotated[int, typer.Option("--tune-steps", min=0, help="PTI step limit.")] = 350,
    tune_lr: Annotated[float, typer.Option("--tune-lr", min=0.0, callback=finite("--tune-lr"),
                                           help="PTI learning rate.")] = 3e-4,
    tune_target: Annotated[Optional[float], typer.Option(
        "--tune-target", min=0.0, callback=finite("--tune-target"), show_default=False,
        help="Stop PTI once its distance is at or below this. The tuning objective follows --loss: with lpips, "
             "L2 + LPIPS-alex and a target in LPIPS-alex (default 0.06, PTI's); with l2, pixel MSE and a target in "
             "MSE on [-1, 1] images (default 0.001, about 36 dB PSNR). the manifest's metrics say how many tuning steps ran "
             "and why they stopped.")] = None,
    tune_rank: Annotated[Optional[int], typer.Option("--tune-rank", min=1, help="Store tuned weight differences as "
                                                     "rank-r factors (default: full, fp16).", show_default=False)] = None,
    tune_locality: Annotated[bool, typer.Option("--tune-locality", help="PTI locality regulariser (for reuse of the "
                                                "tuned generator away from the pivot).")] = False,
    save_intermediate: IntermediateOpt = False,
    every: EveryOpt = 10,
    gif: GifOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 1,
    shard: ShardOpt = None,
    resize: ResizeOpt = None,
    align: AlignOpt = False,
    fit: FitOpt = Fit.crop,
    class_index: ClassOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """StyleGAN2 projector (W or W+), optionally followed by pivotal tuning. Per image: OUT/<stem>.png,
    OUT/<stem>.safetensors (record for `gantune edit` / `adapt`) and a manifest.jsonl line with its metrics.

    Example: gantune invert-optim faces/ --weights ffhq-1024 --space w --steps 500 --tune --tune-rank 8 -o out/
    """
    from ..errors import InputError
    from ..methods.optim import ProjectorSettings, TuneSettings

    space, loss = value(space), value(loss)
    if not weights:
        raise InputError("invert-optim needs the generator", "give --weights (e.g. ffhq-1024 or a .pt/.pkl path)")
    settings = ProjectorSettings(space=space, num_steps=steps, learning_rate=lr, mse_weight=mse, loss=loss,
                                 noise_regularize=noise_reg, optimize_noise=optimize_noise, w_avg_samples=w_avg_samples)
    tune_settings = TuneSettings(num_steps=tune_steps, learning_rate=tune_lr, loss=loss, stop_at=tune_target,
                                 rank=tune_rank, locality=tune_locality) if tune else None
    exit_with(_run("optim", inputs, out, settings, tune_settings, weights=weights, device=device, seed=seed,
                  batch_size=batch_size, shard=shard, resize=resize, align=align, fit=value(fit),
                  save_intermediate=save_intermediate, every=every, gif=gif, overwrite=overwrite,
                  class_index=class_index))


def invert_overparam_command(
    inputs: InputsArg,
    weights: WeightsOpt = None,
    out: OutDirOpt = Path("out/invert-overparam"),
    per_layer: Annotated[bool, typer.Option("--per-layer", help="One latent matrix per layer (the paper's W+).")] = False,
    steps: StepsOpt = 1000,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.")] = 0.05,
    truncation: Annotated[float, typer.Option("--truncation", min=0.01, max=1.0, help="Pull toward the mean before "
                                              "each step of the first half (1 = off).")] = 0.9,
    mse: MseOpt = 0.0,
    loss: LossOpt = Loss.lpips,
    noise: NoiseOpt = Noise.const,
    w_avg_samples: Annotated[int, typer.Option("--w-avg-samples", min=1, help="z samples for the mean.")] = 10_000,
    save_intermediate: IntermediateOpt = False,
    every: EveryOpt = 10,
    gif: GifOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 1,
    shard: ShardOpt = None,
    resize: ResizeOpt = None,
    align: AlignOpt = False,
    fit: FitOpt = Fit.crop,
    overwrite: OverwriteOpt = False,
) -> None:
    """Overparameterized-latent inversion (latent matrix W, rows from the mean; works on standard checkpoints too).
    Same outputs as invert-optim; the record stores W (fp16).

    Example: gantune invert-overparam faces/ --weights ffhq-1024 --steps 1000 -o out/
    """
    from ..errors import InputError
    from ..methods.overparam import OverparamSettings

    loss, noise = value(loss), value(noise)
    if noise == "random":
        raise InputError("invert-overparam --noise random: a record made with random noise cannot be re-rendered",
                         "use const or none")
    if not weights:
        raise InputError("invert-overparam needs the generator", "give --weights (e.g. ffhq-1024 or a .pt/.pkl path)")
    settings = OverparamSettings(per_layer=per_layer, loss=loss, num_steps=steps, learning_rate=lr, truncation=truncation,
                                 mse_weight=mse, noise_mode=noise, w_avg_samples=w_avg_samples)
    exit_with(_run("overparam", inputs, out, settings, None, weights=weights, device=device, seed=seed,
                  batch_size=batch_size, shard=shard, resize=resize, align=align, fit=value(fit),
                  save_intermediate=save_intermediate, every=every, gif=gif, overwrite=overwrite))


def register(app: typer.Typer) -> None:
    app.command("invert-optim")(invert_optim_command)
    app.command("invert-overparam")(invert_overparam_command)
    from . import invert_cmd

    invert_cmd.INVERT_METHODS["optim"] = setup_optim
    invert_cmd.INVERT_METHODS["overparam"] = setup_overparam
