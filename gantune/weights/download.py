"""The weights cache: download (resumable, verified, atomic), resolve a spec to a local file, load a generator.

Layout under the cache folder (``$GANTUNE_HOME``, else ``$XDG_CACHE_HOME/gantune``, else ``~/.cache/gantune``)::

    weights/<file>                      registry entries (name in weights.toml)
    weights/<file>.sha256               sha256 of the file, "sha256sum" format, written after verification
    weights/<file>.part                 an interrupted download, resumed with an HTTP Range request
    urls/<hash of URL>-<basename>       files fetched by URL
    converted/<sha256>-<name>.safetensors  a foreign generator converted once to the native format, keyed by the
                                        source file's sha256 (nothing is ever written beside the user's own files)
    hashes/                             remembered sha256 of big files by path, size, mtime (gantune.io.hashing)

Nothing is ever placed at a final path before it is complete and its sha256 checked (``os.replace`` from a
``.part`` file in the same folder).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import http.client
import json
import os
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from .. import __version__
from ..errors import OfflineError, WeightsError
from ..io.atomic import atomic_write, make_folder
from ..io.hashing import cache_home, sha256_file
from . import formats
from .native import save_native
from .registry import Entry, load_registry
from .registry import get as registry_get

CHUNK = 1 << 20  # bytes read per network call
DEFAULT_TIMEOUT = 15.0  # seconds without an answer before a network is considered unreachable
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


# --- places -----------------------------------------------------------------------------------------------------------
def home() -> Path:
    """The cache folder: $GANTUNE_HOME, else $XDG_CACHE_HOME/gantune, else ~/.cache/gantune."""
    return cache_home()


def cache_folder(folder: Path) -> Path:
    """Create a folder of the cache, or fail in one line naming it (GANTUNE_HOME a file, read-only, not ours)."""
    return make_folder(folder, f"the cache folder {folder}",
                       "set GANTUNE_HOME to a folder you can write; it is created if missing")


def weights_dir() -> Path:
    return home() / "weights"


def cache_path(entry: Entry) -> Path:
    """Where a registry entry lives in the cache (whether or not it is there)."""
    return weights_dir() / entry.file


def url_cache_path(url: str) -> Path:
    """Where a file fetched by URL is cached: ``urls/<16 hex of sha256(url)>-<basename>``."""
    base = unquote(Path(urlparse(url).path).name) or "download"
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in base)[:100]
    return home() / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{base}"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_url(spec: str) -> bool:
    return urlparse(str(spec)).scheme in ("http", "https", "file")


def is_offline() -> bool:
    return os.environ.get("GANTUNE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def timeout() -> float:
    try:
        return float(os.environ.get("GANTUNE_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


# --- hashing ----------------------------------------------------------------------------------------------------------
def read_sidecar(path: Path) -> str | None:
    """The sha256 recorded beside ``path`` if the record is at least as new as the file, else None."""
    sc = sidecar(path)
    try:
        if sc.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return None
        token = sc.read_text().split()[0].lower()
    except (OSError, IndexError):
        return None
    return token if len(token) == 64 else None


def write_sidecar(path: Path, digest: str) -> Path:
    sc = sidecar(path)
    with atomic_write(sc, "w") as f:
        f.write(f"{digest}  {path.name}\n")
    return sc


def file_sha256(path: Path) -> str:
    """sha256 of a file, taken from its up-to-date ``.sha256`` record when there is one, else from the remembered
    hashes (path, size, mtime), else computed."""
    return read_sidecar(path) or sha256_file(path)


def _check_digest(digest: str, expected: str | None, prefix: str, what: str, where: str) -> None:
    if expected and digest != expected.lower():
        raise WeightsError(
            f"sha256 mismatch for {what}: expected {expected.lower()}, got {digest}",
            f"the download was corrupt or the file changed upstream; nothing was kept at {where}; try again",
        )
    if prefix and not digest.startswith(prefix.lower()):
        raise WeightsError(
            f"sha256 mismatch for {what}: the published name says it starts with {prefix}, got {digest}",
            f"the download was corrupt; nothing was kept at {where}; try again",
        )


# --- progress -----------------------------------------------------------------------------------------------------------
def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _Bar:
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
            size = f"{_human(total)}" if total else "unknown size"
            resumed = f", resuming at {_human(done)}" if done else ""
            print(f"downloading {label} ({size}{resumed})", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
        elif self.total and self.done / self.total >= self._next_report and self.done < self.total:
            print(f"  {self.label}: {100 * self.done / self.total:.0f}% ({_human(self.done)})", file=sys.stderr,
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
            print(f"  {self.label}: done, {_human(self.done)} ({_human((self.done - self._start) / dt)}/s)",
                  file=sys.stderr, flush=True)


# --- one URL -> .part ------------------------------------------------------------------------------------------------
class _HtmlAnswer(Exception):
    """The server answered with a web page instead of the file (Drive confirmation / quota pages)."""


class _Unreachable(Exception):
    """The network or the host could not be reached."""


def _looks_like_html(first: bytes) -> bool:
    head = first[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<") and b"<html" in head)


def _drive_id(url: str) -> str | None:
    u = urlparse(url)
    if u.hostname not in _DRIVE_HOSTS:
        return None
    q = parse_qs(u.query)
    if "id" in q:
        return q["id"][0]
    parts = u.path.split("/")
    if "d" in parts and parts.index("d") + 1 < len(parts):
        return parts[parts.index("d") + 1]
    return None


def _user_agent() -> str:
    return f"gantune/{__version__} (python urllib)"


def _open_url(url: str, offset: int):
    """(response, status, start offset the body begins at, total size or None)."""
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout())
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range starts at/after the end: the .part may already be complete
            e.close()
            return None, 416, offset, None
        e.close()
        raise WeightsError(f"HTTP {e.code} {e.reason} for {url}", "the link may have moved; try another source") \
            from None
    except urllib.error.URLError as e:
        raise _Unreachable(str(e.reason)) from None
    except (socket.timeout, TimeoutError, ConnectionError, OSError) as e:
        raise _Unreachable(str(e)) from None
    status = getattr(resp, "status", 200)
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if status == 206:
        cr = resp.headers.get("Content-Range", "")  # bytes start-end/total
        try:
            start = int(cr.split()[1].split("-")[0])
            total_s = cr.split("/")[-1]
            total = int(total_s) if total_s.isdigit() else None
        except (IndexError, ValueError):
            start, total = offset, None
        if start != offset:  # not what we asked for: start over
            resp.close()
            return _open_url_full(url)
        return resp, 206, start, total if total is not None else (offset + length if length is not None else None)
    return resp, status, 0, length


def _open_url_full(url: str):
    return _open_url(url, 0)


def _stream_to_part(url: str, part: Path, *, label: str, progress: bool, size_hint: int) -> tuple[str, bool]:
    """Download ``url`` into ``part`` (resuming it when possible). Returns (sha256 of the whole part, resumed?)."""
    cache_folder(part.parent)
    offset = part.stat().st_size if part.exists() else 0
    scheme = urlparse(url).scheme
    h = hashlib.sha256()
    src_mode = 0o777
    if scheme == "file":
        src = Path(unquote(urlparse(url).path))
        if not src.is_file():
            raise WeightsError(f"{url}: no such file", "check the path in the file:// URL")
        total, src_mode = src.stat().st_size, stat.S_IMODE(src.stat().st_mode)
        if offset > total:
            offset = 0
        resp, start = open(src, "rb"), offset  # noqa: SIM115 - closed below
        resp.seek(start)
        status = 206 if start else 200
    else:
        resp, status, start, total = _open_url(url, offset)
        if status == 416:  # the .part is as long as the file or longer: it cannot be trusted, start over
            part.unlink(missing_ok=True)
            offset = 0
            resp, status, start, total = _open_url(url, 0)
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "text/html" in ctype:
            resp.close()
            raise _HtmlAnswer(url)
    resumed = start > 0
    if resumed:  # hash what we already have
        with open(part, "rb") as f:
            remaining = start
            while remaining and (chunk := f.read(min(CHUNK * 4, remaining))):
                h.update(chunk)
                remaining -= len(chunk)
    bar = _Bar(progress, label, total or (size_hint or None), start)
    ok = False
    try:
        with open(part, "r+b" if resumed else "wb") as out:
            # a copy is never more open than its source (a 0600 file stays 0600 in the cache)
            os.fchmod(out.fileno(), stat.S_IMODE(os.fstat(out.fileno()).st_mode) & src_mode)
            out.seek(start)
            out.truncate()
            first = True
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (socket.timeout, TimeoutError, ConnectionError, http.client.IncompleteRead, OSError) as e:
                    raise WeightsError(
                        f"download of {label} interrupted after {_human(bar.done)} ({e})",
                        f"run the same command again: it resumes from {part}",
                    ) from None
                if not chunk:
                    break
                if first and not resumed and _looks_like_html(chunk):
                    raise _HtmlAnswer(url)
                first = False
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and bar.done < total:
            raise WeightsError(
                f"download of {label} ended early: {bar.done} of {total} bytes",
                f"run the same command again: it resumes from {part}",
            )
        ok = True
    except _HtmlAnswer:
        with contextlib.suppress(FileNotFoundError):
            if not resumed:
                part.unlink()
        raise
    finally:
        resp.close()
        bar.close(ok)
    return h.hexdigest(), resumed


# --- one Google Drive file -> .part (gdown) ---------------------------------------------------------------------------
DRIVE_RETRIES = 2  # interrupted Drive transfers resumed within one call before giving up (a re-run resumes too)


class _DriveRefused(Exception):
    """Drive answered with a page that is not the file and has no download form (quota, permission)."""


def _drive_to_part(url: str, part: Path, *, label: str, progress: bool, size_hint: int) -> tuple[str, bool]:
    """Download a Google Drive file into ``part`` with gdown (the virus-scan confirmation form, cookies, resumed
    ranges). gdown keeps its own partial file beside ``part`` (``<part><random>.part``) and renames it to ``part``
    when complete. Returns (sha256 of ``part``, resumed?)."""
    import gdown
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    fid = _drive_id(url)
    cache_folder(part.parent)
    partials = sorted(part.parent.glob(part.name + "*.part"))
    done_before = max((p.stat().st_size for p in partials), default=0)
    bar = _Bar(progress, label, size_hint or None, done_before)
    seen = [done_before]

    def on_progress(done: int, total: int | None) -> None:
        if total and not bar.total:
            bar.total = total
        bar.update(done - seen[0])
        seen[0] = done

    ok = False
    try:
        gdown.download(id=fid, output=str(part), quiet=True, resume=True, use_cookies=False, progress=on_progress,
                       timeout=timeout(), retries=DRIVE_RETRIES, user_agent=_user_agent())
        ok = True
    except FileURLRetrievalError as e:
        reason = " ".join(str(e).split())
        raise _DriveRefused(reason[:200]) from None
    except DownloadError as e:
        if seen[0] == done_before and isinstance(e.__cause__, (requests.exceptions.ConnectionError,
                                                               requests.exceptions.Timeout)):
            raise _Unreachable(type(e.__cause__).__name__) from None  # retried, never connected: no network
        raise WeightsError(f"download of {label} from Google Drive interrupted after {_human(seen[0])} "
                           f"({' '.join(str(e).split())[:120]})",
                           "run the same command again: it resumes where it stopped") from None
    except requests.exceptions.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        raise WeightsError(f"HTTP {code} from Google Drive for {label}", "the link may have moved; try another "
                           "source") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        if seen[0] > done_before:  # it was transferring: an interruption, not a missing network
            raise WeightsError(f"download of {label} from Google Drive interrupted after {_human(seen[0])}",
                               "run the same command again: it resumes where it stopped") from None
        raise _Unreachable(type(e).__name__) from None
    finally:
        bar.close(ok)
    if _looks_like_html(part.read_bytes()[:1024] if part.stat().st_size < 1 << 20 else b""):
        part.unlink()
        raise _DriveRefused("Drive sent a web page instead of the file")
    return sha256_file(part, remember=False), done_before > 0


# --- fetch ----------------------------------------------------------------------------------------------------------------
def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _drive_error(url: str, dest: Path, reason: str = "") -> WeightsError:
    fid = _drive_id(url)
    page = f"https://drive.google.com/file/d/{fid}/view" if fid else url
    why = f": {reason}" if reason else " (download quota or a file that is not public)"
    return WeightsError(
        f"Google Drive did not give {dest.name}{why}",
        f"Drive limits downloads per file and day: try again later, or open {page} in a browser, save the file and "
        f"put it at {dest}",
    )


def _unpack(dl: Path, dest: Path, compression: str) -> tuple[str, Path]:
    """Decompress the downloaded ``dl`` beside ``dest``; returns (sha256 of the unpacked data, its temp path)."""
    assert compression == "bz2", compression
    unpack = dest.with_name(dest.name + ".unpack.part")
    h = hashlib.sha256()
    try:
        with bz2.open(dl, "rb") as src, open(unpack, "wb") as out:
            while chunk := src.read(CHUNK * 4):
                out.write(chunk)
                h.update(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, EOFError, ValueError) as e:
        unpack.unlink(missing_ok=True)
        raise WeightsError(f"{dl.name} is not a valid {compression} archive ({e})",
                           "the download was corrupt; try again") from None
    return h.hexdigest(), unpack


def fetch(
    entry_or_url: Entry | str,
    *,
    sha256: str | None = None,
    progress: bool = True,
    dest: str | os.PathLike | None = None,
) -> Path:
    """Make a registry entry or a URL available locally and return its path.

    Order for an entry: the copy shipped by its Python package, then the cache, then its URLs in order. Downloads
    stream to ``<file>.part`` (resumed with an HTTP Range request; restarted when the server ignores Range), are
    checked against the expected sha256 (``sha256`` argument, else the entry's; a mismatch deletes the file and
    raises), and only then renamed into place. An unknown sha256 is computed and recorded in ``<file>.sha256``.

    Raises :class:`OfflineError` when ``GANTUNE_OFFLINE=1`` or the network is unreachable, naming the file, the URL
    and where to place the file by hand; :class:`WeightsError` for Drive confirmation pages, HTTP errors and
    checksum mismatches.
    """
    if isinstance(entry_or_url, Entry):
        entry = entry_or_url
        urls, expected, prefix = list(entry.urls), sha256 or entry.sha256 or None, entry.sha256_prefix
        compression, size_hint, label = entry.compression, entry.size, entry.file
        pkg = entry.package_path()
        if pkg is not None and dest is None:
            return pkg
        if pkg is not None:
            urls = [pkg.resolve().as_uri()]
        elif not urls:
            raise WeightsError(f"{entry.name} ships inside the Python package {entry.package!r} "
                               f"({entry.package_file}), which is not installed or lacks the file",
                               "reinstall gantune from a full checkout (make install)")
        target = Path(dest) if dest is not None else cache_path(entry)
    else:
        url = str(entry_or_url)
        if not is_url(url):
            raise WeightsError(f"{url!r} is not an http(s) or file URL", "use resolve() for names and paths")
        urls, expected, prefix, compression, size_hint = [url], sha256 or None, "", "", 0
        target = Path(dest) if dest is not None else url_cache_path(url)
        label = target.name
    target = target.expanduser()

    if target.is_file():
        return _check_cached(target, expected, prefix, progress)

    dl = target.with_name(target.name + (f".{compression}" if compression else "") + ".part")
    network_urls = [u for u in urls if urlparse(u).scheme != "file"]
    if is_offline() and all(urlparse(u).scheme != "file" for u in urls):
        raise OfflineError(
            f"{target.name} is not in the cache and GANTUNE_OFFLINE=1 forbids downloading {network_urls[0]}",
            f"download it elsewhere and place it at {target}",
        )

    errors: list[BaseException] = []
    for url in urls:
        if is_offline() and urlparse(url).scheme != "file":
            continue
        for attempt in (0, 1):  # a resumed download whose hash fails is retried once from scratch
            try:
                if _drive_id(url) and not compression:
                    digest, resumed = _drive_to_part(url, dl, label=label, progress=progress, size_hint=size_hint)
                else:
                    digest, resumed = _stream_to_part(url, dl, label=label, progress=progress, size_hint=size_hint)
            except _DriveRefused as e:
                errors.append(_drive_error(url, target, str(e)))
                break
            except _HtmlAnswer:
                errors.append(_drive_error(url, target) if _drive_id(url) else WeightsError(
                    f"{url} answered with a web page instead of {target.name}",
                    f"download it in a browser and place it at {target}"))
                break
            except _Unreachable as e:
                errors.append(OfflineError(
                    f"cannot reach {url} to download {target.name} ({e})",
                    f"check the network, or download it elsewhere and place it at {target}"))
                break
            except WeightsError as e:
                errors.append(e)
                break
            final_digest = digest
            try:
                if compression:
                    final_digest, unpacked = _unpack(dl, target, compression)
                    try:
                        _check_digest(final_digest, expected, prefix, target.name, str(target))
                    except WeightsError:
                        unpacked.unlink(missing_ok=True)
                        raise
                    os.replace(unpacked, target)
                    dl.unlink(missing_ok=True)
                else:
                    _check_digest(digest, expected, prefix, target.name, str(target))
                    os.replace(dl, target)
            except WeightsError as e:
                dl.unlink(missing_ok=True)
                if resumed and attempt == 0:
                    _say(progress, f"{target.name}: the resumed download failed its checksum; starting over")
                    continue
                raise e from None
            write_sidecar(target, final_digest)
            if not expected:
                _say(progress, f"{target.name}: no published sha256; recorded {final_digest} in {sidecar(target)}")
            return target
    # every URL failed: the most useful error first (Drive pages and checksums before "unreachable")
    for e in errors:
        if not isinstance(e, OfflineError):
            raise e
    if errors:
        raise errors[0]
    raise OfflineError(f"{target.name} is not in the cache", f"place it at {target}")  # pragma: no cover


def _check_cached(path: Path, expected: str | None, prefix: str, progress: bool) -> Path:
    """A file already in the cache (downloaded earlier, or placed by hand): verify it once, then trust its record."""
    recorded = read_sidecar(path)
    if recorded is not None and (not expected or recorded == expected.lower()) and \
            (not prefix or recorded.startswith(prefix)):
        return path
    digest = sha256_file(path)
    try:
        _check_digest(digest, expected, prefix, str(path), str(path))
    except WeightsError as e:
        raise WeightsError(str(e), f"delete {path} and fetch it again") from None
    write_sidecar(path, digest)
    if not expected:
        _say(progress, f"{path.name}: no published sha256; recorded {digest} in {sidecar(path)}")
    return path


# --- resolve / load ---------------------------------------------------------------------------------------------------
def resolve(spec: str | os.PathLike, *, progress: bool = True) -> Path:
    """A local file for ``spec``: a registry name (fetched when missing), an existing path, or an http(s)/file URL
    (cached by URL hash + basename)."""
    s = str(spec)
    if is_url(s):
        return fetch(s, progress=progress)
    reg = load_registry()
    if s in reg:
        return fetch(reg[s], progress=progress)
    p = Path(s).expanduser()
    if p.is_file():
        return p
    if p.exists():
        raise WeightsError(f"{s} is a folder, not a weights file", "give the checkpoint file itself")
    if os.sep not in s and "/" not in s and not p.suffix:
        registry_get(s)  # raises with close matches
    raise WeightsError(f"{s}: no such file", "give a registry name (gantune weights list), an existing path or a URL")


def resolve_all(specs: dict[str, str | os.PathLike], *, progress: bool = True) -> dict[str, Path]:
    """:func:`resolve` for several files at once (``{role: spec}``, e.g. ``{"--weights": …, "--encoder": …}``).
    Every one is tried; when some cannot be had, one error names them all (an :class:`OfflineError` when all of
    them failed for want of a network)."""
    out: dict[str, Path] = {}
    failed: list[tuple[str, str, WeightsError]] = []
    for role, spec in specs.items():
        try:
            out[role] = resolve(spec, progress=progress)
        except WeightsError as e:
            failed.append((role, str(spec), e))
    if len(failed) == 1:
        raise failed[0][2]
    if failed:
        cls = OfflineError if all(isinstance(e, OfflineError) for _, _, e in failed) else WeightsError
        raise cls(f"{len(failed)} files are not available: "
                  + "; ".join(f"{role} {spec}: {e}" for role, spec, e in failed),
                  " / ".join(dict.fromkeys(e.hint for _, _, e in failed if e.hint)) or None)
    return out


def registry_name_for(spec: str | os.PathLike) -> str | None:
    """The registry name ``spec`` refers to (by name, or a path to a cached registry file), else None."""
    s = str(spec)
    reg = load_registry()
    if s in reg:
        return s
    with contextlib.suppress(OSError):
        p = Path(s).expanduser().resolve()
        for e in reg.values():
            if cache_path(e).resolve() == p or (e.package_path() and e.package_path().resolve() == p):
                return e.name
    return None


def converted_path(sha256: str, source: Path) -> Path:
    """Where the native copy of a foreign generator is kept: the cache's ``converted/`` folder, keyed by the source's
    sha256 (so a changed file is converted again, and the same file under two names once)."""
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in source.name)[:80]
    return home() / "converted" / f"{sha256[:32]}-{base}.safetensors"


def native_metadata(path: Path) -> dict:
    """The safetensors header metadata, with JSON-encoded values decoded and nested dicts flattened one level."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    out: dict = {}
    for k, v in raw.items():
        try:
            val = json.loads(v)
        except (TypeError, ValueError):
            val = v
        out[k] = val
        if isinstance(val, dict):
            for k2, v2 in val.items():
                out.setdefault(k2, v2)
    return out


def load_generator(spec: str | os.PathLike, device="cpu", *, progress: bool = True):
    """``(Generator, info)`` for a registry name, path or URL.

    A foreign checkpoint is converted once to the native format in the cache (:func:`converted_path`, keyed by the
    source's sha256; the first time says where, one line), so the next load skips the conversion. Nothing is written
    beside the source. ``info`` holds at least ``name`` (registry name or None), ``sha256`` (of the source file),
    ``path``.
    """
    path = resolve(spec, progress=progress)
    name = registry_name_for(spec) or registry_name_for(path)
    fmt = formats.identify_file(path)[0]
    if fmt == "native":
        G, info = formats.load_generator_file(path, device, hash_file=False)
        info = dict(info)
        sha = file_sha256(path)
    else:
        sha = file_sha256(path)
        conv = converted_path(sha, path)
        G = info = None
        if conv.is_file():
            try:
                if native_metadata(conv).get("source_sha256") == sha:
                    G, info = formats.load_generator_file(conv, device, hash_file=False)
                    info = dict(info, converted=str(conv), source_format=fmt)
            except WeightsError:  # an unreadable leftover: convert again
                G = info = None
        if G is None:
            G, info = formats.load_generator_file(path, "cpu", hash_file=False)
            info = dict(info)
            meta = {"source_sha256": sha, "source_format": fmt, "source_file": path.name, "registry_name": name,
                    "w_avg_computed": bool(info.get("w_avg_computed", False)),
                    "w_avg_source": info.get("w_avg_source")}
            try:
                cache_folder(conv.parent)
                save_native(G, conv, meta=meta)
                info["converted"] = str(conv)
                _say(progress, f"{path.name}: converted to gantune's format once; the copy is kept in the cache at "
                               f"{conv} (safe to delete)")
            except OSError as e:
                _say(progress, f"{path.name}: could not keep a converted copy in {conv.parent} ({e.strerror or e}); "
                               "it will be converted again next time")
            info["source_format"] = fmt
            G = G.to(device)
    info = dict(info or {})
    info.update(name=name, sha256=sha, path=str(path))
    return G, info
