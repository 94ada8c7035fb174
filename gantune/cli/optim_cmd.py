"""``gantune invert-optim`` (W / W+ projector, optional PTI) and ``gantune invert-overparam`` (latent matrix).

Both are also ``gantune invert --method optim|overparam`` (the methods of :mod:`gantune.methods.optim_run`, in the
registry; method options as ``--param KEY=VALUE``, e.g. ``--param space=w+ --param tune=true``). Inputs, outputs, records, manifest and error
handling are the shared batch pipeline's (:mod:`gantune.methods.pipeline`); on top of it these commands write
per-image metrics in the manifest (final L2, LPIPS, steps, seconds) and, with ``--save-intermediate --every K``, a frame every K steps
(``intermediate/<t>/<stem>.png``, and ``<stem>.gif`` with ``--gif``).
"""

from __future__ import annotations

import dataclasses
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


# --- commands ------------------------------------------------------------------------------------------------------
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")]
MseOpt = Annotated[float, typer.Option("--mse", min=0.0, help="Weight of an extra pixel MSE term (0 = LPIPS only).")]
LossOpt = Annotated[Loss, typer.Option("--loss", help="lpips (LPIPS-VGG; needs `gantune weights fetch lpips-vgg-backbone`) "
                                      "or l2 (pixel MSE only; no ImageNet network, weaker).")]
EveryOpt = Annotated[int, typer.Option("--every", min=1, help="With --save-intermediate: keep a frame every K steps.")]
GifOpt = Annotated[bool, typer.Option("--gif", help="With --save-intermediate: also write <stem>.gif of the frames.")]


def _run(method, inputs, out, settings, tune_settings, *, weights, device, seed, batch_size, shard, resize, align,
         fit, save_intermediate, every, gif, overwrite, class_index=None) -> int:
    from ..methods.optim_run import build_method
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
