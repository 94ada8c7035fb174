"""Known errors. Each carries a one-line message that says what to do; the CLI prints it without a traceback."""

from __future__ import annotations


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
