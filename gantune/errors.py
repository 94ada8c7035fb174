"""Known errors. Each carries a one-line message that says what to do; the CLI prints it without a traceback."""

from __future__ import annotations

import errno
import os


class GantuneError(Exception):
    """Base class of errors that are the user's input, not a bug. ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        msg = str(self).strip().replace("\n", " ")
        return f"{msg} ({self.hint})" if self.hint else msg


class WeightsError(GantuneError):
    """A checkpoint that cannot be found, downloaded, verified or imported."""


class OfflineError(WeightsError):
    """The network is unreachable and the file is not in the cache."""


class InputError(GantuneError):
    """Bad command-line input (paths, ranges, options)."""


class RenderError(GantuneError):
    """A render that cannot be written: the generator produced NaN or infinite pixel values."""


def debug_enabled() -> bool:
    """``GANTUNE_DEBUG`` set: show tracebacks instead of one-line errors."""
    return os.environ.get("GANTUNE_DEBUG", "") not in ("", "0", "false", "no")


def known_error_message(e: BaseException) -> str | None:
    """The one mapping from an exception to the one line the user sees, or None for a bug (shown as a traceback).
    Used by the CLI's top level and by the batch runner for each failed item."""
    if isinstance(e, GantuneError):
        return e.one_line()
    if isinstance(e, IsADirectoryError):
        return f"{e.filename or e}: is a folder; give a file path"
    if isinstance(e, FileNotFoundError):
        return f"{e.filename or e}: no such file"
    if isinstance(e, PermissionError):
        return f"{e.filename or e}: permission denied"
    if is_disk_full(e):
        where = getattr(e, "filename", None) or "output"
        return f"{where}: no space left on the device; free some space or choose another -o folder"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return f"{e.filename or e}: read-only file system; choose a folder on a writable file system"
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return "out of memory; try a smaller --batch-size, --dtype bfloat16, or --device cpu"
    return None


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC (or EDQUOT), also when a writer wraps it in its own error (safetensors: "No space left on device (os
    error 28)")."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return not isinstance(e, OSError) and "No space left on device" in str(e)
