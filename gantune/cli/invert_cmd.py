"""``gantune invert`` (any method, chosen with ``--method``) and ``gantune invert-hyper`` (HyperStyle).

Methods come from the one registry, :mod:`gantune.methods.registry` (name -> ``setup(InvertOptions) -> MethodRun``),
which the Python API uses too; :class:`Method` lists the same names for the command line's choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (AlignOpt, BatchOpt, ClassOpt, DeviceOpt, DtypeOpt, Fit, FitOpt, InputsArg, IntermediateOpt, Noise,
                     NoiseOpt, OverwriteOpt, ResizeOpt, SeedOpt, ShardOpt, WeightsOpt, console, exit_with, input_items,
                     OutDirOpt, run_batch, shard_of, value, with_shared_options, writers_for)


def setup_method(method: str, opts):
    """The registry's method (imported here: the command line starts without torch)."""
    from ..methods.registry import setup

    return setup(method, opts)


class Method(str, Enum):
    hyperstyle = "hyperstyle"
    optim = "optim"
    overparam = "overparam"
    e4e = "e4e"
    restyle_e4e = "restyle-e4e"


EncoderOpt = Annotated[Optional[str], typer.Option(
    "--encoder", help="Encoder: hyperstyle's initial latent (default w-encoder-ffhq = faces_w_encoder.pt; an e4e or ReStyle-e4e file is recognised and used as such), or the e4e / restyle-e4e file of those methods (default e4e-ffhq / restyle-e4e-ffhq).", show_default=False)]
HalfDeltasOpt = Annotated[bool, typer.Option("--fp16-deltas", help="Store the offsets as float16 (half the record size).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="HyperStyle on CUDA: torch.compile the generator (about a minute once; then 1.3-1.6x faster at --batch-size 32 in bfloat16 on an H200). For folders, not single photos.")]
EveryOpt = Annotated[int, typer.Option("--every", min=1, help="With --save-intermediate: keep a frame every K steps.")]
GifOpt = Annotated[bool, typer.Option("--gif", help="With --save-intermediate: also write <stem>.gif of the frames.")]


# --- the run options of every invert command, each defined once ------------------------------------------------------
@dataclass
class RunOptions:
    """How an invert command runs (not which method): each command takes the options it names in
    :func:`with_run_options`, in its order; the others keep these defaults."""

    batch_size: int = 1
    device: str = "auto"
    dtype: str = "float32"
    noise: Noise | None = Noise.const
    save_intermediate: bool = False
    every: int = 10  # optim / overparam: a frame every K steps
    gif: bool = False
    seed: int = 0
    resize: int | None = None
    shard: str | None = None
    align: bool = False
    fit: Fit = Fit.crop
    fp16_deltas: bool = False
    compile: bool = False
    class_index: int | None = None
    overwrite: bool = False


RUN_OPTIONS = {"batch_size": BatchOpt, "device": DeviceOpt, "dtype": DtypeOpt, "noise": NoiseOpt,
               "save_intermediate": IntermediateOpt, "every": EveryOpt, "gif": GifOpt, "seed": SeedOpt,
               "resize": ResizeOpt, "shard": ShardOpt, "align": AlignOpt, "fit": FitOpt, "fp16_deltas": HalfDeltasOpt,
               "compile": CompileOpt, "class_index": ClassOpt, "overwrite": OverwriteOpt}  # RunOptions field -> option
INVERT_RUN = ("batch_size", "device", "dtype", "noise", "save_intermediate", "resize", "shard", "align", "fit",
              "fp16_deltas", "compile")  # invert and invert-hyper
OPTIM_RUN = ("save_intermediate", "every", "gif", "seed", "device", "batch_size", "shard", "resize", "align",
             "fit")  # invert-optim and invert-overparam


def with_run_options(*names: str) -> Callable:
    """Decorator: the command takes its own options, then the run options ``names`` (fields of :class:`RunOptions`,
    the options of :data:`RUN_OPTIONS`), which it receives together as ``run``."""
    defaults = {f.name: f.default for f in fields(RunOptions)}
    return with_shared_options([(n, RUN_OPTIONS[n], defaults[n]) for n in names], RunOptions)


def run_invert(inputs: list[str], out: Path, setup: Callable[[], object], *, params: dict, run: RunOptions) -> int:
    """The body of every invert command: plan and check the outputs, skip what is done, then load the method
    (``setup()`` -> MethodRun) and run the batch. Returns the exit code."""
    import torch

    from ..io.images import IMAGE_SUFFIXES
    from ..io.runner import Batch
    from ..methods.pipeline import InvertJob

    resize, align, fit, class_index = run.resize, run.align, value(run.fit), run.class_index
    job = InvertJob(resize=resize, save_intermediate=run.save_intermediate,
                    delta_dtype=torch.float16 if run.fp16_deltas else torch.float32, fit=fit, gif=run.gif)
    params = {**params, "resize": resize, "align": align, "fit": None if align else fit, "fp16_deltas": run.fp16_deltas,
              "save_intermediate": run.save_intermediate, **({"class": class_index} if class_index is not None else {})}
    batch = Batch("invert", input_items(inputs, suffixes=IMAGE_SUFFIXES), out, params=params, planned=job.planned,
                  shard=shard_of(run.shard), overwrite=run.overwrite)
    if not batch.prepare() and not batch.missing:
        console.print(f"nothing to do: all {len(batch.skipped)} inputs are done (--overwrite redoes them); "
                      f"manifest: {batch.manifest_path}")
        return 0
    if batch.todo:
        job.use(setup(), class_index)
    if align and batch.todo:
        from ..align import FaceAligner

        job.aligner = FaceAligner(size=1024).load()
    if job.method is not None and job.method.describe:
        console.print(job.method.describe)
    # files written while the next batch runs: on GPUs only (see writers_for)
    from ..runtime import resolve_device

    writers = writers_for(resolve_device(run.device)) if job.method is not None else 0
    return run_batch(batch, "inverted", load=job.load, process=job.process, write=job.write,
                     batch_size=run.batch_size, writers=writers)


def _check_compile_device(compile: bool, device: str) -> None:
    """``--compile`` off CUDA fails before anything else, even in a run whose inputs are all done."""
    if compile:
        from ..runtime import check_compile_device, resolve_device

        check_compile_device(resolve_device(device))


def _params(method: str, weights, encoder, iters, kv: dict, dtype, noise) -> dict:
    return {"method": method, "weights": weights, "encoder": encoder, "iters": iters, "param": kv, "dtype": dtype,
            "noise": noise}


def parse_params(params: list[str] | None) -> dict:
    from ..errors import InputError

    kv = {}
    for p in params or []:
        if "=" not in p:
            raise InputError(f"--param {p!r} is not KEY=VALUE", "e.g. --param space=w+")
        k, v = p.split("=", 1)
        kv[k.strip()] = v.strip()
    return kv


@with_run_options(*INVERT_RUN, "class_index", "overwrite")
def invert_command(
    inputs: InputsArg,
    out: OutDirOpt = Path("out/invert"),
    method: Annotated[Method, typer.Option("--method", "-m", help="hyperstyle (encoder + hypernetwork; --param initial=e4e|restyle-e4e takes the initial latent from that encoder), optim (W/W+ projector; PTI with --param tune=true), overparam (latent matrix), e4e or restyle-e4e (encoder only, W+; --encoder is the e4e / ReStyle file, --weights the generator, default ffhq-1024).")] = Method.hyperstyle,
    weights: WeightsOpt = None,
    encoder: EncoderOpt = None,
    iters: Annotated[Optional[int], typer.Option("--iters", min=0, help="Refinement iterations (hyperstyle, default 5; restyle-e4e, default 5 as ReStyle's inference — the domain-adaptation script uses 2) or optimisation steps (optim, overparam).", show_default=False)] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Method-specific KEY=VALUE (repeatable), e.g. --param space=w+ --param tune=true.", show_default=False)] = None,
    *,
    run: RunOptions,
) -> None:
    """Invert photos into the generator. Per image: OUT/<stem>.png, OUT/<stem>.safetensors (record for `gantune edit`
    / `gantune adapt`) and one manifest.jsonl line. --weights: hyperstyle's checkpoint (default hyperstyle-ffhq),
    the generator for optim / overparam (required). A bad image is reported and skipped (exit code 1); a re-run
    skips images already done.

    Example: gantune invert photos/ --method hyperstyle -o out/ --iters 5 --batch-size 4
    """
    exit_with(_invert(value(method), inputs, out, weights, encoder, iters, param, run))


@with_run_options(*INVERT_RUN, "overwrite")
def invert_hyper_command(
    inputs: InputsArg,
    out: OutDirOpt = Path("out/invert-hyper"),
    weights: WeightsOpt = None,
    encoder: EncoderOpt = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Hypernetwork passes (the official default is 5).")] = 5,
    *,
    run: RunOptions,
) -> None:
    """HyperStyle inversion (same as `gantune invert --method hyperstyle`). --weights: the HyperStyle checkpoint
    (hypernetwork + generator; default hyperstyle-ffhq).

    Example: gantune invert-hyper face.jpg -o out/ --weights hyperstyle-ffhq --encoder w-encoder-ffhq --resize 256
    """
    exit_with(_invert("hyperstyle", inputs, out, weights, encoder, iters, None, run))


def _invert(method: str, inputs, out, weights, encoder, iters, param: list[str] | None, run: RunOptions) -> int:
    """``gantune invert --method METHOD`` (and invert-hyper): the registry's method with these options and ``--param``
    KEY=VALUE pairs. Returns the exit code."""
    from ..errors import InputError
    from ..methods.pipeline import InvertOptions

    dtype, noise = value(run.dtype), value(run.noise)
    if run.compile and method != "hyperstyle":
        raise InputError(f"--compile is for --method hyperstyle, not {method}", "drop --compile")
    _check_compile_device(run.compile, run.device)
    kv = parse_params(param)
    opts = InvertOptions(weights=weights, encoder=encoder, iters=iters, device=run.device, dtype=dtype, noise=noise,
                         batch_size=run.batch_size, save_intermediate=run.save_intermediate, params=kv,
                         compile=run.compile, class_index=run.class_index)
    return run_invert(inputs, out, lambda: setup_method(method, opts),
                      params=_params(method, weights, encoder, iters, kv, dtype, noise), run=run)


def register(app: typer.Typer) -> None:
    app.command("invert")(invert_command)
    app.command("invert-hyper")(invert_hyper_command)
