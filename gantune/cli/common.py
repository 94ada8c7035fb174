"""Shared CLI pieces: every option used by more than one command is defined here once, progress output, and the
glue between a command and the batch runner (:mod:`gantune.io.runner`)."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand

from ..errors import InputError


console = Console(stderr=True, highlight=False, soft_wrap=True)


# --- fixed choices (checked by Typer, listed in --help) ---------------------------------------------------------
class Noise(str, Enum):
    const = "const"
    random = "random"
    none = "none"


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    auto = "auto"


class Loss(str, Enum):
    lpips = "lpips"
    l2 = "l2"


class Fit(str, Enum):
    crop = "crop"
    pad = "pad"


def value(v):
    """The plain value of an Enum choice (or the value itself)."""
    return v.value if isinstance(v, Enum) else v


# --- option aliases ---------------------------------------------------------------------------------------------
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Compute dtype. bfloat16 is fast on GPUs and on CPUs with AMX / AVX512-BF16 (HyperStyle at 1024 px: 2.2-2.5x on a 2-core AMX Xeon, images within 0.08 of float32) and about 10x slower elsewhere; auto picks bfloat16 where the hardware computes it, float32 elsewhere.")]
ChannelsLastOpt = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="channels-last memory layout for the convolutions (default: on for CPU).", show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", "-w", help="The checkpoint to use: a registry name (gantune weights list), a path (.pt, .pkl, .safetensors) or a URL. The default is in the command's help.", show_default=False)]
def out_folder(text: str) -> Path:
    """``-o`` as given: an empty value is refused (``Path("")`` would be the current folder)."""
    if not str(text).strip():
        raise InputError("-o is empty", "give a folder for the outputs; it is created if missing")
    return Path(text)


OutDirOpt = Annotated[Path, typer.Option("--out", "-o", parser=out_folder, help="Output folder (created if missing).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
ClassOpt = Annotated[Optional[int], typer.Option("--class", min=0, help="Class-conditional generators (stylegan2-ada c_dim > 0): the class index K (one-hot label); stored in each record. Refused for unconditional generators.", show_default=False)]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")]
NoiseOpt = Annotated[Optional[Noise], typer.Option("--noise", help="Noise inputs: const (the generator's stored maps, reproducible), random or none; edit and adapt default to the record's own.", show_default=False)]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Process only shard i of n (i/n, 0-based); default from torchrun's RANK/WORLD_SIZE.", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo items already done (by default a re-run skips inputs whose outputs exist with the same input and parameters).")]
ResizeOpt = Annotated[Optional[int], typer.Option("--resize", min=8, help="Write images at this width (e.g. 256; the height keeps the aspect) instead of the generator resolution.", show_default=False)]
AlignOpt = Annotated[bool, typer.Option("--align/--no-align", help="FFHQ-align each photo first (dlib; largest face); the crop transform goes into the record.")]
FitOpt = Annotated[Fit, typer.Option("--fit", help="Inputs of another aspect than the method's (square; 4:3 for cars): crop (the centre) or pad (edge colour); the manifest says which.")]
IntermediateOpt = Annotated[bool, typer.Option("--save-intermediate", help="Also keep intermediate frames in OUT/intermediate/<t>/<stem>.png (iterations, or every --every steps).")]
IdentityOpt = Annotated[bool, typer.Option("--identity/--no-identity", help="Put in the manifest each image's identity distance to the unedited reconstruction (dlib's face-recognition ResNet; below 0.6 dlib calls it the same person).")]
InputsArg = Annotated[list[str], typer.Argument(help="Image files, folders, globs, or - to read paths from stdin.", show_default=False)]
RecordsArg = Annotated[list[str], typer.Argument(help="Inversion records (.safetensors from gantune invert), folders, globs, or - to read paths from stdin.", show_default=False)]



# --- renamed options (one meaning per name across the commands): the old spelling works for one release --------
def renamed(value, old_value, *, old: str, new: str, default=None):
    """A renamed option's value: ``value`` (given as ``new``) or, for one release, the hidden old spelling's
    ``old_value`` (None when not given) with a one-line note naming the new spelling; both given is an error. On/off
    flags name both forms: ``old="--noise/--no-noise"``."""
    if old_value is None:
        return value
    shown = f" ({new} {old_value})"
    if isinstance(old_value, bool):
        old, new, shown = old.split("/")[1 - old_value], new.split("/")[1 - old_value], ""
    if value != default:
        raise InputError(f"{old} is the old name of {new}, and both are given", f"give {new} only")
    console.print(f"note: {old} is now {new}{shown}; the old name goes in the next release", soft_wrap=True)
    return old_value


class RewritingCommand(TyperCommand):
    """A command that rewrites old spellings among its arguments (those before ``--``) before parsing them."""

    def rewrite(self, i: int, args: list[str]) -> None:
        """Rewrites ``args[i]`` (and its neighbours) in place where it is an old spelling."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        args = list(args)
        for i, a in enumerate(args):
            if a == "--":
                break
            self.rewrite(i, args)
        return super().parse_args(ctx, args)


def dropped_short_flags(**flags: str) -> type:
    """A command class for which the short flags ``flags`` (``s="--size"``: ``-s`` means ``--size``) now mean something
    else in other commands and are no longer declared here (Click cannot hide one name of an option): for one release
    they still work, read as the long option with a one-line note."""

    class Command(RewritingCommand):
        def rewrite(self, i: int, args: list[str]) -> None:
            a = args[i]
            old = a[:2]
            new = flags.get(old[1:]) if a.startswith("-") and not a.startswith("--") else None
            if new is None:
                return
            if any(b == new or b.startswith(new + "=") for b in args):
                raise InputError(f"{old} is the old name of {new}, and both are given", f"give {new} only")
            given = a[2:] or (args[i + 1] if i + 1 < len(args) else "")
            args[i] = f"{new}={a[2:]}" if a[2:] else new
            console.print(f"note: {old} is now {new} ({new} {given}); the old name goes in the next release",
                          soft_wrap=True)

    return Command


def is_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """Items done, and progress inside the current item (iterations, steps): a rich bar on a terminal, plain lines
    otherwise (one per item, and one every ``every`` seconds inside a long item)."""

    def __init__(self, total: int, description: str, *, every: float | None = None) -> None:
        if every is None:  # seconds between lines inside an item when not on a terminal
            every = float(os.environ.get("GANTUNE_PROGRESS_EVERY", "5"))
        self.total, self.description, self.done, self.every = total, description, 0, every
        self._rich = None
        self._label = ""
        self._last = time.perf_counter()
        if is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeRemainingColumn

            self._rich = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[inner]}"), console=console, transient=False)
            self._task = self._rich.add_task(description, total=total, inner="")

    def __enter__(self) -> "Progress":
        if self._rich:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich:
            self._rich.__exit__(*exc)

    def begin(self, label: str) -> None:
        """The item(s) now running."""
        self._label = label
        self._last = time.perf_counter()
        if self._rich:
            self._rich.update(self._task, inner=label)

    def step(self, done: int, total: int, what: str = "step") -> None:
        """Progress inside the current item."""
        text = f"{self._label}: {what} {done}/{total}"
        if self._rich:
            self._rich.update(self._task, inner=text)
        elif time.perf_counter() - self._last >= self.every:
            self._last = time.perf_counter()
            console.print(f"[{self.done}/{self.total}] {text}")

    def advance(self, message: str = "", n: int = 1) -> None:
        self.done += n
        if self._rich:
            self._rich.update(self._task, advance=n, inner="")
            if message:
                self._rich.console.print(message)
        elif message:
            console.print(f"[{self.done}/{self.total}] {message}")
        self._last = time.perf_counter()


def write_workers() -> int:
    """Threads that write a batch's files while the next batch runs on a GPU: half the cores, 1 to 8 (PNG encoding
    releases the GIL: 2 threads wrote 1.85x as many 1024 px PNGs a second as 1 on a 2-core CPU)."""
    return min(8, max(1, (os.cpu_count() or 1) // 2))


def writers_for(device) -> int:  # a torch.device
    """Writer threads for a batch command whose batches run on ``device``: :func:`write_workers` on CUDA, where a
    1024 px image renders in about a millisecond and its PNG takes 0.2 s to encode; none on CPU, where renders take
    seconds, overlap measured no faster and the writer thread's malloc arena added 70-80 MiB to peak memory."""
    return write_workers() if device.type == "cuda" else 0


def run_batch(batch, verb: str, *, load=None, process=None, write, batch_size: int = 1, writers: int = 0) -> int:
    """Run a prepared :class:`~gantune.io.runner.Batch` with a progress display, print the summary line and return
    the exit code (1 if any item failed). ``writers`` > 0: writes overlap the next batch (``write`` must only write
    files and touch its own item)."""
    todo = batch.todo + batch.missing
    if batch.skipped:
        console.print(f"{len(batch.skipped)} already done, skipped (--overwrite redoes them)")
    with Progress(len(todo), batch.command) as bar:
        summary = batch.run(load=load, process=process, write=write, batch_size=batch_size, progress=bar,
                            write_workers=writers)
    per = f", {summary.seconds / max(1, summary.ok + summary.failed):.2f} s each" if summary.ok + summary.failed else ""
    skipped = f", {summary.skipped} skipped" if summary.skipped else ""
    console.print(f"{summary.ok} {verb}, {summary.failed} failed{skipped}{per}; manifest: {summary.manifest}")
    return summary.exit_code


def identity_metric(wanted: bool, *, load: bool = True) -> tuple[bool, str | None]:
    """``--identity`` (a side metric of edit and adapt): on only where dlib and its models are at hand. Returns
    (on, note): where it is wanted but unavailable, the job runs without it (instead of failing every record) and
    ``note`` says why, for :func:`print_identity_note` once the job knows it has records to do. Asked before the
    batch's params are fixed (``load=False``: the files are found, not loaded), its manifest records whether the
    metric is computed."""
    if not wanted:
        return False, None
    from ..metrics.identity import unavailable

    why = unavailable(load=load)
    return why is None, None if why is None else f"note: no identity distances ({why}); --no-identity hides this note"


def print_identity_note(note: str | None, todo) -> None:
    if note is not None and todo:
        console.print(note)


def exit_with(code: int) -> None:
    if code:
        raise typer.Exit(code)


def input_items(inputs: list[str], *, suffixes: tuple[str, ...]):
    """Expanded inputs (files, folders, globs, ``-``) as runner items with their fixed output stems."""
    from ..io.inputs import expand_inputs
    from ..io.runner import Item, output_stems

    paths = expand_inputs(inputs, suffixes=suffixes)
    return [Item(name=s, input=p) for p, s in zip(paths, output_stems(paths))]


def shard_of(shard: str | None) -> tuple[int, int]:
    from ..io.inputs import parse_shard

    return parse_shard(shard)


def with_shared_options(options: list[tuple[str, object, object]], make: Callable[..., object]) -> Callable:
    """Decorator: the command as Typer sees it takes its own options, then ``options`` ((parameter, annotated
    option, default), in that order), which it receives together as ``run = make(**values)``."""

    def decorate(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "run"]
        tail = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in options]

        @functools.wraps(fn)
        def command(**kw):
            return fn(**{p.name: kw[p.name] for p in own}, run=make(**{n: kw[n] for n, _, _ in options}))

        command.__signature__ = inspect.Signature(own + tail)
        command.__annotations__ = {p.name: p.annotation for p in own + tail}
        return command

    return decorate
