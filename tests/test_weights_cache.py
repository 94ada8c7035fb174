"""Remembered file hashes, converted copies kept in the cache (never beside the user's file), and `weights info` on
files that are not checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from gantune.io import hashing
from gantune.weights import cache
from gantune.weights import download as dl

def test_hash_is_remembered_by_path_size_mtime(tmp_path, _isolated_home):
    p = tmp_path / "big.bin"
    p.write_bytes(b"a" * 1000)
    real = hashlib.sha256(b"a" * 1000).hexdigest()
    assert hashing.sha256_file(p, remember=True) == real
    assert list((_isolated_home / "hashes").glob("*.json"))
    st = p.stat()
    # same size, same mtime, same inode: the remembered hash is used (the file is not read again)
    with open(p, "r+b") as f:
        f.write(b"b")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashing.sha256_file(p, remember=True) == real
    # a new mtime: hashed again
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = hashlib.sha256(b"b" + b"a" * 999).hexdigest()
    assert hashing.sha256_file(p, remember=True) == changed
    # a new size: hashed again
    p.write_bytes(b"c" * 10)
    assert hashing.sha256_file(p, remember=True) == hashlib.sha256(b"c" * 10).hexdigest()
    # small files are not remembered by default, and remember=False never uses the memory
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashing.sha256_file(p) == hashlib.sha256(b"c" * 10).hexdigest()


def test_unwritable_cache_still_hashes(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.write_text("a file where a folder should be")
    monkeypatch.setenv("GANTUNE_HOME", str(ro))
    p = tmp_path / "x.bin"
    p.write_bytes(b"xyz")
    assert hashing.sha256_file(p, remember=True) == hashlib.sha256(b"xyz").hexdigest()


def test_user_checkpoint_is_converted_into_the_cache_not_beside_it(tiny_G, tmp_path, _isolated_home, capsys):
    from gantune.weights import rosinality

    user = tmp_path / "my_models"
    user.mkdir()
    src = rosinality.save_rosinality(tiny_G, user / "tiny.pt")
    before = sorted(p.name for p in user.iterdir())
    G, info = dl.load_generator(str(src))
    assert sorted(p.name for p in user.iterdir()) == before  # nothing written beside the user's file
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    conv = Path(info["converted"])
    assert conv.parent == _isolated_home / "converted" and conv.name.startswith(sha[:32])
    assert conv == cache.converted_path(sha, src)
    err = capsys.readouterr().err
    assert err.count(str(conv)) == 1 and "converted" in err  # said once, with the place
    for k, v in tiny_G.state_dict().items():
        assert torch.equal(G.state_dict()[k], v)
    # second load: from the cache, silently
    G2, info2 = dl.load_generator(str(src))
    assert info2["converted"] == str(conv) and info2["sha256"] == sha
    assert capsys.readouterr().err == ""
    # the same file elsewhere (same content) is not converted again
    copy = tmp_path / "copy.pt"
    copy.write_bytes(src.read_bytes())
    dl.load_generator(str(copy))
    assert len(list((_isolated_home / "converted").iterdir())) == 2 or "converted" not in capsys.readouterr().err
    # a changed source gets its own converted copy
    torch.manual_seed(1)
    with torch.no_grad():
        tiny_G.mapping.w_avg.add_(1.0)
    rosinality.save_rosinality(tiny_G, src)
    _, info3 = dl.load_generator(str(src))
    assert info3["converted"] != str(conv) and info3["sha256"] != sha


# --- weights info on files that are not checkpoints ---------------------------------------------------------------------
class _Res:
    def __init__(self, code, output):
        self.exit_code, self.output = code, output


@pytest.fixture
def info(capsys):
    """Run `gantune weights info PATH` through the real entry point (with its error mapper)."""
    from gantune.cli.app import main

    def run(path) -> _Res:
        capsys.readouterr()
        try:
            main(["weights", "info", str(path)])
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return _Res(code, out.out + out.err)

    return run


def _one_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    return " ".join(lines[0].split())


def test_weights_info_random_bytes_fails_with_one_line(tmp_path, info):
    p = tmp_path / "random.pt"
    p.write_bytes(os.urandom(5000))
    res = info(p)
    assert res.exit_code != 0
    line = _one_line(res)
    assert "not a checkpoint gantune recognizes" in line and "rosinality" in line and "detected" not in line


@pytest.mark.parametrize("legacy", [False, True])
def test_weights_info_truncated_checkpoint_fails_with_one_line(tmp_path, tiny_G, legacy, info):
    from gantune.weights.rosinality import to_rosinality_state_dict

    full = tmp_path / "full.pt"
    torch.save({"g_ema": to_rosinality_state_dict(tiny_G)}, full, _use_new_zipfile_serialization=not legacy)
    p = tmp_path / "cut.pt"
    data = full.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    res = info(p)
    assert res.exit_code != 0
    line = _one_line(res)
    assert any(w in line for w in ("truncated", "damaged", "not a readable", "corrupted"))
    assert "detected" not in line


def test_weights_info_unknown_torch_layout_fails(tmp_path, info):
    p = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, p)
    res = info(p)
    assert res.exit_code != 0
    line = _one_line(res)
    assert "model" in line and "gantune reads" in line


def test_every_missing_file_is_named_in_one_message(monkeypatch):
    from gantune.errors import OfflineError
    from gantune.methods.hyper.method import HyperStyle

    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    with pytest.raises(OfflineError) as e:
        HyperStyle.load("hyperstyle-ffhq", "w-encoder-ffhq")
    line = e.value.one_line()
    assert "2 files" in line and "hyperstyle_ffhq.pt" in line and "faces_w_encoder.pt" in line
    assert "--weights" in line and "--encoder" in line and "\n" not in line
