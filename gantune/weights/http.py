"""One URL (http, https or file) streamed into a ``.part`` file: resumed with an HTTP Range request, hashed as it
arrives, web pages told apart from the file. The network settings (``GANTUNE_OFFLINE``, ``GANTUNE_TIMEOUT``) are read
here."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from .. import __version__
from ..errors import WeightsError
from .cache import cache_folder
from .transfer_bar import TransferBar, human_bytes

CHUNK = 1 << 20  # bytes read per network call
DEFAULT_TIMEOUT = 15.0  # seconds without an answer before a network is considered unreachable


class HtmlAnswer(Exception):
    """The server answered with a web page instead of the file (Drive confirmation / quota pages)."""


class Unreachable(Exception):
    """The network or the host could not be reached."""


def is_url(spec: str) -> bool:
    return urlparse(str(spec)).scheme in ("http", "https", "file")


def is_offline() -> bool:
    return os.environ.get("GANTUNE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def timeout() -> float:
    try:
        return float(os.environ.get("GANTUNE_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def looks_like_html(first: bytes) -> bool:
    head = first[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or (head.startswith(b"<") and b"<html" in head)


def user_agent() -> str:
    return f"gantune/{__version__} (python urllib)"


def _open_url(url: str, offset: int):
    """(response, status, start offset the body begins at, total size or None)."""
    headers = {"User-Agent": user_agent()}
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
        raise Unreachable(str(e.reason)) from None
    except (socket.timeout, TimeoutError, ConnectionError, OSError) as e:
        raise Unreachable(str(e)) from None
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


def _open_source(url: str, part: Path):
    """(response, start offset, total size or None, permission bits a copy may have) for ``url``, asking for what
    follows the ``part`` already there (a ``.part`` that cannot be trusted is deleted and asked for whole)."""
    offset = part.stat().st_size if part.exists() else 0
    if urlparse(url).scheme == "file":
        src = Path(unquote(urlparse(url).path))
        if not src.is_file():
            raise WeightsError(f"{url}: no such file", "check the path in the file:// URL")
        total, src_mode = src.stat().st_size, stat.S_IMODE(src.stat().st_mode)
        if offset > total:
            offset = 0
        resp, start = open(src, "rb"), offset  # noqa: SIM115 - closed by the caller
        resp.seek(start)
        return resp, start, total, src_mode
    resp, status, start, total = _open_url(url, offset)
    if status == 416:  # the .part is as long as the file or longer: it cannot be trusted, start over
        part.unlink(missing_ok=True)
        resp, status, start, total = _open_url(url, 0)
    ctype = (resp.headers.get("Content-Type") or "").lower()
    if "text/html" in ctype:
        resp.close()
        raise HtmlAnswer(url)
    return resp, start, total, 0o777


def _hash_prefix(part: Path, n: int, h) -> None:
    """Feed the first ``n`` bytes of ``part`` (what an earlier call already downloaded) to the hash ``h``."""
    with open(part, "rb") as f:
        remaining = n
        while remaining and (chunk := f.read(min(CHUNK * 4, remaining))):
            h.update(chunk)
            remaining -= len(chunk)


def _copy_body(url: str, resp, out, h, bar: TransferBar, *, label: str, part: Path, resumed: bool) -> None:
    """Copy the response into ``out``, hashing and counting it; a first chunk that is a web page raises HtmlAnswer."""
    first = True
    while True:
        try:
            chunk = resp.read(CHUNK)
        except (socket.timeout, TimeoutError, ConnectionError, http.client.IncompleteRead, OSError) as e:
            raise WeightsError(
                f"download of {label} interrupted after {human_bytes(bar.done)} ({e})",
                f"run the same command again: it resumes from {part}",
            ) from None
        if not chunk:
            break
        if first and not resumed and looks_like_html(chunk):
            raise HtmlAnswer(url)
        first = False
        out.write(chunk)
        h.update(chunk)
        bar.update(len(chunk))


def stream_to_part(url: str, part: Path, *, label: str, progress: bool, size_hint: int) -> tuple[str, bool]:
    """Download ``url`` into ``part`` (resuming it when possible). Returns (sha256 of the whole part, resumed?)."""
    cache_folder(part.parent)
    resp, start, total, src_mode = _open_source(url, part)
    h = hashlib.sha256()
    resumed = start > 0
    if resumed:  # hash what we already have
        _hash_prefix(part, start, h)
    bar = TransferBar(progress, label, total or (size_hint or None), start)
    ok = False
    try:
        with open(part, "r+b" if resumed else "wb") as out:
            # a copy is never more open than its source (a 0600 file stays 0600 in the cache)
            os.fchmod(out.fileno(), stat.S_IMODE(os.fstat(out.fileno()).st_mode) & src_mode)
            out.seek(start)
            out.truncate()
            _copy_body(url, resp, out, h, bar, label=label, part=part, resumed=resumed)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and bar.done < total:
            raise WeightsError(
                f"download of {label} ended early: {bar.done} of {total} bytes",
                f"run the same command again: it resumes from {part}",
            )
        ok = True
    except HtmlAnswer:
        with contextlib.suppress(FileNotFoundError):
            if not resumed:
                part.unlink()
        raise
    finally:
        resp.close()
        bar.close(ok)
    return h.hexdigest(), resumed
