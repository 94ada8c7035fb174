"""Shared CLI pieces: option aliases (each defined once), progress output, and the error-to-message mapping."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True, highlight=False)

# --- option aliases ---------------------------------------------------------------------------------------------
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Compute dtype: float32, bfloat16 (fast on CPUs with AMX and on GPUs) or float16.")]
ChannelsLastOpt = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="channels-last memory layout for the convolutions (default: on for CPU).", show_default=False)]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]
WeightsOpt = Annotated[str, typer.Option("--weights", "-w", help="Generator: a registry name (gantune weights list), a path (.pt, .pkl, .safetensors) or a URL.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")]
NoiseOpt = Annotated[str, typer.Option("--noise", help="Noise inputs: const (stored buffers, reproducible), random or none.")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Process only shard i of n (i/n, 0-based); default from torchrun's RANK/WORLD_SIZE.")]
InputsArg = Annotated[list[str], typer.Argument(help="Image files, folders, globs, or - to read paths from stdin.", show_default=False)]


def is_terminal() -> bool:
    return sys.stderr.isatty()


class Progress:
    """A rich progress bar on a terminal, plain one-line messages otherwise (logs, pipes, CI)."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description, self.done = total, description, 0
        self._rich = None
        self._t0 = time.perf_counter()
        if is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeRemainingColumn

            self._rich = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, transient=False)
            self._task = self._rich.add_task(description, total=total)

    def __enter__(self) -> "Progress":
        if self._rich:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich:
            self._rich.__exit__(*exc)

    def advance(self, message: str = "", n: int = 1) -> None:
        self.done += n
        if self._rich:
            self._rich.advance(self._task, n)
            if message:
                self._rich.console.print(message)
        elif message:
            console.print(f"[{self.done}/{self.total}] {message}")


@contextmanager
def timed():
    t = {"s": 0.0}
    t0 = time.perf_counter()
    try:
        yield t
    finally:
        t["s"] = time.perf_counter() - t0


def debug_enabled() -> bool:
    return os.environ.get("GANTUNE_DEBUG", "") not in ("", "0", "false", "no")


def fail(message: str, code: int = 2) -> "typer.Exit":
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def failure_message(e: BaseException) -> str:
    """One-line message for one failed item of a batch (the batch goes on). Errors that are not known user errors
    (bugs) are re-raised, and so is everything when GANTUNE_DEBUG is set."""
    from .app import _known_error_message

    msg = _known_error_message(e)
    if msg is None or debug_enabled():
        raise e
    return msg
