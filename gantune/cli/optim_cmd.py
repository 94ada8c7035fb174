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

from .common import InputsArg, Loss, Noise, NoiseOpt, OutDirOpt, WeightsOpt, exit_with, value
from .invert_cmd import OPTIM_RUN, RunOptions, run_invert, setup_method, with_run_options
from .validate import finite


class Space(str, Enum):
    w = "w"
    w_plus = "w+"


# --- commands ------------------------------------------------------------------------------------------------------
# Each typed option is named after the settings field it sets (ProjectorSettings, tune_<TuneSettings field>,
# OverparamSettings): invert-optim --space w+ is invert --method optim --param space=w+.
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")]
MseOpt = Annotated[float, typer.Option("--mse", min=0.0, help="Weight of an extra pixel MSE term (0 = LPIPS only).")]
LossOpt = Annotated[Loss, typer.Option("--loss", help="lpips (LPIPS-VGG; needs `gantune weights fetch lpips-vgg-backbone`) "
                                      "or l2 (pixel MSE only; no ImageNet network, weaker).")]


def _run_method(method: str, inputs, out, weights, fields: dict, run: RunOptions) -> int:
    """``gantune invert --method METHOD`` with the typed options ``fields`` (named after the settings fields) as its
    ``--param`` pairs, and the manifest parameters these commands write."""
    from ..errors import InputError
    from ..methods.optim_run import run_settings
    from ..methods.pipeline import InvertOptions

    if not weights:
        raise InputError(f"invert-{method} needs the generator", "give --weights (e.g. ffhq-1024 or a .pt/.pkl path)")
    kv = {k: value(v) for k, v in fields.items()}
    opts = InvertOptions(weights=weights, device=run.device, save_intermediate=run.save_intermediate,
                         params={**kv, "seed": run.seed, "progress_every": run.every}, class_index=run.class_index)
    settings, tune_settings, _, _ = run_settings(method, opts)
    params = {"method": method, "weights": weights, "settings": dataclasses.asdict(settings), "seed": run.seed,
              "tune": None if tune_settings is None else dataclasses.asdict(tune_settings), "gif": run.gif,
              "every": run.every if run.save_intermediate else None}
    return run_invert(inputs, Path(out), lambda: setup_method(method, opts), params=params, run=run)


@with_run_options(*OPTIM_RUN, "class_index", "overwrite")
def invert_optim_command(
    inputs: InputsArg,
    weights: WeightsOpt = None,
    out: OutDirOpt = Path("out/invert-optim"),
    space: Annotated[Space, typer.Option("--space", help="w: one w for all layers (NVIDIA projector); w+: one per layer.")] = Space.w,
    num_steps: StepsOpt = 1000,
    learning_rate: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (ramp-up 5%, cosine ramp-down 25%).")] = 0.1,
    mse_weight: MseOpt = 0.0,
    loss: LossOpt = Loss.lpips,
    noise_regularize: Annotated[float, typer.Option("--noise-reg", min=0.0, help="Weight of the noise-map regulariser.")] = 1e5,
    optimize_noise: Annotated[bool, typer.Option("--optimize-noise/--fixed-noise", help="Optimise per-image noise maps "
                                                 "(stored in the record) or keep the generator's.")] = True,
    w_avg_samples: Annotated[int, typer.Option("--w-avg-samples", min=1, help="z samples for the start point.")] = 10_000,
    tune: Annotated[bool, typer.Option("--tune", help="Pivotal tuning (PTI) of the generator after the projection.")] = False,
    tune_num_steps: Annotated[int, typer.Option("--tune-steps", min=0, help="PTI step limit.")] = 350,
    tune_learning_rate: Annotated[float, typer.Option("--tune-lr", min=0.0, callback=finite("--tune-lr"),
                                                      help="PTI learning rate.")] = 3e-4,
    tune_stop_at: Annotated[Optional[float], typer.Option(
        "--tune-target", min=0.0, callback=finite("--tune-target"), show_default=False,
        help="Stop PTI once its distance is at or below this. The tuning objective follows --loss: with lpips, "
             "L2 + LPIPS-alex and a target in LPIPS-alex (default 0.06, PTI's); with l2, pixel MSE and a target in "
             "MSE on [-1, 1] images (default 0.001, about 36 dB PSNR). the manifest's metrics say how many tuning steps ran "
             "and why they stopped.")] = None,
    tune_rank: Annotated[Optional[int], typer.Option("--tune-rank", min=1, help="Store tuned weight differences as "
                                                     "rank-r factors (default: full, fp16).", show_default=False)] = None,
    tune_locality: Annotated[bool, typer.Option("--tune-locality", help="PTI locality regulariser (for reuse of the "
                                                "tuned generator away from the pivot).")] = False,
    *,
    run: RunOptions,
) -> None:
    """StyleGAN2 projector (W or W+), optionally followed by pivotal tuning. Per image: OUT/<stem>.png,
    OUT/<stem>.safetensors (record for `gantune edit` / `adapt`) and a manifest.jsonl line with its metrics.

    Example: gantune invert-optim faces/ --weights ffhq-1024 --space w --steps 500 --tune --tune-rank 8 -o out/
    """
    fields = dict(space=space, num_steps=num_steps, learning_rate=learning_rate, mse_weight=mse_weight, loss=loss,
                  noise_regularize=noise_regularize, optimize_noise=optimize_noise, w_avg_samples=w_avg_samples,
                  tune=tune, tune_num_steps=tune_num_steps, tune_learning_rate=tune_learning_rate,
                  tune_stop_at=tune_stop_at, tune_rank=tune_rank, tune_locality=tune_locality)
    exit_with(_run_method("optim", inputs, out, weights, fields, run))


@with_run_options(*OPTIM_RUN, "overwrite")
def invert_overparam_command(
    inputs: InputsArg,
    weights: WeightsOpt = None,
    out: OutDirOpt = Path("out/invert-overparam"),
    per_layer: Annotated[bool, typer.Option("--per-layer", help="One latent matrix per layer (the paper's W+).")] = False,
    num_steps: StepsOpt = 1000,
    learning_rate: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.")] = 0.05,
    truncation: Annotated[float, typer.Option("--truncation", min=0.01, max=1.0, help="Pull toward the mean before "
                                              "each step of the first half (1 = off).")] = 0.9,
    mse_weight: MseOpt = 0.0,
    loss: LossOpt = Loss.lpips,
    noise_mode: NoiseOpt = Noise.const,
    w_avg_samples: Annotated[int, typer.Option("--w-avg-samples", min=1, help="z samples for the mean.")] = 10_000,
    *,
    run: RunOptions,
) -> None:
    """Overparameterized-latent inversion (latent matrix W, rows from the mean; works on standard checkpoints too).
    Same outputs as invert-optim; the record stores W (fp16).

    Example: gantune invert-overparam faces/ --weights ffhq-1024 --steps 1000 -o out/
    """
    from ..errors import InputError

    if value(noise_mode) == "random":
        raise InputError("invert-overparam --noise random: a record made with random noise cannot be re-rendered",
                         "use const or none")
    fields = dict(per_layer=per_layer, num_steps=num_steps, learning_rate=learning_rate, truncation=truncation,
                  mse_weight=mse_weight, loss=loss, noise_mode=noise_mode, w_avg_samples=w_avg_samples)
    exit_with(_run_method("overparam", inputs, out, weights, fields, run))


def register(app: typer.Typer) -> None:
    app.command("invert-optim")(invert_optim_command)
    app.command("invert-overparam")(invert_overparam_command)
