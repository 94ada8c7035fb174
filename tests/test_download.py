"""The weights cache: file:// and loopback-HTTP downloads, resume, checksum failures, offline and Drive messages."""

from __future__ import annotations

import bz2
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest

from gantune.errors import OfflineError, WeightsError
from gantune.weights import cache, checksums
from gantune.weights import download as dl
from gantune.weights.registry import Entry

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch):
    monkeypatch.setenv("GANTUNE_TIMEOUT", "5")


def _entry(urls, *, sha256="", file="thing.bin", **kw) -> Entry:
    base = dict(name="thing", kind="generator", file=file, urls=tuple(urls), sha256=sha256, size=0,
                format="native", licence="test", source="test", sha256_note="" if sha256 else "unknown: test")
    base.update(kw)
    return Entry(**base)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- loopback HTTP server -------------------------------------------------------------------------------------------
class _Server:
    """Serves ``payload`` at /file. Options: honour Range or not, cut the first N answers short, answer HTML."""

    def __init__(self, payload: bytes, *, ranges: bool = True, cut_first: int | None = None, html: bool = False):
        self.payload, self.ranges, self.cut_first, self.html = payload, ranges, cut_first, html
        self.log: list[tuple[str | None, int, int]] = []  # (Range header, status, bytes sent)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                if server.html:
                    body = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses.</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    server.log.append((rng, 200, len(body)))
                    return
                data, start, status = server.payload, 0, 200
                if rng and server.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        server.log.append((rng, 416, 0))
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.cut_first is not None:
                    n, server.cut_first = server.cut_first, None
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    server.log.append((rng, status, n))
                    self.close_connection = True
                    return
                self.wfile.write(body)
                server.log.append((rng, status, len(body)))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/file"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# --- file:// -----------------------------------------------------------------------------------------------------------
def test_file_url_with_correct_sha_lands_in_cache(tmp_path, _isolated_home):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    url = src.as_uri()
    got = dl.fetch(url, sha256=SHA, progress=False)
    assert got == cache.url_cache_path(url)
    assert got.read_bytes() == PAYLOAD
    assert str(got).startswith(str(_isolated_home))
    assert checksums.sidecar(got).read_text().split()[0] == SHA
    assert not list(got.parent.glob("*.part"))
    # resolve() of the same URL answers from the cache, even when the source is gone
    src.unlink()
    assert dl.resolve(url, progress=False) == got


def test_file_url_sha_mismatch_leaves_nothing(tmp_path, _isolated_home):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))  # one flipped bit
    with pytest.raises(WeightsError) as ei:
        dl.fetch(src.as_uri(), sha256=SHA, progress=False)
    msg = ei.value.one_line()
    assert f"expected {SHA}" in msg and "got " in msg
    assert _leftovers(_isolated_home) == []


def test_unknown_sha_is_recorded_and_said(tmp_path, capsys):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    got = dl.fetch(_entry([src.as_uri()]), progress=True)
    assert got == cache.cache_path(_entry([src.as_uri()]))
    assert checksums.read_sidecar(got) == SHA
    assert SHA in capsys.readouterr().err
    # a second fetch trusts the record and does not touch the source
    src.unlink()
    assert dl.fetch(_entry([src.as_uri()]), progress=False) == got


def test_file_placed_by_hand_is_checked_against_registry(tmp_path):
    e = _entry(["file:///nonexistent/x"], sha256=SHA)
    target = cache.cache_path(e)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the file")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        dl.fetch(e, progress=False)
    target.write_bytes(PAYLOAD)
    os.utime(target)
    assert dl.fetch(e, progress=False) == target
    assert checksums.read_sidecar(target) == SHA


def test_bz2_entry_is_unpacked_and_the_unpacked_sha_checked(tmp_path, _isolated_home):
    src = tmp_path / "model.dat.bz2"
    src.write_bytes(bz2.compress(PAYLOAD))
    got = dl.fetch(_entry([src.as_uri()], sha256=SHA, file="model.dat", compression="bz2"), progress=False)
    assert got.read_bytes() == PAYLOAD
    assert _leftovers(_isolated_home) == ["model.dat", "model.dat.sha256"]
    bad = _entry([src.as_uri()], sha256="0" * 64, file="other.dat", compression="bz2")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        dl.fetch(bad, progress=False)
    assert not any(n.startswith("other.dat") for n in _leftovers(_isolated_home))


def test_torchvision_prefix_is_checked(tmp_path):
    src = tmp_path / "net.pth"
    src.write_bytes(PAYLOAD)
    with pytest.raises(WeightsError, match="starts with"):
        dl.fetch(_entry([src.as_uri()], file="net-aaaaaaaa.pth", sha256_prefix="aaaaaaaa"), progress=False)
    ok = dl.fetch(_entry([src.as_uri()], file="net-ok.pth", sha256_prefix=SHA[:8]), progress=False)
    assert ok.read_bytes() == PAYLOAD


# --- HTTP ------------------------------------------------------------------------------------------------------------
def test_http_download_and_progress_lines(capsys):
    with _Server(PAYLOAD) as srv:
        got = dl.fetch(_entry([srv.url], sha256=SHA), progress=True)
    assert got.read_bytes() == PAYLOAD
    assert srv.log == [(None, 200, len(PAYLOAD))]
    err = capsys.readouterr().err
    assert "downloading thing.bin" in err and "done" in err  # plain lines when stderr is not a terminal


def test_interrupted_download_is_resumed_with_range(_isolated_home):
    with _Server(PAYLOAD, cut_first=100_000) as srv:
        e = _entry([srv.url], sha256=SHA)
        with pytest.raises(WeightsError) as ei:
            dl.fetch(e, progress=False)
        assert "resumes" in ei.value.one_line()
        part = cache.cache_path(e).with_name("thing.bin.part")
        assert part.stat().st_size == 100_000
        assert not cache.cache_path(e).exists()  # a partial file is never in place
        got = dl.fetch(e, progress=False)
    assert got.read_bytes() == PAYLOAD
    assert srv.log[1] == ("bytes=100000-", 206, len(PAYLOAD) - 100_000)
    assert not part.exists()


def test_server_that_ignores_range_restarts_from_zero():
    with _Server(PAYLOAD, ranges=False) as srv:
        e = _entry([srv.url], sha256=SHA)
        part = cache.cache_path(e).with_name("thing.bin.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"x" * 50_000)  # stale bytes that must not end up in the file
        got = dl.fetch(e, progress=False)
    assert got.read_bytes() == PAYLOAD
    assert srv.log == [("bytes=50000-", 200, len(PAYLOAD))]


def test_stale_part_with_honoured_range_fails_hash_then_restarts():
    with _Server(PAYLOAD) as srv:
        e = _entry([srv.url], sha256=SHA)
        part = cache.cache_path(e).with_name("thing.bin.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(b"y" * 50_000)  # same length as a real prefix, wrong content
        got = dl.fetch(e, progress=False)
    assert got.read_bytes() == PAYLOAD
    assert [(r, s) for r, s, _ in srv.log] == [("bytes=50000-", 206), (None, 200)]


def test_http_corrupt_file_deleted_and_reported(_isolated_home):
    with _Server(PAYLOAD[::-1]) as srv:
        with pytest.raises(WeightsError) as ei:
            dl.fetch(_entry([srv.url], sha256=SHA), progress=False)
    assert f"expected {SHA}" in str(ei.value)
    assert _leftovers(_isolated_home) == []


def test_html_answer_is_not_kept(_isolated_home):
    with _Server(PAYLOAD, html=True) as srv:
        with pytest.raises(WeightsError, match="web page"):
            dl.fetch(_entry([srv.url]), progress=False)
    assert _leftovers(_isolated_home) == []


def test_second_url_used_when_first_fails(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    got = dl.fetch(_entry([(tmp_path / "missing.bin").as_uri(), src.as_uri()], sha256=SHA), progress=False)
    assert got.read_bytes() == PAYLOAD


# --- offline -----------------------------------------------------------------------------------------------------------
def test_offline_env_names_file_url_and_place(monkeypatch):
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    e = _entry(["https://example.org/w/thing.bin"])
    with pytest.raises(OfflineError) as ei:
        dl.fetch(e, progress=False)
    msg = ei.value.one_line()
    assert "thing.bin" in msg and "https://example.org/w/thing.bin" in msg and str(cache.cache_path(e)) in msg
    assert "\n" not in msg


def test_unreachable_host_is_offline_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    e = _entry([f"http://127.0.0.1:{port}/thing.bin"])
    with pytest.raises(OfflineError) as ei:
        dl.fetch(e, progress=False)
    assert str(cache.cache_path(e)) in ei.value.one_line()


# --- resolve ---------------------------------------------------------------------------------------------------------
def test_resolve_paths_and_names(tmp_path):
    f = tmp_path / "g.pt"
    f.write_bytes(b"x")
    assert dl.resolve(str(f)) == f
    with pytest.raises(WeightsError, match="no such file"):
        dl.resolve(str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsError, match="ffhq-1024"):
        dl.resolve("ffhq-1O24")
    with pytest.raises(WeightsError, match="folder"):
        dl.resolve(str(tmp_path))


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("GANTUNE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.home() == tmp_path / "xdg" / "gantune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert cache.home() == tmp_path / "h" / ".cache" / "gantune"


# --- load_generator ------------------------------------------------------------------------------------------------
def test_load_generator_converts_once_and_reports_sha(tiny_G, tmp_path, monkeypatch):
    pytest.importorskip("gantune.weights.formats")
    import torch

    from gantune.weights import rosinality

    src = rosinality.save_rosinality(tiny_G, tmp_path / "tiny.pt")
    G, info = dl.load_generator(str(src))
    assert info["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert info["name"] is None
    conv = cache.converted_path(info["sha256"], src)
    assert conv.is_file()
    for k, v in tiny_G.state_dict().items():
        torch.testing.assert_close(G.state_dict()[k], v, rtol=0, atol=0)

    # second load: from the converted file, without calling the foreign importer again
    import gantune.weights.formats as formats

    calls = []
    real = formats.load_generator_file

    def spy(path, device="cpu", **kw):
        calls.append(Path(path).name)
        return real(path, device, **kw)

    monkeypatch.setattr(formats, "load_generator_file", spy)
    G2, info2 = dl.load_generator(str(src))
    assert calls == [conv.name]
    assert info2["sha256"] == info["sha256"]
    for k, v in tiny_G.state_dict().items():
        torch.testing.assert_close(G2.state_dict()[k], v, rtol=0, atol=0)
