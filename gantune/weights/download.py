"""Make a weights file available: fetch a registry entry or a URL into the cache (resumable, verified, atomic),
resolve a spec (name, path or URL) to a local file, load a generator.

Where things go in the cache: :mod:`gantune.weights.cache`. Nothing is ever placed at a final path before it is
complete and its sha256 checked (``os.replace`` from a ``.part`` file in the same folder).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import OfflineError, WeightsError
from ..io.hashing import sha256_file
from . import formats
from .cache import cache_folder, cache_path, converted_path, part_path, url_cache_path
from .checksums import check_digest, file_sha256, read_sidecar, sidecar, write_sidecar
from .gdrive import DriveRefused, drive_error, drive_id, drive_to_part
from .http import HtmlAnswer, Unreachable, is_offline, is_url, stream_to_part
from .native import native_metadata, save_native
from .registry import Entry, load_registry
from .registry import get as registry_get
from .unpack import unpack


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


# --- fetch ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """One file to fetch: where it may come from, what it must hash to, where it goes."""

    urls: list[str]
    expected: str | None  # the sha256 it must have, else None
    prefix: str  # what its sha256 must start with ("" when not published)
    compression: str  # "" or "bz2": the URLs give it compressed
    size_hint: int  # its size for the progress bar when the server does not say (0: unknown)
    label: str  # its name in progress lines
    target: Path


def _entry_source(entry: Entry, package_copy: Path | None, sha256: str | None, dest) -> _Source:
    urls = list(entry.urls)
    if package_copy is not None:
        urls = [package_copy.resolve().as_uri()]
    elif not urls:
        raise WeightsError(f"{entry.name} ships inside the Python package {entry.package!r} "
                           f"({entry.package_file}), which is not installed or lacks the file",
                           "reinstall gantune from a full checkout (make install)")
    target = Path(dest) if dest is not None else cache_path(entry)
    return _Source(urls, sha256 or entry.sha256 or None, entry.sha256_prefix, entry.compression, entry.size,
                   entry.file, target.expanduser())


def _url_source(url: str, sha256: str | None, dest) -> _Source:
    if not is_url(url):
        raise WeightsError(f"{url!r} is not an http(s) or file URL", "use resolve() for names and paths")
    target = Path(dest) if dest is not None else url_cache_path(url)
    return _Source([url], sha256 or None, "", "", 0, target.name, target.expanduser())


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
        package_copy = entry_or_url.package_path()
        if package_copy is not None and dest is None:
            return package_copy
        src = _entry_source(entry_or_url, package_copy, sha256, dest)
    else:
        src = _url_source(str(entry_or_url), sha256, dest)
    if src.target.is_file():
        return _check_cached(src.target, src.expected, src.prefix, progress)
    part = part_path(src.target, src.compression)
    if is_offline() and all(urlparse(u).scheme != "file" for u in src.urls):
        raise OfflineError(
            f"{src.target.name} is not in the cache and GANTUNE_OFFLINE=1 forbids downloading {src.urls[0]}",
            f"download it elsewhere and place it at {src.target}",
        )
    errors: list[WeightsError] = []
    for url in src.urls:
        if is_offline() and urlparse(url).scheme != "file":
            continue
        placed = _fetch_from(url, src, part, progress, errors)
        if placed is not None:
            return placed
    raise _most_useful(errors, src.target)


def _fetch_from(url: str, src: _Source, part: Path, progress: bool, errors: list[WeightsError]) -> Path | None:
    """Download ``src`` from one URL, check it and put it in place; None (the reason added to ``errors``) when this
    URL did not give it. A resumed download whose hash fails is retried once from scratch."""
    for attempt in (0, 1):
        try:
            digest, resumed = _download_to_part(url, src, part, progress)
        except (DriveRefused, HtmlAnswer, Unreachable, WeightsError) as e:
            errors.append(_download_error(e, url, src.target))
            return None
        try:
            digest = _check_and_place(part, digest, src)
        except WeightsError as e:
            part.unlink(missing_ok=True)
            if resumed and attempt == 0:
                _say(progress, f"{src.target.name}: the resumed download failed its checksum; starting over")
                continue
            raise e from None
        write_sidecar(src.target, digest)
        if not src.expected:
            _say(progress, f"{src.target.name}: no published sha256; recorded {digest} in {sidecar(src.target)}")
        return src.target
    return None


def _download_to_part(url: str, src: _Source, part: Path, progress: bool) -> tuple[str, bool]:
    """(sha256 of the downloaded ``part``, resumed?): Drive links through gdown, the rest streamed."""
    get = drive_to_part if drive_id(url) and not src.compression else stream_to_part
    return get(url, part, label=src.label, progress=progress, size_hint=src.size_hint)


def _download_error(e: Exception, url: str, target: Path) -> WeightsError:
    """The one-line error that says why ``url`` did not give ``target``."""
    if isinstance(e, DriveRefused):
        return drive_error(url, target, str(e))
    if isinstance(e, HtmlAnswer):
        return drive_error(url, target) if drive_id(url) else WeightsError(
            f"{url} answered with a web page instead of {target.name}",
            f"download it in a browser and place it at {target}")
    if isinstance(e, Unreachable):
        return OfflineError(f"cannot reach {url} to download {target.name} ({e})",
                            f"check the network, or download it elsewhere and place it at {target}")
    return e


def _check_and_place(part: Path, digest: str, src: _Source) -> str:
    """Check a complete download (unpacked first when compressed) and rename it into place; returns its sha256.
    Nothing is left at the target when the check fails."""
    target = src.target
    if not src.compression:
        check_digest(digest, src.expected, src.prefix, target.name, str(target))
        os.replace(part, target)
        return digest
    digest, unpacked = unpack(part, target, src.compression)
    try:
        check_digest(digest, src.expected, src.prefix, target.name, str(target))
    except WeightsError:
        unpacked.unlink(missing_ok=True)
        raise
    os.replace(unpacked, target)
    part.unlink(missing_ok=True)
    return digest


def _most_useful(errors: list[WeightsError], target: Path) -> WeightsError:
    """The error to raise when every URL failed: Drive pages and checksums before "unreachable"."""
    for e in errors:
        if not isinstance(e, OfflineError):
            return e
    if errors:
        return errors[0]
    return OfflineError(f"{target.name} is not in the cache", f"place it at {target}")  # pragma: no cover


def _check_cached(path: Path, expected: str | None, prefix: str, progress: bool) -> Path:
    """A file already in the cache (downloaded earlier, or placed by hand): verify it once, then trust its record."""
    recorded = read_sidecar(path)
    if recorded is not None and (not expected or recorded == expected.lower()) and \
            (not prefix or recorded.startswith(prefix)):
        return path
    digest = sha256_file(path)
    try:
        check_digest(digest, expected, prefix, str(path), str(path))
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


def load_generator(spec: str | os.PathLike, device="cpu", *, progress: bool = True):
    """``(Generator, info)`` for a registry name, path or URL.

    A foreign checkpoint is converted once to the native format in the cache (:func:`.cache.converted_path`, keyed
    by the source's sha256; the first time says where, one line), so the next load skips the conversion. Nothing is
    written beside the source. ``info`` holds at least ``name`` (registry name or None), ``sha256`` (of the source
    file), ``path``.
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
