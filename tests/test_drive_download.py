"""Google Drive downloads through gdown against a loopback server that answers like Drive: the virus-scan form
(confirm + uuid) and then the file, a quota page, interrupted transfers (resumed with Range), no network.

gdown always asks https://drive.google.com/uc?id=… first; the test sessions route the Drive hosts to the loopback
server (a transport adapter standing in for DNS). Everything else is the real code: gdown's form handling and
gantune's .part / rename / sha256 / messages."""

from __future__ import annotations

import hashlib
import importlib
import http.server
import os
import threading
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from requests.adapters import HTTPAdapter

from gantune.errors import OfflineError, WeightsError
from gantune.weights import checksums, gdrive
from gantune.weights import download as dl
from gantune.weights.registry import Entry

FID = "1C3dEIIH1y8w1-zQMCyx7rDF0ndswSXh4"
PAYLOAD = os.urandom(1_500_000)  # more than gdown's 512 KB read, so a cut transfer has kept bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
QUOTA = ("Too many users have viewed or downloaded this file recently. Please try accessing the file again later. "
         "If the file you are trying to access is particularly large or is shared with many people, it may take up "
         "to 24 hours to be able to view or download the file.")


class DriveSim:
    """Answers /uc?id= with the virus-scan form (or a quota page) and /download?…&confirm=&uuid= with the file."""

    def __init__(self, *, quota: bool = False, cut: int = 0):
        self.quota, self.cut = quota, cut  # cut: the first `cut` file answers stop half-way
        self.uuid = str(uuid.uuid4())
        self.log: list[tuple[str, str | None]] = []  # (path with query, Range header)
        sim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _html(self, body: str, code: int = 200):
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                sim.log.append((self.path, self.headers.get("Range")))
                if u.path == "/uc" and q.get("id") == FID:
                    if sim.quota:
                        return self._html(f'<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>'
                                          f'</head><body><div class="uc-main"><p class="uc-error-caption">Sorry, you '
                                          f'can\'t view or download this file at this time.</p>'
                                          f'<p class="uc-error-subcaption">{QUOTA}</p></div></body></html>')
                    return self._html(
                        '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                        '<div class="uc-main"><p class="uc-warning-caption">Google Drive can\'t scan this file for '
                        'viruses.</p><form id="download-form" action="https://drive.usercontent.google.com/download" '
                        'method="get"><input type="submit" class="goog-inline-block jfk-button jfk-button-action" '
                        f'value="Download anyway"/><input type="hidden" name="id" value="{FID}">'
                        '<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" '
                        f'value="t"><input type="hidden" name="uuid" value="{sim.uuid}"></form></div></body></html>')
                if u.path == "/download" and q.get("id") == FID:
                    if q.get("confirm") != "t" or q.get("uuid") != sim.uuid:
                        return self._html("<html><body>form not confirmed</body></html>", 400)
                    start = 0
                    rng = self.headers.get("Range")
                    if rng:
                        start = int(rng.split("=")[1].split("-")[0])
                    body = PAYLOAD[start:]
                    self.send_response(206 if start else 200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Disposition", 'attachment; filename="hyperstyle_ffhq.pt"')
                    self.send_header("ETag", '"v1"')
                    self.send_header("Content-Length", str(len(body)))
                    if start:
                        self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                    self.end_headers()
                    if sim.cut > 0:
                        sim.cut -= 1
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                    return
                self._html("<html><body>not found</body></html>", 404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _ToLoopback(HTTPAdapter):
    """Sends requests for the Drive hosts to the loopback server instead (what DNS would do)."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def send(self, request, **kw):
        u = urlparse(request.url)
        request.url = self.base + u.path + (f"?{u.query}" if u.query else "")
        return super().send(request, **kw)


@pytest.fixture
def drive(monkeypatch):
    sims = []

    def start(**kw) -> DriveSim:
        sim = DriveSim(**kw)
        sims.append(sim)
        gd = importlib.import_module("gdown.download")  # the module (the package exports a function of that name)

        real = requests.session

        def session():
            s = real()
            for host in ("https://drive.google.com", "https://drive.usercontent.google.com"):
                s.mount(host, _ToLoopback(sim.base))
            return s

        monkeypatch.setattr(gd.requests, "session", session)
        return sim

    yield start
    for s in sims:
        s.close()


def _entry(sha256: str = SHA) -> Entry:
    return Entry(name="hyperstyle-test", kind="hypernetwork", file="hyperstyle_ffhq.pt",
                 urls=(f"https://drive.google.com/file/d/{FID}/view",), sha256=sha256, size=len(PAYLOAD),
                 format="hyperstyle", licence="test", source="test", sha256_note="" if sha256 else "unknown: test")


def _cache_files(home) -> list[str]:
    return sorted(p.name for p in (home / "weights").iterdir()) if (home / "weights").exists() else []


def test_virus_scan_form_is_confirmed_and_file_verified(drive, _isolated_home):
    sim = drive()
    path = dl.fetch(_entry(), progress=False)
    assert path.read_bytes() == PAYLOAD
    paths = [p for p, _ in sim.log]
    assert paths[0] == f"/uc?id={FID}" and paths[-1].startswith("/download?")
    assert f"uuid={sim.uuid}" in paths[-1] and "confirm=t" in paths[-1]
    assert _cache_files(_isolated_home) == ["hyperstyle_ffhq.pt", "hyperstyle_ffhq.pt.sha256"]  # no .part left
    assert checksums.read_sidecar(path) == SHA


def test_unknown_sha_is_recorded_on_first_download_and_checked_after(drive, _isolated_home, capsys):
    drive()
    path = dl.fetch(_entry(sha256=""), progress=True)
    assert checksums.read_sidecar(path) == SHA and "recorded" in capsys.readouterr().err
    # later: a file changed behind the cache's back no longer matches what was recorded
    before = path.stat().st_mtime_ns
    path.write_bytes(b"x" + PAYLOAD[1:])
    # a later change: its own mtime (a rewrite within the filesystem's timestamp tick, a few ms, would keep the old
    # one, and the same size would then look unchanged to the remembered-hash cache)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    os.utime(checksums.sidecar(path), ns=(0, 0))  # the record is now older than the file
    with pytest.raises(WeightsError):
        dl.fetch(_entry(sha256=SHA), progress=False)


def test_checksum_mismatch_keeps_nothing(drive, _isolated_home):
    drive()
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        dl.fetch(_entry(sha256="0" * 64), progress=False)
    assert _cache_files(_isolated_home) == []


def test_quota_page_is_one_clear_line(drive, _isolated_home):
    drive(quota=True)
    with pytest.raises(WeightsError) as e:
        dl.fetch(_entry(), progress=False)
    line = e.value.one_line()
    assert "\n" not in line and "Too many users" in line and "try again later" in line
    assert f"https://drive.google.com/file/d/{FID}/view" in line
    assert _cache_files(_isolated_home) == []


def test_interrupted_transfer_is_resumed_within_the_call(drive, _isolated_home):
    sim = drive(cut=1)
    path = dl.fetch(_entry(), progress=False)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for _, r in sim.log if r]
    assert ranges and 0 < int(ranges[0].split("=")[1].split("-")[0]) <= len(PAYLOAD) // 2


def test_interrupted_transfer_resumes_on_the_next_run(drive, _isolated_home, monkeypatch):
    monkeypatch.setattr(gdrive, "DRIVE_RETRIES", 0)
    sim = drive(cut=1)
    with pytest.raises(WeightsError) as e:
        dl.fetch(_entry(), progress=False)
    assert "resumes" in e.value.one_line()
    partial = [p for p in (_isolated_home / "weights").iterdir() if p.name.endswith(".part")]
    kept = partial[0].stat().st_size if len(partial) == 1 else -1
    assert 0 < kept <= len(PAYLOAD) // 2
    path = dl.fetch(_entry(), progress=False)  # the server works again
    assert path.read_bytes() == PAYLOAD
    assert any(r == f"bytes={kept}-" for _, r in sim.log)
    assert _cache_files(_isolated_home) == ["hyperstyle_ffhq.pt", "hyperstyle_ffhq.pt.sha256"]


@pytest.mark.parametrize("retries", [0, 1])
def test_no_network_is_an_offline_error(monkeypatch, _isolated_home, retries):
    gd = importlib.import_module("gdown.download")

    s = socketless_port()
    real = requests.session

    def session():
        sess = real()
        for host in ("https://drive.google.com", "https://drive.usercontent.google.com"):
            sess.mount(host, _ToLoopback(f"http://127.0.0.1:{s}"))
        return sess

    monkeypatch.setattr(gd.requests, "session", session)
    monkeypatch.setattr(gdrive, "DRIVE_RETRIES", retries)
    with pytest.raises(OfflineError) as e:
        dl.fetch(_entry(), progress=False)
    assert "hyperstyle_ffhq.pt" in e.value.one_line()


def socketless_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there
