"""Atomic file writes: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path

from ..errors import InputError

_UMASK: int | None = None


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (0666 minus the umask): temp files start at 0600."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def temp_name(path: Path) -> str:
    """Prefix of the temporary files written for ``path`` (``.<name>.``; they end in ``.tmp``)."""
    return f".{path.name}."


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a file", "a FIFO (named pipe)", "a device", …)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _existing_ancestor(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_folder(path: str | os.PathLike, what: str, hint: str) -> None:
    """Refuse, before anything is written, a folder (``what`` names it: "-o out") that is something else or cannot
    be created or written: a file, a FIFO, a device, a broken link, a read-only file system, no permission.
    ``hint`` says what to do instead."""
    p = Path(path)
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):  # the ancestors say why below
        st = None
    except OSError as e:
        raise InputError(f"{what}: {e.strerror or e}", hint) from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} is {kind_of(st.st_mode)}, not a folder", hint)
    if st is None and p.is_symlink():
        raise InputError(f"{what} is a link to nothing ({os.readlink(p)})", hint)
    base = p if st is not None else _existing_ancestor(p)
    try:
        base_mode = base.stat().st_mode
    except OSError as e:
        raise InputError(f"{what}: {base}: {e.strerror or e}", hint) from None
    if not stat.S_ISDIR(base_mode):
        raise InputError(f"{what}: {base} is {kind_of(base_mode)}, not a folder", hint)
    if os.statvfs(base).f_flag & os.ST_RDONLY:
        raise InputError(f"{what}: {base} is on a read-only file system", hint)
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{what}: no permission to write in {base}", hint)


def make_folder(path: str | os.PathLike, what: str, hint: str) -> Path:
    """``mkdir -p`` that fails in one line (:class:`InputError` naming the folder and ``hint``) instead of an
    OSError: a file in the way, a read-only file system, no permission, a full disk."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        check_folder(p, what, hint)
        raise
    except OSError as e:
        check_folder(p, what, hint)  # says what is wrong where it can
        raise InputError(f"{what}: cannot create {p} ({e.strerror or e})", hint) from None
    return p


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike):
    """An exclusive ``flock`` on the folder itself (no lock file is left behind), for read-modify-write of a file in
    it by several processes at once. Not re-entrant."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one whole line (flushed and synced): a torn last line left by a killed run is cut off first, and a
    failed write (a full disk) is truncated back, so the file only ever holds complete lines."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _file_mode())
    try:
        end = _last_complete_line_end(fd)
        try:
            os.lseek(fd, end, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.ftruncate(fd, end + len(data))
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def _last_complete_line_end(fd: int) -> int:
    """The offset just after the file's last newline (0 when it holds none); the whole size when it ends in one."""
    size = os.fstat(fd).st_size
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        k = chunk.rfind(b"\n")
        if k >= 0:
            return start + k + 1
        pos = start
    return 0


def _temp_beside(path: str | os.PathLike) -> tuple[Path, int, str]:
    """(the target, an open descriptor and the name of a new temporary file in the target's folder)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(p), suffix=".tmp", dir=p.parent)
    return p, fd, tmp


@contextlib.contextmanager
def _renamed_into_place(tmp: str, target: Path):
    """Inside: ``tmp`` is written. On success it gets a plain file's mode and replaces ``target``; on any error (an
    interrupt too) it is removed."""
    try:
        yield
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """``with atomic_write(p) as f: f.write(...)`` — the target appears complete or not at all."""
    p, fd, tmp = _temp_beside(path)
    with _renamed_into_place(tmp, p):
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_path(path: str | os.PathLike):
    """For writers that need a file name (e.g. safetensors): yields a temp path, renamed to ``path`` on success."""

    @contextlib.contextmanager
    def _cm():
        p, fd, tmp = _temp_beside(path)
        os.close(fd)
        with _renamed_into_place(tmp, p):
            yield Path(tmp)

    return _cm()


@contextlib.contextmanager
def exit_on_sigterm():
    """While inside: SIGTERM raises SystemExit(143) in the main thread, so ``finally`` blocks run and an atomic write
    in progress removes its temporary file (the default action kills the process on the spot)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
