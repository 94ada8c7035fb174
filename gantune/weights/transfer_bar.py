"""The progress of one download: a rich byte bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys
import time


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def human_bytes(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class TransferBar:
    """A rich byte-progress bar on a terminal; start, every-10 % and end lines otherwise; nothing when disabled."""

    def __init__(self, enabled: bool, label: str, total: int | None, done: int) -> None:
        self.enabled, self.label, self.total, self.done = enabled, label, total, done
        self._rich = None
        self._next_report = 0.1
        self._t0 = time.perf_counter()
        self._start = done
        if not enabled:
            return
        con = _console()
        if con.is_terminal:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
            from rich.progress import TransferSpeedColumn

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=con, transient=True)
            self._rich.start()
            self._task = self._rich.add_task(label, total=total, completed=done)
        else:
            size = f"{human_bytes(total)}" if total else "unknown size"
            resumed = f", resuming at {human_bytes(done)}" if done else ""
            print(f"downloading {label} ({size}{resumed})", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
        elif self.total and self.done / self.total >= self._next_report and self.done < self.total:
            print(f"  {self.label}: {100 * self.done / self.total:.0f}% ({human_bytes(self.done)})", file=sys.stderr,
                  flush=True)
            while self.done / self.total >= self._next_report:
                self._next_report += 0.1

    def close(self, ok: bool) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.stop()
        if ok:
            dt = max(time.perf_counter() - self._t0, 1e-6)
            print(f"  {self.label}: done, {human_bytes(self.done)} ({human_bytes((self.done - self._start) / dt)}/s)",
                  file=sys.stderr, flush=True)
