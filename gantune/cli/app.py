"""The ``gantune`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from ..errors import debug_enabled, known_error_message
from ..process import choices_setting, configure_process
from .common import console

app = typer.Typer(
    name="gantune",
    help=(
        "Put real photos into a pretrained StyleGAN2 and edit them.\n\n"
        "Examples:\n\n"
        "  gantune weights list\n\n"
        "  gantune generate --weights ffhq-1024 --seeds 0-7 --truncation 0.7 -o samples/\n\n"
        "  gantune invert photo.jpg --method hyperstyle -o out/\n\n"
        "Set GANTUNE_DEBUG=1 to see tracebacks."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Command modules: each defines ``register(app)``; add a module here to add a command (group).
import importlib  # noqa: E402

COMMAND_MODULES = ["weights_cmd", "generate_cmd", "align_cmd", "invert_cmd", "edit_cmd", "adapt_cmd", "optim_cmd", "interpolate_cmd", "train_cmd", "train_enc_cmd", "directions_cmd", "eval_cmd"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def _warning_as_note(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (Pillow, torch, …) reach the user as one line, without source locations."""
    text = " ".join(str(message).split())
    console.print(f"note: {text[:300]}{'…' if len(text) > 300 else ''}")


class _ConsoleNotes(logging.Handler):
    """gantune's log notes (``logging.getLogger("gantune")``) as plain lines on the console."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(record.getMessage(), markup=False)


def _notes_to_console() -> None:
    log = logging.getLogger("gantune")
    if not any(isinstance(h, _ConsoleNotes) for h in log.handlers):
        log.addHandler(_ConsoleNotes())
        log.propagate = False


def main(argv: list[str] | None = None) -> None:
    import warnings

    configure_process()  # this process's threads, OpenMP waiting and allocator (before torch loads)

    if not debug_enabled():
        warnings.showwarning = _warning_as_note
    _notes_to_console()
    try:
        choices_setting()  # a GANTUNE_CHOICES that cannot be followed: one line, before any work
        code = app(args=argv, standalone_mode=False)  # usage errors come back here, to be said in one line
    except SystemExit:
        raise
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # one place that turns known errors into one line
        if _is_usage_error(e):
            sys.exit(_usage_error(e))
        msg = known_error_message(e)
        if msg is None or debug_enabled():
            raise
        console.print(f"[bold red]error:[/] {msg}")
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(e: BaseException) -> bool:
    """Click's own errors (bad option values, unknown options, missing arguments), which Typer lets through."""
    module = type(e).__module__
    return (module.startswith("click.") or module.startswith("typer._click.")) and hasattr(e, "format_message")


def _usage_error(e) -> int:
    if type(e).__name__ == "NoArgsIsHelpError":  # a bare command: its help
        console.print(e.format_message(), markup=False, highlight=False)
        return 0
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "gantune"
    text = " ".join(e.format_message().replace("Value error, ", "").split())
    console.print(f"[bold red]error:[/] {escape(text)} (see {where} --help)")
    return getattr(e, "exit_code", 2)
