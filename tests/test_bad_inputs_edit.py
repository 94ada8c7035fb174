"""Bad inputs of the editing commands (directions, edit, interpolate, adapt, eval), built at test time, through the
real command line (``gantune.cli.app.main``), as tests/test_bad_inputs.py does for the batch commands.

For every refusal: exit code 2, exactly one line on stderr that names the problem (no traceback), no output and no
temporary file left behind, every input byte-identical afterwards. Models are the packaged demo-faces files (64 px)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gantune.cli.app import main
from gantune.editing.fit import fit_direction
from gantune.io.record import InversionRecord

W_DIM = 128  # demo-faces


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit_corpus")
    rng = np.random.default_rng(0)
    rec = root / "rec"
    rec.mkdir()
    for i, name in enumerate(("a", "b")):
        g = torch.Generator().manual_seed(i)
        InversionRecord(latent=torch.randn(1, W_DIM, generator=g) * 0.1, latent_kind="w", method="test",
                        meta={"generator": {"spec": "demo-faces"}}).save(rec / f"{name}.safetensors")
    d = root / "dirs"
    d.mkdir()
    np.save(d / "ok.npy", rng.standard_normal(W_DIM).astype(np.float32))
    np.save(d / "complex.npy", (rng.standard_normal(W_DIM) + 1j * rng.standard_normal(W_DIM)).astype(np.complex64))
    np.save(d / "huge.npy", (rng.standard_normal(W_DIM) * 1e30).astype(np.float32))
    np.save(d / "zero.npy", np.zeros(W_DIM, np.float32))
    lab = root / "labels"
    lab.mkdir()
    rows = "".join(f"{s},{s % 2}\n" for s in range(8))
    (lab / "big_seed.csv").write_text("seed,value\n" + rows + f"{10**30},1\n")
    (lab / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (lab / "three_fields.csv").write_text("seed,value\n1,2,3\n" + rows)
    (lab / "one_field.csv").write_text("seed,value\n" + rows + "foo\n")
    (lab / "empty_row.csv").write_text("seed,value\n" + rows + ",\n")
    (lab / "one_class.csv").write_text("seed,value\n" + "".join(f"{s},1\n" for s in range(20)))
    (lab / "twice.csv").write_text("seed,value\n" + rows + "3,1\n")
    (lab / "good.csv").write_text("seed,value\n" + rows)
    (root / "exists.pt").write_bytes(b"the user's file\n")
    (root / "clip.csv").write_text("name,score\nx,1\n")
    (root / "folder").mkdir()
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden temporary files included) and its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    return (e.value.code or 0), [ln for ln in err.splitlines() if ln.strip()]


FIT = ["directions", "fit", "-a", "score", "-w", "demo-faces", "--device", "cpu"]
CHECK = ["directions", "check", "-w", "demo-faces", "-s", "-1,0,1", "-n", "1", "--device", "cpu"]
GANSPACE = ["directions", "ganspace", "-w", "demo-faces", "--samples", "300", "--components", "4", "--device", "cpu"]
EDIT = ["edit", "rec/a.safetensors", "--device", "cpu", "--no-identity"]

# name: (argv, words the one line must contain, words it must not contain)
REFUSED = {
    # item 2: labels that used to end in a traceback
    "labels: seed of 10^30": (FIT + ["--labels", "labels/big_seed.csv", "-o", "NEW.pt"],
                              ["big_seed.csv:10", "out of range"], []),
    "labels: binary file": (FIT + ["--labels", "labels/binary.csv", "-o", "NEW.pt"], ["binary.csv", "UTF-8"], []),
    # item 14: bad rows named by file:line
    "labels: three fields": (FIT + ["--labels", "labels/three_fields.csv", "-o", "NEW.pt"],
                             ["three_fields.csv:2", "3 fields"], []),
    "labels: one field": (FIT + ["--labels", "labels/one_field.csv", "-o", "NEW.pt"], ["one_field.csv:10", "1 field"], []),
    "labels: a lone comma": (FIT + ["--labels", "labels/empty_row.csv", "-o", "NEW.pt"],
                             ["empty_row.csv:10", "no value"], []),
    "labels: a seed twice": (FIT + ["--labels", "labels/twice.csv", "-o", "NEW.pt"], ["twice.csv:10", "twice"], []),
    # item 12: one class
    "labels: every value the same": (FIT + ["--labels", "labels/one_class.csv", "-o", "NEW.pt"],
                                     ["every one of the 20 values is 1", "two classes"], []),
    "fit: --seed with --labels": (FIT + ["--labels", "labels/good.csv", "--seed", "3", "-o", "NEW.pt"], ["--seed"], []),
    # item 13: --keep zero
    "fit: --keep zero": (FIT + ["--labels", "labels/good.csv", "--keep", "dirs/zero.npy", "-o", "NEW.pt"],
                         ["zero.npy", "zero"], []),
    "fit: --keep complex": (FIT + ["--labels", "labels/good.csv", "--keep", "dirs/complex.npy", "-o", "NEW.pt"],
                            ["complex.npy", "complex"], []),
    # wrong hint: a folder is not made writable by --force
    "fit: -o folder --force": (FIT + ["--labels", "labels/good.csv", "-o", "folder", "--force"], ["is a folder"],
                               ["--force"]),
    "fit: -o exists": (FIT + ["--labels", "labels/good.csv", "-o", "exists.pt"], ["exists", "--force"], []),
    "fit: -o is the labels file": (FIT + ["--labels", "labels/good.csv", "-o", "labels/good.csv", "--force"],
                                   ["is an input"], []),
    # item 15: ganspace asks before it overwrites
    "ganspace: -o exists": (GANSPACE + ["-o", "exists.pt"], ["exists.pt exists", "--force"], []),
    "ganspace: -o folder": (GANSPACE + ["-o", "folder"], ["is a folder"], [".tmp"]),
    "ganspace: seed 10^30": (GANSPACE + ["--seed", str(10**30), "-o", "NEW.pt"], ["--seed"], []),
    # outputs checked before computing, never naming an internal temporary file
    "check: -o folder": (CHECK + ["dirs/ok.npy", "-o", "folder"], ["is a folder"], [".tmp"]),
    "check: -o below a file": (CHECK + ["dirs/ok.npy", "-o", "exists.pt/report.json"], ["is a file"], []),
    "eval detection: -o folder": (["eval", "detection", "-w", "demo-faces", "-n", "1", "--device", "cpu", "-o",
                                   "folder"], ["is a folder"], [".tmp"]),
    # item 16: every float option checked when parsed
    "eval detection: --truncation nan": (["eval", "detection", "-w", "demo-faces", "-n", "1", "--truncation", "nan",
                                          "-o", "NEW.json"], ["--truncation", "finite"], ["render"]),
    "fit: --fraction nan": (FIT + ["--labels", "labels/good.csv", "--fraction", "nan", "-o", "NEW.pt"],
                            ["--fraction", "finite"], []),
    "fit: --truncation inf": (FIT + ["--truncation", "inf", "-o", "NEW.pt"], ["--truncation", "finite"], []),
    "fit: --truncation 5": (FIT + ["--truncation", "5", "-o", "NEW.pt"], ["--truncation", "out of range"], []),
    "styleclip-stats: --truncation nan": (["directions", "styleclip-stats", "-w", "demo-faces", "--truncation", "nan",
                                           "-o", "NEW.pt"], ["--truncation", "finite"], []),
    "adapt: --offset-scale nan": (["adapt", "rec/a.safetensors", "--target", "demo-faces", "--offset-scale", "nan",
                                   "-o", "NEW"], ["--offset-scale", "finite"], []),
    "edit: --beta nan": (["edit", "rec/a.safetensors", "--text", "a smiling face", "--beta", "nan", "-o", "NEW"],
                         ["--beta", "finite"], []),
    # wrong hints and silent options
    "edit: --alpha nan names --alpha": (["edit", "rec/a.safetensors", "--text", "a smiling face", "--alpha", "nan",
                                         "-o", "NEW"], ["--alpha", "finite"], ["--strength"]),
    "edit: --alpha with --direction": (EDIT + ["-d", "dirs/ok.npy", "--alpha", "2", "-o", "NEW"],
                                       ["--alpha is for --text"], []),
    "edit: --strength with --text": (["edit", "rec/a.safetensors", "--text", "a smiling face", "--strength", "2",
                                      "-o", "NEW"], ["--strength is for --direction"], []),
    "edit: --onto without --paste": (EDIT + ["-d", "dirs/ok.npy", "--onto", "exists.pt", "-o", "NEW"],
                                     ["--onto", "--paste"], []),
    "adapt: --codes-iters without --codes": (["adapt", "rec/a.safetensors", "--target", "demo-faces", "--codes-iters",
                                              "3", "-o", "NEW"], ["--codes-iters"], []),
    "styleclip-stats: --clip the user's csv": (["directions", "styleclip-stats", "-w", "demo-faces", "--clip",
                                                "clip.csv", "--device", "cpu", "-o", "NEW.pt"],
                                               ["clip.csv", "give the OpenAI CLIP"], ["delete"]),
    # directions that are not real, finite, reasonable numbers
    "edit: complex direction": (EDIT + ["-d", "dirs/complex.npy", "-o", "NEW"], ["complex.npy", "not real numbers"], []),
    "edit: direction of norm 1e30": (EDIT + ["-d", "dirs/huge.npy", "-o", "NEW"], ["huge.npy", "norm"], []),
    "check: complex direction": (CHECK + ["dirs/complex.npy"], ["complex.npy", "not real numbers"], []),
    "check: direction of norm 1e30": (CHECK + ["dirs/huge.npy"], ["huge.npy", "norm"], []),
}


@pytest.fixture
def in_corpus(corpus, monkeypatch):
    """The corpus as the current folder, offline: a missing default checkpoint is named, never downloaded here."""
    monkeypatch.chdir(corpus)
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    return corpus


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_command_is_refused_in_one_line(case, in_corpus, capsys):
    argv, words, absent = REFUSED[case]
    before = _snapshot(in_corpus)
    code, lines = run_cli(argv, capsys)
    assert (code, len(lines)) == (2, 1) and lines[0].startswith("error:") and "Traceback" not in lines[0], lines
    assert all(w in lines[0] for w in words) and not any(w in lines[0] for w in absent), lines[0]
    assert not any((in_corpus / n).exists() for n in ("NEW", "NEW.pt", "NEW.json"))  # nothing written
    assert _snapshot(in_corpus) == before  # inputs byte-identical, no file (temporary or not) left behind


def test_check_applies_a_w_direction_to_an_overparameterized_generator(corpus, tmp_path, capsys, monkeypatch):
    """Item 3: a W direction moves every row of the latent matrix, as edit does; no ValueError about ws."""
    monkeypatch.chdir(corpus)
    before = _snapshot(corpus)
    out = tmp_path / "report.json"
    code, lines = run_cli(["directions", "check", "dirs/ok.npy", "-w", "demo-faces-overparam", "-s", "-1,0,1", "-n",
                           "1", "--device", "cpu", "-o", out], capsys)
    assert code == 0, lines
    rep = json.loads(out.read_text())
    assert rep["images"] == 1 and rep["strengths"] == [-1.0, 0.0, 1.0]
    assert _snapshot(corpus) == before


def test_ganspace_overwrites_only_with_force(corpus, tmp_path, capsys):
    out = tmp_path / "pca.pt"
    out.write_bytes(b"old")
    assert run_cli(GANSPACE + ["-o", out], capsys)[0] == 2 and out.read_bytes() == b"old"
    code, lines = run_cli(GANSPACE + ["-o", out, "--force"], capsys)
    assert code == 0, lines
    assert out.read_bytes() != b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["pca.pt"]


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_fit_on_random_labels_reports_held_out_accuracy_and_warns(corpus, tmp_path, capsys):
    """Item 12: 60 random labels for 128 w dimensions separate perfectly in training; the held-out accuracy does
    not, and a warning says so. The facts are strict JSON."""
    rng = np.random.default_rng(1)
    labels = tmp_path / "random.csv"
    labels.write_text("seed,value\n" + "".join(f"{s},{int(v)}\n" for s, v in enumerate(rng.integers(0, 2, 60))))
    out = tmp_path / "random.pt"
    code, lines = run_cli(FIT + ["--labels", labels, "-o", out], capsys)
    assert code == 0, lines
    (warning,) = [ln for ln in lines if ln.startswith("warning:")]
    assert "held-out accuracy" in warning and "near chance" in warning
    assert any("held-out accuracy" in ln for ln in lines if not ln.startswith("warning:"))
    meta = _strict_json(out.with_suffix(".json").read_text())
    assert meta["train_accuracy"] == 1.0 and meta["accuracy"] < 0.8 and meta["held_out"] == 12
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_held_out_accuracy_of_random_labels_is_near_chance():
    """Unit test of the statistics: random labels on fewer samples than dimensions fit perfectly, the held-out
    accuracy stays near 0.5 and the warning is given; a planted direction is found without a warning."""
    g = torch.Generator().manual_seed(0)
    ws = torch.randn(100, W_DIM, generator=g)
    accs = []
    for seed in range(5):
        labels = torch.randint(0, 2, (100,), generator=torch.Generator().manual_seed(seed)).numpy().astype(float)
        fit = fit_direction(ws, labels)
        assert fit.train_accuracy == 1.0 and fit.held_out == 20
        assert fit.warning() is not None and "near chance" in fit.warning()
        accs.append(fit.accuracy)
    assert abs(float(np.mean(accs)) - 0.5) < 0.15, accs
    truth = torch.randn(W_DIM, generator=g)
    big = torch.randn(2000, W_DIM, generator=g)
    fit = fit_direction(big, (big @ truth).numpy())
    assert fit.accuracy > 0.9 and fit.warning() is None and math.isclose(float(fit.normal.norm()), 1.0, rel_tol=1e-5)
    # the split is fixed: the same data give the same numbers
    again = fit_direction(big, (big @ truth).numpy())
    assert again.accuracy == fit.accuracy and torch.equal(again.normal, fit.normal)


def test_interpolate_resumes_from_another_folder(corpus, tmp_path, capsys, monkeypatch):
    """Item 8: the records are known by content; info.to.path is relative to the manifest's folder."""
    monkeypatch.chdir(corpus)
    out = tmp_path / "paths"
    argv = ["--steps", "2", "--device", "cpu"]
    code, lines = run_cli(["interpolate", "rec/a.safetensors", "rec/b.safetensors", *argv, "-o", out], capsys)
    assert code == 0, lines
    first = (out / "manifest.jsonl").read_text()
    monkeypatch.chdir(corpus / "rec")
    code, lines = run_cli(["interpolate", "a.safetensors", "b.safetensors", *argv, "-o", out], capsys)
    assert code == 0 and any("nothing to do" in ln for ln in lines), lines
    assert (out / "manifest.jsonl").read_text() == first
    (entry,) = [json.loads(ln) for ln in first.splitlines()]
    assert (out / entry["info"]["to"]["path"]).resolve() == (corpus / "rec" / "b.safetensors").resolve()
    assert "rec/" not in json.dumps(entry["params"])  # no path of the folder it ran from


def test_edit_resumes_from_another_folder(corpus, tmp_path, capsys, monkeypatch):
    """Item 8: a direction file is known by its content, not by the path spelled from the current folder."""
    monkeypatch.chdir(corpus)
    out = tmp_path / "edits"
    code, lines = run_cli(EDIT + ["-d", "dirs/ok.npy", "-s", "1", "-o", out], capsys)
    assert code == 0, lines
    monkeypatch.chdir(corpus / "dirs")
    code, lines = run_cli(["edit", "../rec/a.safetensors", "--device", "cpu", "--no-identity", "-d", "ok.npy", "-s",
                           "1", "-o", out], capsys)
    assert code == 0 and any("1 already done" in ln for ln in lines), lines
