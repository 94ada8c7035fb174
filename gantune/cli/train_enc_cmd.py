"""``gantune train w-encoder`` and ``gantune train hypernet``: the HyperStyle encoders for any generator.

Both commands are thin adapters over :mod:`gantune.train.encoders`; they attach to the ``train`` group of
:mod:`.train_cmd` (this module must be registered after it)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, RewritingCommand, SeedOpt, console, renamed, with_shared_options
from .train_cmd import RUN_HINT
from .validate import finite

GeneratorOpt = Annotated[str, typer.Option("--generator", "-g", help="Generator to invert: a registry name, path or URL.")]
DataOpt = Annotated[str, typer.Option("--data", help="synthetic (images rendered by the generator, w known), "
                                      "synthetic-faces (DCGAN faces) or a folder of images.")]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps (batches) in total, counting a resumed run's.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")]
LrOpt = Annotated[float, typer.Option("--lr", callback=finite("--lr", above=0), help="Ranger learning rate (reference 1e-4).")]
L2Opt = Annotated[float, typer.Option("--l2-lambda", callback=finite("--l2-lambda", minimum=0), help="Weight of the pixel L2 loss.")]
PercOpt = Annotated[float, typer.Option("--lpips-lambda", callback=finite("--lpips-lambda", minimum=0), help="Weight of LPIPS (or its MS-SSIM substitute when the "
                                        "LPIPS backbone is not available).")]
SimOpt = Annotated[float, typer.Option("--sim-lambda", "--id-lambda", callback=finite("--sim-lambda", minimum=0), help="Weight of the identity loss (reference "
                                       "id_lambda 0.1): dlib's face network where the target has a face, the "
                                       "discriminator-feature substitute elsewhere.")]
IdentityLossOpt = Annotated[str, typer.Option("--identity-loss", help="auto: dlib's face-recognition ResNet for targets in which "
                                          "dlib finds a face, if dlib and its model are installed; dlib: the same, an "
                                          "error if they are not; off: only the discriminator substitute.")]
OldIdentityOpt = Annotated[Optional[str], typer.Option("--identity", hidden=True, show_default=False)]  # one release
DiscOpt = Annotated[Optional[Path], typer.Option("--discriminator", help="training-state-*.pt of `gantune train generator`: "
                                                 "its discriminator's features stand in for the identity network on "
                                                 "targets without a detected face (or everywhere with --identity-loss off).",
                                                 show_default=False)]
LpipsNetOpt = Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: alex (reference) or vgg.")]
SaveEveryOpt = Annotated[int, typer.Option("--save-every", min=1, help="Write the model file and the resume state every N steps.")]
ResumeOpt = Annotated[str, typer.Option("--resume", help="auto (OUT/train_state.pt if there is one), none, or a "
                                        "train_state.pt file to continue from (copied into OUT).")]
# the old flag (one release): --no-resume, and --resume without a value (read as --resume-old-flag by _TrainCommand)
OLD_RESUME_FLAG = "--resume-old-flag"
OldResumeOpt = Annotated[Optional[bool], typer.Option(f"{OLD_RESUME_FLAG}/--no-resume", hidden=True, show_default=False)]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: torch's; "
                                                   "use 1 per process when other jobs share the cores).")]
TruncOpt = Annotated[float, typer.Option("--truncation", callback=finite("--truncation"), help="ψ for --data synthetic.")]
WidthOpt = Annotated[int, typer.Option("--width", min=16, help="Encoder stem channels, stages ×1,2,4,8 (official 64; "
                                       "16–32 for compact models of small generators).")]
InputSizeOpt = Annotated[int, typer.Option("--input-size", min=64, help="Side of the encoder's input images (official "
                                           "256; 64 for a 32–64 px generator). Stored in the file's opts.")]
LogStepsOpt = Annotated[int, typer.Option("--log-steps", min=1, help="Print losses every N steps.")]
OldLogEveryOpt = Annotated[Optional[int], typer.Option("--log-every", min=1, hidden=True, show_default=False)]  # one release
# (parameter, option, default): the run options both trainers take after their own, in this order (see _with_run)
RUN_OPTIONS = (("truncation", TruncOpt, 1.0), ("width", WidthOpt, 64), ("input_size", InputSizeOpt, 256),
               ("save_every", SaveEveryOpt, 500), ("resume", ResumeOpt, "none"), ("old_resume", OldResumeOpt, None),
               ("threads", ThreadsOpt, None), ("device", DeviceOpt, "auto"), ("seed", SeedOpt, 0),
               ("log_steps", LogStepsOpt, 10), ("old_log_every", OldLogEveryOpt, None))


def _run_options(**values) -> SimpleNamespace:
    """The trainers' run options, the old ``--log-every`` read as ``--log-steps`` (with its note)."""
    run = SimpleNamespace(**values)
    run.log_steps = renamed(run.log_steps, run.old_log_every, old="--log-every", new="--log-steps", default=10)
    return run


_with_run = with_shared_options(list(RUN_OPTIONS), _run_options)


class _TrainCommand(RewritingCommand):
    """The trainers' command: ``--resume`` without a value (the old flag) is read as the hidden --resume-old-flag."""

    def rewrite(self, i: int, args: list[str]) -> None:
        if args[i] == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            args[i] = OLD_RESUME_FLAG


def _resume(run, out: Path) -> bool:
    """The run folder checked, then --resume as the trainers take it (True: continue from OUT/train_state.pt): none,
    auto (that state if there is one) or a state file, copied there (a different state of the folder's own is never
    replaced). The old flag (--resume alone, --no-resume) works for one release, with a note naming the new
    spelling."""
    from ..errors import InputError
    from ..io.atomic import atomic_path, check_folder  # gantune.io loads torch: not at the CLI's start
    from ..train.encoders import STATE_FILE

    check_folder(out, f"-o {out}", RUN_HINT)
    state = out / STATE_FILE
    if run.old_resume is not None:
        old, new = ("--resume without a value", str(state)) if run.old_resume else ("--no-resume", "none")
        if run.resume != "none":
            raise InputError(f"{old} and --resume {run.resume} are both given", "give --resume once: auto, none or a file")
        console.print(f"note: {old} is the old spelling of --resume {new}; it goes in the next release", soft_wrap=True)
        return run.old_resume
    if run.resume in ("none", "auto"):
        return run.resume == "auto" and state.is_file()
    given = Path(run.resume)
    if not given.is_file():
        raise InputError(f"--resume {given}: no such training state", "use --resume auto, none or a train_state.pt file")
    if not state.exists():
        with atomic_path(state) as tmp:
            shutil.copyfile(given, tmp)
    elif not (state.samefile(given) or filecmp.cmp(state, given, shallow=False)):
        raise InputError(f"-o {out} holds a training state of its own, which --resume {given} would replace",
                         "give --resume auto to continue it, or another -o")
    return True


def _identity_loss(identity_loss: str, old: str | None) -> str:
    """--identity-loss, or its old name --identity (for one release, with a note naming the new one)."""
    return renamed(identity_loss, old, old="--identity", new="--identity-loss", default="auto")


def _setup(generator: str, data: str, discriminator: Optional[Path], run):
    """The generator, the data and the discriminator (after :func:`_resume` has checked the run folder)."""
    from ..runtime import resolve_device
    from ..train.encoders import open_data
    from ..train.substitutes import load_discriminator
    from ..weights import load_generator

    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    dev = resolve_device(run.device)
    G, info = load_generator(generator, device=dev)
    G = G.eval().requires_grad_(False)
    src = open_data(data, G, truncation=run.truncation, device=dev)
    D = load_discriminator(discriminator, dev) if discriminator is not None else None
    note = getattr(src, "license_note", None)
    if note:
        console.print(f"note: {note}", soft_wrap=True)
    return dev, G, info, src, D


def _options(run, **kw):
    """The trainer's settings: the run options' and ``kw``."""
    from ..train.encoders import EncoderTrainOptions

    return EncoderTrainOptions(seed=run.seed, save_every=run.save_every, truncation=run.truncation, width=run.width,
                               input_size=run.input_size, **kw)


def _reporter(steps: int, every: int):
    def report(step: int, row: dict) -> None:
        if step == 1 or step % every == 0 or step == steps:
            terms = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "seconds"))
            console.print(f"step {step}/{steps}  {terms}  ({row['seconds']:.2f} s)", soft_wrap=True)

    return report


@_with_run
def w_encoder_command(
    generator: GeneratorOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: w_encoder.pt, train_state.pt, log.jsonl.")] = Path("runs/w-encoder"),
    data: DataOpt = "synthetic",
    steps: StepsOpt = 20000,
    batch_size: BatchSizeOpt = 8,
    lr: LrOpt = 1e-4,
    l2_lambda: L2Opt = 1.0,
    lpips_lambda: PercOpt = 0.8,
    latent_lambda: Annotated[float, typer.Option("--latent-lambda", callback=finite("--latent-lambda", minimum=0), help="Weight of ‖w − w_true‖² (--data synthetic only).")] = 1.0,
    sim_lambda: SimOpt = 0.1,
    identity_loss: IdentityLossOpt = "auto",
    identity: OldIdentityOpt = None,
    discriminator: DiscOpt = None,
    lpips_net: LpipsNetOpt = "alex",
    depth: Annotated[str, typer.Option("--depth", help="IR-SE units per stage: 50 (IR-SE-50: 3,4,14,3), or four "
                                       "comma-separated counts such as 1,1,1,1 for tiny/demo models.")] = "50",
    *,
    run: SimpleNamespace,  # RUN_OPTIONS
) -> None:
    """Train the W-encoder that gives HyperStyle its initial latent (L2 + λ·LPIPS + λ·identity [+ λ·latent]).

    Example: gantune train w-encoder --generator runs/g/network-000100000.safetensors --depth 1,1,1,1 -o runs/enc
    """
    from ..errors import InputError
    from ..methods.hyper.wencoder import IR_SE_50_UNITS
    from ..io.atomic import exit_on_sigterm
    from ..train.encoders import train_w_encoder

    if depth.strip() == "50":
        units = IR_SE_50_UNITS
    else:
        try:
            units = tuple(int(v) for v in depth.split(","))
        except ValueError:
            units = ()
        if len(units) != 4 or min(units) < 1:
            raise InputError(f"--depth {depth!r}: 50, or four unit counts >= 1 like 1,1,1,1")
    identity, resume = _identity_loss(identity_loss, identity), _resume(run, out)
    dev, G, info, src, D = _setup(generator, data, discriminator, run)
    opts = _options(run, steps=steps, batch_size=batch_size, lr=lr, l2_lambda=l2_lambda, perceptual_lambda=lpips_lambda,
                    sim_lambda=sim_lambda, identity=identity, latent_lambda=latent_lambda, lpips_net=lpips_net)
    console.print(f"W-encoder IR-SE units {units}, width {run.width}, input {run.input_size} px for {generator} ({G.cfg.resolution}px, {G.num_ws} W+ rows) on {dev}")
    with exit_on_sigterm():
        res = train_w_encoder(G, src, out, opts=opts, units=units, device=dev, resume=resume, discriminator=D,
                              on_step=_reporter(steps, run.log_steps),
                              on_notes=lambda n: console.print(f"note: {n}", soft_wrap=True))
    console.print(f"{res.step} steps; W-encoder: {res.model_path} (resume state {res.state_path})")


@_with_run
def hypernet_command(
    generator: GeneratorOpt,
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Trained W-encoder (w_encoder.pt from `train w-encoder`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: hypernet.pt, train_state.pt, log.jsonl.")] = Path("runs/hypernet"),
    data: DataOpt = "synthetic",
    steps: StepsOpt = 20000,
    batch_size: BatchSizeOpt = 8,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Refinement passes T per batch, each with its loss (reference 5).")] = 5,
    levels: Annotated[str, typer.Option("--levels", help="Tuned layer levels, comma-separated: coarse, medium, fine.")] = "medium,fine",
    layers: Annotated[Optional[str], typer.Option("--layers", help="Explicit tuned layers (b64.conv0,… or convs.8,…); "
                                                  "overrides --levels.", show_default=False)] = None,
    torgb: Annotated[bool, typer.Option("--torgb/--no-torgb", help="Also tune the toRGB layers of those levels.")] = False,
    lr: LrOpt = 1e-4,
    l2_lambda: L2Opt = 1.0,
    lpips_lambda: PercOpt = 0.8,
    sim_lambda: SimOpt = 0.1,
    identity_loss: IdentityLossOpt = "auto",
    identity: OldIdentityOpt = None,
    discriminator: DiscOpt = None,
    lpips_net: LpipsNetOpt = "alex",
    *,
    run: SimpleNamespace,  # RUN_OPTIONS
) -> None:
    """Train the HyperStyle hypernetwork (T passes per batch, loss at each; Ranger). The output loads with
    `gantune invert --method hyperstyle --weights OUT/hypernet.pt --encoder ENCODER`.

    Example: gantune train hypernet -g runs/g/network-000100000.safetensors -e runs/enc/w_encoder.pt -o runs/hyper
    """
    from ..io.atomic import exit_on_sigterm
    from ..methods.hyper.checkpoint import load_w_encoder
    from ..train.encoders import train_hypernet

    identity, resume = _identity_loss(identity_loss, identity), _resume(run, out)
    dev, G, info, src, D = _setup(generator, data, discriminator, run)
    enc, _ = load_w_encoder(encoder, num_ws=G.num_ws, device=dev, hash_file=False)
    opts = _options(run, steps=steps, batch_size=batch_size, lr=lr, l2_lambda=l2_lambda, perceptual_lambda=lpips_lambda,
                    sim_lambda=sim_lambda, identity=identity, lpips_net=lpips_net)
    names = [v.strip() for v in layers.split(",") if v.strip()] if layers else None
    lv = tuple(v.strip() for v in levels.split(",") if v.strip())
    with exit_on_sigterm():
        res = train_hypernet(G, enc, src, out, opts=opts, iters=iters, levels=lv, layers=names, include_torgb=torgb,
                             device=dev, resume=resume, discriminator=D, on_step=_reporter(steps, run.log_steps),
                             on_notes=lambda n: console.print(f"note: {n}", soft_wrap=True))
    console.print(f"{res.step} steps; hypernetwork: {res.model_path} (resume state {res.state_path})")
    console.print(f"invert with: gantune invert IMAGES --method hyperstyle --weights {res.model_path} --encoder {encoder}")


def register(app: typer.Typer) -> None:
    from .train_cmd import train_app

    train_app.command("w-encoder", cls=_TrainCommand)(w_encoder_command)
    train_app.command("hypernet", cls=_TrainCommand)(hypernet_command)
