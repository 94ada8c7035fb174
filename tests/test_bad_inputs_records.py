"""Untrusted records and generator files (#29 items 1, 4 and 19), through the real command line: damaged metadata
shapes, damaged generator configs, and records that name a local file that is not a checkpoint. Each case: exit
code, one line naming the problem, no traceback, no output left behind, inputs byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gantune.cli.app import main
from gantune.editing.render import record_path_is_usable
from gantune.io.record import InversionRecord
from gantune.weights import load_generator


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return (e.value.code or 0), [ln for ln in err.splitlines() if ln.startswith("error") or "failed:" in ln]


def _digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _record(path: Path, meta_text: str) -> None:
    save_file({"latent": torch.zeros(1, 128)}, str(path), metadata={"gantune": meta_text})


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = tmp_path / "rec"
    rec.mkdir()
    good = {"format_version": 1, "method": "x", "latent_kind": "w", "generator": {"spec": "demo-faces"}}
    InversionRecord(latent=torch.randn(1, 128) * 0.1, latent_kind="w", method="test",
                    meta={"generator": {"spec": "demo-faces"}}).save(rec / "good.safetensors")
    _record(rec / "list.safetensors", "[1,2,3]")
    _record(rec / "deep.safetensors", "[" * 100_000 + "]" * 100_000)
    _record(rec / "gen-list.safetensors", json.dumps({**good, "generator": [1, 2]}))
    _record(rec / "params-str.safetensors", json.dumps({**good, "params": "noise_mode=const"}))
    (tmp_path / "secret.txt").write_text("root:x:0:0\n")
    _record(rec / "names-file.safetensors", json.dumps({**good, "generator": {"path": str(tmp_path / "secret.txt")}}))
    _record(rec / "names-passwd.safetensors", json.dumps({**good, "generator": {"path": "../../../../etc/passwd"}}))
    d = tmp_path / "dirs"
    d.mkdir()
    np.save(d / "ok.npy", np.random.default_rng(0).standard_normal(128).astype(np.float32))
    return tmp_path


RECORD_CASES = {
    "metadata is a list": ("rec/list.safetensors", "JSON list, not an object"),
    "metadata nested 100 000 deep": ("rec/deep.safetensors", "nested deeper"),
    "generator is a list": ("rec/gen-list.safetensors", "'generator' is a list"),
    "params is a string": ("rec/params-str.safetensors", "'params' is a str"),
    "names a text file": ("rec/names-file.safetensors", "not a registry name or a checkpoint file"),
    "names /etc/passwd": ("rec/names-passwd.safetensors", "not a registry name or a checkpoint file"),
}
COMMANDS = {
    "edit": ["edit", "REC", "-d", "dirs/ok.npy", "-s", "1", "-o", "out"],
    "adapt": ["adapt", "REC", "--target", "demo-faces", "--layers", "all", "-o", "out"],
    "interpolate": ["interpolate", "REC", "rec/good.safetensors", "-n", "3", "-o", "out"],
}


# adapt renders with its --target and never opens the generator a record names
PAIRS = [(case, cmd) for case in RECORD_CASES for cmd in COMMANDS if not (cmd == "adapt" and case.startswith("names"))]


@pytest.mark.parametrize("case,command", PAIRS)
def test_a_damaged_record_is_named_in_one_line(case, command, corpus, capsys):
    rec, words = RECORD_CASES[case]
    before = _digests(corpus)
    argv = [rec if a == "REC" else a for a in COMMANDS[command]]
    code, lines = run_cli(argv + ["--device", "cpu"], capsys)
    assert code != 0
    assert len(lines) == 1 and words in lines[0], lines
    out = corpus / "out"
    assert not out.exists() or not any(p.suffix in (".png", ".gif") for p in out.rglob("*"))
    after = {k: v for k, v in _digests(corpus).items() if not k.startswith(str(out))}
    assert after == before  # no input changed


def test_a_record_path_is_used_only_if_it_is_a_checkpoint_file(tmp_path):
    (tmp_path / "g.safetensors").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo.pt")
    assert record_path_is_usable("demo-faces") and record_path_is_usable(str(tmp_path / "g.safetensors"))
    assert record_path_is_usable(str(tmp_path / "missing.pt"))  # reported as missing when loaded
    for bad in ("/etc/passwd", "../../../../etc/shadow", str(tmp_path / "fifo.pt"), "/dev/zero"):
        assert not record_path_is_usable(bad), bad


def _native_with(tmp_path: Path, name: str, *, config: dict | None = None, version: str | None = None) -> Path:
    """A copy of the demo generator whose header says something else."""
    from gantune.weights.native import CONFIG_KEY, META_KEY, VERSION_KEY

    G, _ = load_generator("demo-faces")
    cfg = G.cfg.to_dict()
    cfg.update(config or {})
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path),
              metadata={CONFIG_KEY: json.dumps(cfg), META_KEY: "{}", VERSION_KEY: version or "1"})
    return path


NATIVE_CASES = {
    "w_dim 0": (dict(config={"w_dim": 0}), "w_dim must be a positive whole number"),
    "NaN mapping_lr_mul": (dict(config={"mapping_lr_mul": float("nan")}), "mapping_lr_mul must be a finite number"),
    "negative channel_max": (dict(config={"channel_max": -4}), "channel_max must be a positive"),
    "string resolution": (dict(config={"resolution": "64"}), "resolution must be a positive"),
    "conv_clamp 0": (dict(config={"conv_clamp": 0}), "conv_clamp must be a finite number > 0"),
    "format 999": (dict(version="999"), "format '999'"),
}


@pytest.mark.parametrize("case", list(NATIVE_CASES))
def test_a_damaged_generator_config_is_named_in_one_line(case, tmp_path, capsys):
    kw, words = NATIVE_CASES[case]
    path = _native_with(tmp_path, "g.safetensors", **kw)
    before = _digests(tmp_path)
    for argv in (["weights", "info", path], ["generate", "-w", path, "--seeds", "0", "-o", tmp_path / "out"]):
        code, lines = run_cli(argv, capsys)
        assert code == 2 and len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "out").exists()
    assert _digests(tmp_path) == before
