"""``gantune invert`` (any method, chosen with ``--method``) and ``gantune invert-hyper`` (HyperStyle).

Methods plug in through ``INVERT_METHODS``: name -> ``setup(InvertOptions) -> MethodRun`` (see
:mod:`gantune.methods.pipeline`). Another command module adds its own entry when it registers, e.g.::

    from .invert_cmd import INVERT_METHODS
    INVERT_METHODS["optim"] = setup_optim
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import BatchOpt, DeviceOpt, DtypeOpt, InputsArg, NoiseOpt, OutDirOpt, Progress, ShardOpt, console


def _setup_hyperstyle(opts):
    from ..methods.hyper.method import setup_hyperstyle

    return setup_hyperstyle(opts)


INVERT_METHODS: dict = {"hyperstyle": _setup_hyperstyle}

MethodWeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="Method checkpoint: for hyperstyle the HyperStyle file (hypernetwork + generator), a registry "
    "name (default hyperstyle-ffhq), a path or a URL.", show_default=False)]
EncoderOpt = Annotated[Optional[str], typer.Option(
    "--encoder", help="W-encoder for the initial latent (default w-encoder-ffhq = faces_w_encoder.pt).", show_default=False)]
ItersOpt = Annotated[Optional[int], typer.Option("--iters", min=0, help="Refinement iterations (hyperstyle default 5).",
                                                 show_default=False)]
IntermediateOpt = Annotated[bool, typer.Option("--save-intermediate", help="Also write intermediate/<t>/<stem>.png for every iteration (0 = the W-encoder image).")]
ResizeOpt = Annotated[Optional[int], typer.Option("--resize", min=8, help="Write the reconstruction PNG at this side (e.g. 256) "
                                                  "instead of the generator resolution.", show_default=False)]
AlignOpt = Annotated[bool, typer.Option("--align/--no-align", help="FFHQ-align each photo first (dlib; first/largest face). "
                                        "The crop transform goes into the record.")]
HalfDeltasOpt = Annotated[bool, typer.Option("--fp16-deltas", help="Store the offsets as float16 (half the record size).")]


def run_invert(method: str, inputs: list[str], out: Path, *, weights, encoder, iters, params: list[str] | None,
               batch_size: int, device: str, dtype: str, noise: str, save_intermediate: bool, resize, shard,
               align: bool, fp16_deltas: bool) -> int:
    """Shared body of both commands. Returns the number of failed images."""
    import torch

    from ..errors import InputError
    from ..io.inputs import expand_inputs, parse_shard
    from ..io.images import IMAGE_SUFFIXES
    from ..methods.pipeline import InvertOptions, run_pipeline

    if method not in INVERT_METHODS:
        raise InputError(f"unknown method {method!r}", f"choose one of {', '.join(sorted(INVERT_METHODS))}")
    kv = {}
    for p in params or []:
        if "=" not in p:
            raise InputError(f"--param {p!r} is not KEY=VALUE")
        k, v = p.split("=", 1)
        kv[k.strip()] = v.strip()
    paths = expand_inputs(inputs, suffixes=IMAGE_SUFFIXES)
    shard_t = parse_shard(shard)
    aligner = None
    if align:
        from ..align import FaceAligner

        aligner = FaceAligner(size=1024).load()
    opts = InvertOptions(weights=weights, encoder=encoder, iters=iters, device=device, dtype=dtype, noise=noise,
                         batch_size=batch_size, save_intermediate=save_intermediate, params=kv)
    run = INVERT_METHODS[method](opts)
    if run.describe:
        console.print(run.describe)
    n = len(paths[shard_t[0]::shard_t[1]])
    with Progress(n, f"invert ({method})") as bar:
        summary = run_pipeline(paths, out, run, batch_size=batch_size, shard=shard_t, resize=resize,
                               save_intermediate=save_intermediate,
                               delta_dtype=torch.float16 if fp16_deltas else torch.float32,
                               aligner=aligner, progress=bar.advance)
    per = summary.seconds / max(1, summary.ok + summary.failed)
    console.print(f"{summary.ok} inverted, {summary.failed} failed, {per:.2f} s/image; manifest: {out / 'manifest.jsonl'}")
    return summary.failed


def invert_command(
    inputs: InputsArg,
    out: OutDirOpt = Path("out/invert"),
    method: Annotated[str, typer.Option("--method", "-m", help="Inversion method: hyperstyle, optim (W/W+ projector, PTI with --param tune=true) or overparam.")] = "hyperstyle",
    weights: MethodWeightsOpt = None,
    encoder: EncoderOpt = None,
    iters: ItersOpt = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Method-specific KEY=VALUE (repeatable).",
                                                       show_default=False)] = None,
    batch_size: BatchOpt = 1,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    noise: NoiseOpt = "const",
    save_intermediate: IntermediateOpt = False,
    resize: ResizeOpt = None,
    shard: ShardOpt = None,
    align: AlignOpt = False,
    fp16_deltas: HalfDeltasOpt = False,
) -> None:
    """Invert photos into the generator. Per image: OUT/<stem>.png, OUT/<stem>.safetensors (record for `gantune edit`
    / `gantune adapt`) and a manifest.jsonl line. A bad image is reported and skipped; exit code 1 if any failed.

    Example: gantune invert photos/ --method hyperstyle -o out/ --iters 5 --batch-size 4
    """
    failed = run_invert(method, inputs, out, weights=weights, encoder=encoder, iters=iters, params=param,
                        batch_size=batch_size, device=device, dtype=dtype, noise=noise,
                        save_intermediate=save_intermediate, resize=resize, shard=shard, align=align,
                        fp16_deltas=fp16_deltas)
    if failed:
        raise typer.Exit(1)


def invert_hyper_command(
    inputs: InputsArg,
    out: OutDirOpt = Path("out/invert"),
    weights: MethodWeightsOpt = None,
    encoder: EncoderOpt = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Hypernetwork passes (the official default is 5).")] = 5,
    batch_size: BatchOpt = 1,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    noise: NoiseOpt = "const",
    save_intermediate: IntermediateOpt = False,
    resize: ResizeOpt = None,
    shard: ShardOpt = None,
    align: AlignOpt = False,
    fp16_deltas: HalfDeltasOpt = False,
) -> None:
    """HyperStyle inversion (same as `gantune invert --method hyperstyle`).

    Example: gantune invert-hyper face.jpg -o out/ --weights hyperstyle-ffhq --encoder w-encoder-ffhq --resize 256
    """
    failed = run_invert("hyperstyle", inputs, out, weights=weights, encoder=encoder, iters=iters, params=None,
                        batch_size=batch_size, device=device, dtype=dtype, noise=noise,
                        save_intermediate=save_intermediate, resize=resize, shard=shard, align=align,
                        fp16_deltas=fp16_deltas)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("invert")(invert_command)
    app.command("invert-hyper")(invert_hyper_command)
