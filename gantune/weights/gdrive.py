"""One Google Drive file streamed into a ``.part`` file with gdown (the virus-scan confirmation form, cookies, resumed
ranges), and the one-line error when Drive does not give it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

from ..errors import WeightsError
from ..io.hashing import sha256_file
from .cache import cache_folder
from .http import Unreachable, looks_like_html, timeout, user_agent
from .transfer_bar import TransferBar, human_bytes

DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
DRIVE_RETRIES = 2  # interrupted Drive transfers resumed within one call before giving up (a re-run resumes too)


class DriveRefused(Exception):
    """Drive answered with a page that is not the file and has no download form (quota, permission)."""


def drive_id(url: str) -> str | None:
    """The file id of a Google Drive link, else None."""
    u = urlparse(url)
    if u.hostname not in DRIVE_HOSTS:
        return None
    q = parse_qs(u.query)
    if "id" in q:
        return q["id"][0]
    parts = u.path.split("/")
    if "d" in parts and parts.index("d") + 1 < len(parts):
        return parts[parts.index("d") + 1]
    return None


def drive_to_part(url: str, part: Path, *, label: str, progress: bool, size_hint: int) -> tuple[str, bool]:
    """Download a Google Drive file into ``part`` with gdown (the virus-scan confirmation form, cookies, resumed
    ranges). gdown keeps its own partial file beside ``part`` (``<part><random>.part``) and renames it to ``part``
    when complete. Returns (sha256 of ``part``, resumed?)."""
    import gdown
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    fid = drive_id(url)
    cache_folder(part.parent)
    partials = sorted(part.parent.glob(part.name + "*.part"))
    done_before = max((p.stat().st_size for p in partials), default=0)
    bar = TransferBar(progress, label, size_hint or None, done_before)
    seen = [done_before]

    def on_progress(done: int, total: int | None) -> None:
        if total and not bar.total:
            bar.total = total
        bar.update(done - seen[0])
        seen[0] = done

    ok = False
    try:
        gdown.download(id=fid, output=str(part), quiet=True, resume=True, use_cookies=False, progress=on_progress,
                       timeout=timeout(), retries=DRIVE_RETRIES, user_agent=user_agent())
        ok = True
    except FileURLRetrievalError as e:
        reason = " ".join(str(e).split())
        raise DriveRefused(reason[:200]) from None
    except DownloadError as e:
        if seen[0] == done_before and isinstance(e.__cause__, (requests.exceptions.ConnectionError,
                                                               requests.exceptions.Timeout)):
            raise Unreachable(type(e.__cause__).__name__) from None  # retried, never connected: no network
        raise WeightsError(f"download of {label} from Google Drive interrupted after {human_bytes(seen[0])} "
                           f"({' '.join(str(e).split())[:120]})",
                           "run the same command again: it resumes where it stopped") from None
    except requests.exceptions.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        raise WeightsError(f"HTTP {code} from Google Drive for {label}", "the link may have moved; try another "
                           "source") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        if seen[0] > done_before:  # it was transferring: an interruption, not a missing network
            raise WeightsError(f"download of {label} from Google Drive interrupted after {human_bytes(seen[0])}",
                               "run the same command again: it resumes where it stopped") from None
        raise Unreachable(type(e).__name__) from None
    finally:
        bar.close(ok)
    if looks_like_html(part.read_bytes()[:1024] if part.stat().st_size < 1 << 20 else b""):
        part.unlink()
        raise DriveRefused("Drive sent a web page instead of the file")
    return sha256_file(part, remember=False), done_before > 0


def drive_error(url: str, dest: Path, reason: str = "") -> WeightsError:
    """The error for a Drive file that Drive would not give (quota, permission, a web page), saying where to put it."""
    fid = drive_id(url)
    page = f"https://drive.google.com/file/d/{fid}/view" if fid else url
    why = f": {reason}" if reason else " (download quota or a file that is not public)"
    return WeightsError(
        f"Google Drive did not give {dest.name}{why}",
        f"Drive limits downloads per file and day: try again later, or open {page} in a browser, save the file and "
        f"put it at {dest}",
    )
