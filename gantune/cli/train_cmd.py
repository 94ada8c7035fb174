"""``gantune train``: the training command group. This module owns the group (``train_app``) and ``generator``;
other modules add their commands with ``from .train_cmd import train_app`` and ``@train_app.command("name")``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, SeedOpt, console, is_terminal, renamed
from .validate import finite

RUN_HINT = "give a run folder that can be written; it is created if missing"
train_app = typer.Typer(help="Train generators and encoders.", no_args_is_help=True)


@train_app.callback()
def _train_group() -> None:
    """Train generators and encoders. Multi-GPU / multi-node: launch the same command with torchrun."""


def _fmt(stats: dict) -> str:
    keys = ("loss_G", "loss_D", "D_real", "D_fake", "distill_L1", "pl_penalty", "r1")
    parts = [f"kimg {stats['nimg'] / 1000:.2f}/{stats['total'] / 1000:g}"]
    parts += [f"{k} {stats[k]:.3f}" for k in keys if k in stats]
    parts.append(f"{stats['img_per_s']:.1f} img/s")
    return "  ".join(parts)


class _Display:
    """Rich bar with the latest losses on a terminal; a plain line every ``every`` seconds otherwise."""

    def __init__(self, total: int, start: int, every: float) -> None:
        self.every, self._last = every, 0.0
        self._rich = None
        if is_terminal():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.fields[info]}"),
                                  TimeRemainingColumn(), console=console)
            self._task = self._rich.add_task("train", total=total, completed=start, info="")

    def __enter__(self):
        if self._rich:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc):
        if self._rich:
            self._rich.__exit__(*exc)

    def __call__(self, stats: dict) -> None:
        if self._rich:
            self._rich.update(self._task, completed=stats["nimg"], info=_fmt(stats))
            return
        now = time.perf_counter()
        if now - self._last >= self.every or stats["nimg"] >= stats["total"]:
            self._last = now
            console.print(f"step {stats['step']}  {_fmt(stats)}", soft_wrap=True)


# the old spellings (one release): --noise/--no-noise (now a noise mode elsewhere), --keep (directions fit's
# directions to keep unchanged) and --log-every (steps in the encoder trainers)
OldNoiseOpt = Annotated[Optional[bool], typer.Option("--noise/--no-noise", hidden=True, show_default=False)]
OldKeepOpt = Annotated[Optional[int], typer.Option("--keep", min=1, hidden=True, show_default=False)]
OldLogEveryOpt = Annotated[Optional[float], typer.Option("--log-every", callback=finite("--log-every", minimum=0),
                                                         hidden=True, show_default=False)]


@train_app.command("generator")
def generator_command(
    data: Annotated[str, typer.Option("--data", help="A folder of images, or 'synthetic-faces' (DCGAN faces; non-commercial licence).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: snapshots, checkpoints, log (created if missing).")] = Path("runs/generator"),
    resolution: Annotated[int, typer.Option("--resolution", "-r", help="Image side (power of two; 32 and up for real use).")] = 64,
    kimg: Annotated[float, typer.Option("--kimg", callback=finite("--kimg", above=0), help="Train until this many thousand real images have been shown.")] = 1000.0,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Global batch (split over torchrun processes).")] = 32,
    snap: Annotated[float, typer.Option("--snap", callback=finite("--snap", above=0), help="Snapshot grid + checkpoint every N kimg.")] = 50.0,
    overparam: Annotated[bool, typer.Option("--overparam/--standard", help="Overparameterized latent matrix (Poirier-Ginter et al. 2022).")] = False,
    latent_rows: Annotated[Optional[int], typer.Option("--latent-rows", help="Rows of the latent matrix (default: the widest layer's channels).")] = None,
    z_dim: Annotated[int, typer.Option("--z-dim", help="Latent z size (and w size unless --w-dim).")] = 512,
    w_dim: Annotated[Optional[int], typer.Option("--w-dim", help="Intermediate latent w size (default --z-dim).")] = None,
    mapping_layers: Annotated[Optional[int], typer.Option("--mapping-layers", help="Mapping depth (default 8; 2 with --overparam).")] = None,
    noise_inputs: Annotated[Optional[bool], typer.Option("--noise-inputs/--no-noise-inputs", help="Noise inputs in the architecture (default on; off with --overparam).", show_default=False)] = None,
    channel_base: Annotated[int, typer.Option("--channel-base", help="Channels at resolution r: min(base / r, max).")] = 16384,
    channel_max: Annotated[int, typer.Option("--channel-max", help="Cap on channels per layer.")] = 512,
    lr: Annotated[float, typer.Option("--lr", callback=finite("--lr", above=0), help="Adam learning rate of G and D.")] = 0.0025,
    gamma: Annotated[Optional[float], typer.Option("--gamma", callback=finite("--gamma", minimum=0), help="R1 weight (default 0.0002·res²/batch).")] = None,
    r1_interval: Annotated[int, typer.Option("--r1-interval", help="Lazy R1 every N D steps; 0 = off.")] = 16,
    pl_weight: Annotated[float, typer.Option("--pl-weight", help="Path-length weight; 0 = off.")] = 2.0,
    pl_interval: Annotated[int, typer.Option("--pl-interval", help="Lazy path-length every N G steps.")] = 4,
    style_mixing: Annotated[float, typer.Option("--style-mixing", callback=finite("--style-mixing", minimum=0, maximum=1), help="Style-mixing probability (whole matrices per layer range with --overparam).")] = 0.9,
    ema_kimg: Annotated[Optional[float], typer.Option("--ema-kimg", callback=finite("--ema-kimg", minimum=0), help="EMA half-life in kimg (default batch·10/32).")] = None,
    mbstd_group: Annotated[int, typer.Option("--mbstd-group", help="Minibatch-stddev group size.")] = 4,
    xflip: Annotated[bool, typer.Option("--xflip/--no-xflip", help="Random horizontal flips of folder images.")] = False,
    resume: Annotated[str, typer.Option("--resume", help="auto (newest state in --out), none, or a training-state-*.pt file.")] = "auto",
    d_warmup: Annotated[Optional[float], typer.Option("--d-warmup", callback=finite("--d-warmup", minimum=0), help="Train D alone (G frozen) for the first N kimg; default 2 with --grow-from (a fresh D's first gradients would wreck the grown layers), else 0.")] = None,
    freeze_grown: Annotated[Optional[float], typer.Option("--freeze-grown", callback=finite("--freeze-grown", minimum=0), help="With --grow-from: only the new top block trains until N kimg (default: the whole run; the grown layers stay as trained).")] = None,
    grow_from: Annotated[Optional[str], typer.Option("--grow-from", help="When starting from scratch: a generator of half the resolution with the same options; its layers are copied and the new top block starts from its upsampled images.")] = None,
    distill: Annotated[float, typer.Option("--distill", callback=finite("--distill", minimum=0), help="With --data synthetic-faces: weight of a teacher term, the mean |G(z) − DCGAN(z)| on the samples that do not mix styles (z's first 100 entries are the DCGAN's latent; the matrix's shared row with --overparam), added to the adversarial loss; 0 = off.")] = 0.0,
    distill_only: Annotated[float, typer.Option("--distill-only", callback=finite("--distill-only", minimum=0), help="With --distill: the first N kimg train G on the teacher term alone (no discriminator, no style mixing; about 3× faster a step), then the adversarial loss joins.")] = 0.0,
    distill_lr: Annotated[float, typer.Option("--distill-lr", callback=finite("--distill-lr", above=0), help="G's Adam learning rate during --distill-only (momentum 0.9).")] = 0.01,
    keep_last: Annotated[int, typer.Option("--keep-last", min=1, help="Training states to keep in --out, and network-*.safetensors snapshots to keep (the newest of each).")] = 2,
    log_seconds: Annotated[float, typer.Option("--log-seconds", callback=finite("--log-seconds", minimum=0), help="Seconds between progress lines when not on a terminal.")] = 30.0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch (default: torch's).")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    noise: OldNoiseOpt = None,
    keep: OldKeepOpt = None,
    log_every: OldLogEveryOpt = None,
) -> None:
    """Train a StyleGAN2 generator (standard or overparameterized) and write native checkpoints to --out.

    Resumes from the newest training state in --out by default. Multi-GPU / multi-node: run the same command
    under torchrun (nccl on GPU, gloo on CPU); --batch stays the global batch.

    Example: gantune train generator --data synthetic-faces -r 32 --channel-max 128 --batch 16 --kimg 500 -o runs/faces32
    """
    import torch

    from ..io.atomic import check_folder  # gantune.io loads torch: not at the CLI's start
    from ..train.generator import GeneratorRunSettings

    noise = renamed(noise_inputs, noise, old="--noise/--no-noise", new="--noise-inputs/--no-noise-inputs")
    keep = renamed(keep_last, keep, old="--keep", new="--keep-last", default=2)
    log_seconds = renamed(log_seconds, log_every, old="--log-every", new="--log-seconds", default=30.0)
    check_folder(out, f"-o {out}", RUN_HINT)
    if threads:
        torch.set_num_threads(threads)
    settings = GeneratorRunSettings(
        data=data, resolution=resolution, kimg=kimg, snap=snap, keep=keep, resume=resume, xflip=xflip,
        overparam=overparam, latent_rows=latent_rows, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
        noise=noise, channel_base=channel_base, channel_max=channel_max, grow_from=grow_from, d_warmup=d_warmup,
        freeze_grown=freeze_grown, batch=batch, lr=lr, gamma=gamma, r1_interval=r1_interval, pl_weight=pl_weight,
        pl_interval=pl_interval, style_mixing=style_mixing, ema_kimg=ema_kimg, mbstd_group=mbstd_group,
        distill=distill, distill_only=distill_only, distill_lr=distill_lr, seed=seed)
    _train_generator(settings, out, device, log_seconds)


GROW_HINT = "train the smaller generator with the same options, or leave out --grow-from"


def _train_generator(s, out: Path, device: str, log_seconds: float) -> None:
    """The run of ``s`` (a GeneratorRunSettings) in ``out`` on every torchrun process: fresh, grown or resumed."""
    from ..errors import InputError
    from ..io.atomic import exit_on_sigterm
    from ..runtime import resolve_device
    from ..train import ddp
    from ..train.checkpoint import resolve_resume
    from ..train.generator import train

    try:
        cfg, opts = s.config(), s.options()
    except ValueError as e:
        raise InputError(str(e), hint="see gantune train generator --help") from None
    # a bad --grow-from fails before the data is opened
    small = _grown_base(s.grow_from, cfg) if s.grow_from and resolve_resume(s.resume, out) is None else None
    dist = ddp.setup(resolve_device(device))
    try:
        source, trainer, state_file = _start(s, cfg, opts, dist, out, small)
        if dist.is_main:
            console.print(f"{cfg.describe()}; D mirrors its channels", soft_wrap=True)
            console.print(f"data: {s.data}; batch {s.batch} over {dist.world} process(es) on {dist.device}; "
                          + (f"resumed from {state_file.name} at kimg {trainer.nimg / 1000:g}" if state_file
                             else f"grown from {s.grow_from}" if s.grow_from else "from scratch"), soft_wrap=True)
            if hasattr(source, "license_note"):
                console.print(f"[yellow]licence:[/] {source.license_note}", soft_wrap=True)
        meta = {"data": source.describe(), "command": "gantune train generator", "world": dist.world}
        if hasattr(source, "license_note"):
            meta["license"] = "non-commercial (DigiFace-1M)"
        with exit_on_sigterm(), _Display(int(round(s.kimg * 1000)), trainer.nimg, log_seconds) as display:
            last = train(trainer, run_dir=out, kimg=s.kimg, snap_kimg=s.snap, keep_states=s.keep, meta=meta,
                         on_tick=display)
        if dist.is_main and last is not None:
            console.print(f"wrote {last}")
    finally:
        ddp.teardown()


def _grown_base(spec: str, cfg):
    """The --grow-from generator (on the CPU), refused in one line unless it is ``cfg`` at half the resolution."""
    from ..errors import InputError
    from ..train.generator import check_growable
    from ..weights import load_generator

    small, _ = load_generator(spec, "cpu")
    try:
        check_growable(small.cfg, cfg)
    except ValueError as e:
        raise InputError(str(e), hint=GROW_HINT) from None
    return small


def _start(s, cfg, opts, dist, out: Path, small):
    """(data source, trainer, the state it resumed from or None): resumed from --resume's state, else grown from
    ``small`` (the --grow-from generator), else fresh."""
    from ..errors import InputError
    from ..train.checkpoint import load_state, resolve_resume
    from ..train.data import open_source
    from ..train.generator import GeneratorTrainer

    source = open_source(s.data, s.resolution, dist.device, xflip=s.xflip)
    try:
        trainer = GeneratorTrainer(cfg, opts, source, dist=dist)
    except ValueError as e:
        hint = ("use --data synthetic-faces, or leave out --distill" if "distill" in str(e)
                else "--batch must split evenly over processes and minibatch-stddev groups")
        raise InputError(str(e), hint=hint) from None
    state_file = resolve_resume(s.resume, out)
    if state_file is not None:
        trainer.load_state_dict(load_state(state_file))
    elif small is not None:
        try:
            fresh = trainer.grow_from(small.to(dist.device))
        except ValueError as e:
            raise InputError(str(e), hint=GROW_HINT) from None
        if dist.is_main:
            console.print(f"grown from {s.grow_from}: {len(fresh)} new tensors (the {s.resolution} px block)",
                          soft_wrap=True)
    return source, trainer, state_file


def register(app: typer.Typer) -> None:
    """Adds the ``train`` group once; other modules only add commands to ``train_app``."""
    app.add_typer(train_app, name="train")
