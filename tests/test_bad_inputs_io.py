"""Bad inputs around files, folders and processes, through the real command line (``gantune.cli.app.main``):
training options, read-only and full file systems, FIFOs and devices, globs and stdin, repeated seeds, two runs into
one folder, SIGTERM during training, the permissions of a ``file://`` fetch.

For every case: the exit code, exactly one line about the problem (no traceback), no file left behind (temporary
files included), every input byte-identical afterwards, and for batch cases the other items processed with one
valid manifest line per input. Models are the packaged demo-faces files (64 px, fast)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gantune.cli.app import main
from gantune.io import atomic
from gantune.io.manifest import Manifest, read_manifest

HS = ["--method", "hyperstyle", "--weights", "demo-faces-hypernet", "--encoder", "demo-faces-w-encoder",
      "--device", "cpu"]
GEN = ["generate", "--weights", "demo-faces", "--device", "cpu", "--no-grid"]
TRAIN_G = ["train", "generator", "-r", "16", "--channel-base", "128", "--channel-max", "16", "--z-dim", "16",
           "--mapping-layers", "2", "--batch", "4", "--device", "cpu"]
TRAIN_W = ["train", "w-encoder", "-g", "demo-faces", "--depth", "1,1,1,1", "--width", "16", "--input-size", "64",
           "--steps", "1", "--device", "cpu", "--identity-loss", "off"]
ROOT = Path(__file__).resolve().parents[1]


def _noise_png(path: Path, rng, side: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """in/: three photos; one/: a folder given on stdin; imgs/: training data; a file, a secret, a FIFO, a link."""
    root = tmp_path_factory.mktemp("corpus_io")
    rng = np.random.default_rng(0)
    for rel in ("in/a.png", "in/b.png", "in/c.png", "one/d.png"):
        _noise_png(root / rel, rng, 64)
    for i in range(3):
        _noise_png(root / "imgs" / f"{i}.png", rng, 20)
    (root / "afile").write_text("an existing file\n")
    secret = root / "secret.bin"
    secret.write_bytes(os.urandom(64))
    secret.chmod(0o600)
    os.mkfifo(root / "fifo")
    os.symlink("/dev/zero", root / "zero")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    return (e.value.code or 0), [ln for ln in err.splitlines() if ln.strip()]


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def _manifest(out: Path) -> list[dict]:
    """Every line of the manifest, each one valid JSON (a torn line fails the test)."""
    return [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]


def _refused(argv, words, capsys) -> str:
    code, lines = run_cli(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert words in lines[0], lines[0]
    return lines[0]


# --- refused before any work: exit 2, one line, nothing written -----------------------------------------------------
REFUSED = {
    "train generator --kimg nan": ([*TRAIN_G, "--data", "imgs", "--kimg", "nan", "-o", "NEW"], "--kimg nan: not a finite"),
    "train generator --kimg -1": ([*TRAIN_G, "--data", "imgs", "--kimg", "-1", "-o", "NEW"], "must be more than 0"),
    "train generator --lr nan": ([*TRAIN_G, "--data", "imgs", "--lr", "nan", "-o", "NEW"], "--lr nan: not a finite"),
    "train generator --lr 0": ([*TRAIN_G, "--data", "imgs", "--lr", "0", "-o", "NEW"], "--lr"),
    "train generator --snap inf": ([*TRAIN_G, "--data", "imgs", "--snap", "inf", "-o", "NEW"], "--snap"),
    "train generator --style-mixing 2": ([*TRAIN_G, "--data", "imgs", "--style-mixing", "2", "-o", "NEW"],
                                         "at most 1"),
    "train generator --gamma -1": ([*TRAIN_G, "--data", "imgs", "--gamma", "-1", "-o", "NEW"], "--gamma"),
    "train generator -o a file": ([*TRAIN_G, "--data", "imgs", "--kimg", "0.004", "-o", "afile"], "is a file"),
    "train w-encoder -o a file": ([*TRAIN_W, "-o", "afile"], "is a file"),
    "train w-encoder --lr nan": ([*TRAIN_W, "--lr", "nan", "-o", "NEW"], "--lr nan: not a finite"),
    "train w-encoder --l2-lambda -1": ([*TRAIN_W, "--l2-lambda", "-1", "-o", "NEW"], "--l2-lambda"),
    "generate: huge seed range": ([*GEN, "--seeds", "0-99999999999", "-o", "NEW"], "more than 100000"),
    "generate -o a FIFO": ([*GEN, "--seeds", "0", "-o", "fifo"], "FIFO"),
    "generate -o a link to /dev/zero": ([*GEN, "--seeds", "0", "-o", "zero"], "is a device, not a folder"),
    "generate -o empty": ([*GEN, "--seeds", "0", "-o", ""], "-o is empty"),
    "generate -o inside a file": ([*GEN, "--seeds", "0", "-o", "afile/sub"], "afile is a file, not a folder"),
    "invert -o a FIFO": (["invert", "in/a.png", *HS, "-o", "fifo"], "FIFO"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_command_is_refused_in_one_line(case, corpus, capsys, monkeypatch):
    argv, words = REFUSED[case]
    monkeypatch.chdir(corpus)
    before = _snapshot(corpus)
    line = _refused(argv, words, capsys)
    if "--lr" in argv:
        assert "--batch" not in line  # the option that is wrong is named, not another
    assert not (corpus / "NEW").exists()
    assert _snapshot(corpus) == before
    assert not list(corpus.glob(".*.tmp"))


def test_gantune_home_a_file_is_named_in_one_line(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GANTUNE_HOME", str(corpus / "afile"))
    before = _snapshot(corpus)
    line = _refused(["weights", "fetch", (corpus / "secret.bin").as_uri()], "afile is a file", capsys)
    assert "GANTUNE_HOME" in line
    assert _snapshot(corpus) == before


def test_file_url_fetch_is_never_more_open_than_its_source(corpus, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("GANTUNE_HOME", str(home))
    before = _snapshot(corpus)
    code, lines = run_cli(["weights", "fetch", (corpus / "secret.bin").as_uri()], capsys)
    assert code == 0, lines
    (copy,) = [p for p in (home / "urls").iterdir() if p.name.endswith("secret.bin")]
    assert stat.S_IMODE(copy.stat().st_mode) & 0o077 == 0, oct(copy.stat().st_mode)
    assert copy.read_bytes() == (corpus / "secret.bin").read_bytes()
    assert _snapshot(corpus) == before


# --- read-only output folders -------------------------------------------------------------------------------------
def _fake_read_only(monkeypatch, folder: Path) -> None:
    """statvfs reports ``folder`` (and what is below it) on a read-only file system; writes there raise EROFS."""
    real_statvfs, real_mkdir = os.statvfs, Path.mkdir

    class RO:
        def __init__(self, st):
            self.f_flag = st.f_flag | os.ST_RDONLY

    def statvfs(p):
        st = real_statvfs(p)
        return RO(st) if str(os.path.abspath(p)).startswith(str(folder)) else st

    def mkdir(self, *a, **kw):
        if str(os.path.abspath(self)).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(os, "statvfs", statvfs)
    monkeypatch.setattr(Path, "mkdir", mkdir)


@contextlib.contextmanager
def _mounted(folder: Path, options: str):
    """A real tmpfs at ``folder`` (root and a working ``mount`` only; skips the test otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"mount does not work here: {r.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("where", ["ro/gen", "ro"])
def test_read_only_output_folder_faked(where, corpus, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _fake_read_only(monkeypatch, ro)
    line = _refused([*GEN, "--seeds", "0-1", "-o", tmp_path / where], "read-only file system", capsys)
    assert str(ro) in line
    assert _files(ro) == set()


@pytest.mark.parametrize("where", ["gen", "."])
def test_read_only_output_folder_mounted(where, tmp_path, capsys):
    with _mounted(tmp_path / "ro", "ro,size=1m") as ro:
        line = _refused([*GEN, "--seeds", "0-1", "-o", ro / where], "read-only file system", capsys)
        assert str(ro) in line
        assert _files(ro) == set()


def test_read_only_cache_folder(corpus, tmp_path, capsys, monkeypatch):
    """GANTUNE_HOME on a read-only file system: ``weights fetch`` says so in one line, naming the folder."""
    home = tmp_path / "home"
    home.mkdir()
    _fake_read_only(monkeypatch, home)
    monkeypatch.setenv("GANTUNE_HOME", str(home))
    line = _refused(["weights", "fetch", (corpus / "secret.bin").as_uri()], "read-only file system", capsys)
    assert str(home) in line and "GANTUNE_HOME" in line
    assert _files(home) == set()


def test_run_folder_read_only_for_training(corpus, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _fake_read_only(monkeypatch, ro)
    _refused([*TRAIN_G, "--data", corpus / "imgs", "--kimg", "0.004", "-o", ro / "run"], "read-only", capsys)
    assert _files(ro) == set()


# --- generate --seeds ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seeds, expect", [("1,1,1", [1]), ("0-3,2", [0, 1, 2, 3]), ("3,1,3", [3, 1])])
def test_repeated_seeds_are_drawn_once_in_first_order(seeds, expect, tmp_path, capsys):
    out = tmp_path / "out"
    code, lines = run_cli([*GEN, "--seeds", seeds, "-o", out], capsys)
    assert code == 0, lines
    assert not any("Traceback" in ln or "error" in ln for ln in lines), lines
    assert [e["name"] for e in _manifest(out)] == [f"seed{s:04d}" for s in expect]
    assert _files(out) == {f"seed{s:04d}.{x}" for s in expect for x in ("png", "safetensors")} | {"manifest.jsonl"}


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    return " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_seeds_help_says_repeats_are_drawn_once(capsys):
    text = _help(["generate"], capsys)
    assert "a repeated seed is drawn once" in text and "at most 100000 seeds" in text, text


# --- batch inputs: FIFOs, globs, stdin, order ---------------------------------------------------------------------
def _batch_checks(out: Path, inputs: list[str], bad: dict[str, str], lines: list[str]) -> None:
    """One line per bad item (naming it and ``words``), one manifest line per input, the good ones done, nothing
    left for the bad ones."""
    assert not any("Traceback" in ln for ln in lines), lines
    failed = [ln for ln in lines if "failed:" in ln or ln.startswith("error:")]
    assert len(failed) == len(bad), lines
    for name, words in bad.items():
        (line,) = [ln for ln in failed if name in ln]
        assert words in line, line
    manifest = _manifest(out)
    assert len(manifest) == len(inputs)
    ok = [e for e in manifest if e["status"] == "ok"]
    assert len(ok) == len(inputs) - len(bad)
    listed = {Path(p).name for e in ok for p in e["outputs"].values()} | {"manifest.jsonl"}
    assert _files(out) == listed


@pytest.mark.parametrize("bad, words", [("fifo", "FIFO"), ("zero", "not a regular file"),
                                        ("in/*.xyz", "matches no file"),
                                        pytest.param("in/missing.png", "no such file", marks=pytest.mark.slow)])
def test_a_bad_input_fails_alone_in_input_order(bad, words, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(corpus)
    before = _snapshot(corpus)
    out = tmp_path / "out"
    inputs = ["in/a.png", bad, "in/b.png"]
    code, lines = run_cli(["invert", *inputs, *HS, "-o", out], capsys)  # a FIFO read would hang here
    assert code == 1, lines
    _batch_checks(out, inputs, {bad if "*" not in bad else "*.xyz": words}, lines)
    items = [ln for ln in lines if ln.startswith("[") and ("->" in ln or "failed:" in ln)]  # not the progress
    assert [i for i, ln in enumerate(items) if "failed:" in ln] == [1], items  # printed in input order
    assert [e["input"]["path"].split("/")[-1] for e in _manifest(out)] == ["a.png", Path(bad).name, "b.png"]
    assert _snapshot(corpus) == before


def test_a_folder_on_stdin_is_listed(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(corpus)
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n"))
    before = _snapshot(corpus)
    out = tmp_path / "out"
    code, lines = run_cli(["invert", "-", *HS, "-o", out], capsys)
    assert code == 0, lines
    assert [e["name"] for e in _manifest(out)] == ["d"]
    assert all(e["status"] == "ok" for e in _manifest(out))
    assert _snapshot(corpus) == before


def test_invert_align_without_a_face_names_a_command_that_exists(corpus, tmp_path, capsys):
    pytest.importorskip("dlib")
    out = tmp_path / "out"
    code, lines = run_cli(["invert", corpus / "in" / "a.png", *HS, "--align", "-o", out], capsys)
    assert code == 1, lines
    (line,) = [ln for ln in lines if "failed:" in ln]
    assert "no face found" in line and "gantune align --detector cnn" in line, line
    assert _files(out) == {"manifest.jsonl"}


# --- two runs into one folder --------------------------------------------------------------------------------------
def test_two_manifest_writers_keep_every_line(tmp_path):
    """Two runs append and compact the same manifest: the later compaction keeps the other run's lines."""
    path = tmp_path / "manifest.jsonl"
    a, b = Manifest(path), Manifest(path)
    for i in range(3):
        a.write({"status": "ok", "name": f"a{i}"})
        b.write({"status": "ok", "name": f"b{i}"})
    a.compact([f"a{i}" for i in range(3)])
    b.write({"status": "ok", "name": "b3"})
    b.compact([f"b{i}" for i in range(4)])
    names = [e["name"] for e in read_manifest(path)]
    assert sorted(names) == sorted([f"a{i}" for i in range(3)] + [f"b{i}" for i in range(4)])
    assert names[:4] == [f"b{i}" for i in range(4)]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]  # no lock file, no temp file


def test_two_runs_into_one_folder_at_once(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gantune", *GEN, "--batch-size", "1", "-o", str(out)]
    runs = [subprocess.Popen(cmd + ["--seeds", seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for seeds in ("0-39", "40-79")]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in runs]
    for code, err in results:
        assert code == 0 and "Traceback" not in err, err
    manifest = _manifest(out)
    assert sorted(e["name"] for e in manifest) == [f"seed{s:04d}" for s in range(80)]
    assert _files(out) == {f"seed{s:04d}.{x}" for s in range(80) for x in ("png", "safetensors")} | {"manifest.jsonl"}


# --- a full disk ---------------------------------------------------------------------------------------------------
def test_disk_full_stops_the_batch_in_one_line(tmp_path, capsys, monkeypatch):
    """The 4th record hits ENOSPC (injected): one line "no space left on <folder>", the batch stops, the manifest
    holds whole lines for what was done, no half file or temp file stays."""
    from gantune.io.record import InversionRecord

    real_save, calls = InversionRecord.save, []

    def save(self, path, *a, **kw):
        calls.append(path)
        if len(calls) >= 4:
            Path(path).write_bytes(b"half a rec")  # the temp file got part of it
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(self, path, *a, **kw)

    monkeypatch.setattr(InversionRecord, "save", save)
    out = tmp_path / "out"
    code, lines = run_cli([*GEN, "--seeds", "0-9", "--batch-size", "1", "-o", out], capsys)
    assert code == 2, lines
    errors = [ln for ln in lines if "error" in ln or "failed" in ln]
    assert errors == [f"error: no space left on {out} (free some space or choose another -o folder; a re-run skips "
                      "the items already done)"] or (len(errors) == 1 and f"no space left on {out}" in errors[0]), lines
    assert len(calls) == 4  # stopped at the first full write
    done = [f"seed{s:04d}" for s in range(3)]
    assert [e["name"] for e in _manifest(out)] == done
    assert _files(out) == {f"{n}.{x}" for n in done for x in ("png", "safetensors")} | {"manifest.jsonl"}


def test_disk_full_in_safetensors_words_is_known():
    from gantune.errors import is_disk_full, known_error_message

    class SafetensorError(Exception):
        pass

    e = SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left "
                        "on device\" })")
    assert is_disk_full(e) and "no space left" in known_error_message(e)


def test_a_manifest_line_that_does_not_fit_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "manifest.jsonl"
    m = Manifest(path)
    m.write({"status": "ok", "name": "a"})
    good = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", half_then_full)
    with pytest.raises(OSError):
        m.write({"status": "ok", "name": "b"})
    monkeypatch.undo()
    assert path.read_bytes() == good
    path.write_bytes(good + b'{"status": "ok", "na')  # the torn line of a killed run
    Manifest(path).write({"status": "ok", "name": "c"})
    assert [e["name"] for e in _manifest(tmp_path)] == ["a", "c"]


def test_disk_full_on_a_real_small_file_system(tmp_path, capsys):
    with _mounted(tmp_path / "tiny", "size=300k") as tiny:
        out = tiny / "out"
        code, lines = run_cli([*GEN, "--seeds", "0-59", "--batch-size", "4", "-o", out], capsys)
        assert code == 2, lines
        errors = [ln for ln in lines if "error" in ln or "failed" in ln]
        assert len(errors) == 1 and f"no space left on {out}" in errors[0], lines
        assert not any("Traceback" in ln for ln in lines)
        manifest = _manifest(out)  # whole JSON lines only
        assert 0 < len(manifest) < 60 and all(e["status"] == "ok" for e in manifest)
        listed = {Path(p).name for e in manifest for p in e["outputs"].values()} | {"manifest.jsonl"}
        assert _files(out) == listed  # no half file, no temp file


# --- training: SIGTERM, stale temp files, --keep -------------------------------------------------------------------
SLOW_STATE = """
import contextlib, sys, time
import gantune.train.checkpoint as ck
from gantune.cli.app import main
real = ck.atomic_write

@contextlib.contextmanager
def slow(path, mode="wb"):
    with real(path, mode) as f:
        yield f
        f.flush()
        print("WRITING", flush=True)
        time.sleep(60)

ck.atomic_write = slow
main(sys.argv[1:])
"""


def test_sigterm_while_a_state_is_written_leaves_no_temp_file(corpus, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = [*TRAIN_G, "--data", str(corpus / "imgs"), "--kimg", "0.008", "--snap", "0.004", "-o", str(run)]
    p = subprocess.Popen([sys.executable, "-c", SLOW_STATE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and p.stdout.readline().strip() != b"WRITING":
            assert p.poll() is None, p.stderr.read().decode()
        temps = list(run.glob(".training-state-*.tmp"))
        assert temps, sorted(run.iterdir())  # the state is being written
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert code == 128 + signal.SIGTERM, p.stderr.read().decode()
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp")), sorted(run.iterdir())


def test_a_resumed_run_removes_stale_temp_files(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".training-state-000000004.pt.937dxnwm.tmp", run / ".network-000000004.safetensors.x1.tmp"]
    for s in stale:
        s.write_bytes(b"half a state")
    mine = run / ".notes.txt.tmp"  # not a gantune temp file: kept
    mine.write_text("mine")
    code, lines = run_cli([*TRAIN_G, "--data", corpus / "imgs", "--kimg", "0.004", "-o", run], capsys)
    assert code == 0, lines
    assert not any(s.exists() for s in stale) and mine.exists()


def test_keep_limits_network_snapshots_too(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the help in one row
    run = tmp_path / "run"
    code, lines = run_cli([*TRAIN_G, "--data", corpus / "imgs", "--kimg", "0.012", "--snap", "0.004", "--keep-last", "1",
                           "-o", run], capsys)
    assert code == 0, lines
    assert [p.name for p in run.glob("network-*.safetensors")] == ["network-000000012.safetensors"]
    assert [p.name for p in run.glob("training-state-*.pt")] == ["training-state-000000012.pt"]
    assert "network-*.safetensors snapshots to keep" in _help(["train", "generator"], capsys)
