"""The item runner seen from the command line: resume after a kill, skip and redo rules, unique edit names, file
modes, one manifest schema (packaged demo-faces models, 64 px)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gantune.cli.app import main

HS = ["--method", "hyperstyle", "--weights", "demo-faces-hypernet", "--encoder", "demo-faces-w-encoder",
      "--device", "cpu"]


def run_cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return (e.value.code or 0), capsys.readouterr().err


def manifest(folder: Path) -> list[dict]:
    return [json.loads(ln) for ln in (folder / "manifest.jsonl").read_text().splitlines()]


def photos(folder: Path, n: int, side: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        p = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_a_killed_batch_resumes_where_it_stopped(tmp_path, capsys):
    inputs = photos(tmp_path / "in", 5)
    out = tmp_path / "out"
    # an optimisation long enough per image (about half a second) that the kill lands inside the third item
    argv = ["invert", *inputs, "--method", "optim", "--weights", "demo-faces", "--param", "loss=l2", "--param",
            "num_steps=60", "--param", "w_avg_samples=200", "--device", "cpu", "-o", out]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", "from gantune.cli.app import main; main()", *map(str, argv)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            m = out / "manifest.jsonl"
            if m.is_file() and len(m.read_text().splitlines()) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    first = manifest(out)
    assert [e["name"] for e in first] == ["p0", "p1"] and all(e["status"] == "ok" for e in first)
    assert not (out / "p2.safetensors").exists()

    code, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "2 already done, skipped" in err and "3 inverted, 0 failed, 2 skipped" in err
    entries = manifest(out)
    assert [e["name"] for e in entries] == ["p0", "p1", "p2", "p3", "p4"]  # one line per input, input order
    assert entries[:2] == first  # the finished items were not redone
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for e in entries:
        assert set(e) == {"status", "name", "input", "outputs", "error", "params", "timings", "metrics", "info"}
        assert (out / e["outputs"]["image"]).is_file() and (out / e["outputs"]["record"]).is_file()
        assert (out / e["input"]["path"]).resolve() == (tmp_path / "in" / f"{e['name']}.png").resolve()


def test_rerun_skips_done_items_and_redoes_changed_ones(tmp_path, capsys):
    inputs = photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    argv = ["invert", *inputs, *HS, "--iters", "1", "-o", out]
    assert run_cli(argv, capsys)[0] == 0
    stamp = {e["name"]: e["timings"] for e in manifest(out)}
    code, err = run_cli(argv, capsys)
    assert code == 0 and "nothing to do" in err and "HyperStyle" not in err  # no model loaded
    # a changed input is redone, the other is not
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(inputs[1])
    code, err = run_cli(argv, capsys)
    assert code == 0 and "1 inverted, 0 failed, 1 skipped" in err
    now = {e["name"]: e["timings"] for e in manifest(out)}
    assert now["p0"] == stamp["p0"] and now["p1"] != stamp["p1"]
    # other parameters redo everything; so does --overwrite
    code, err = run_cli(argv[:-2] + ["--resize", "16", "-o", out], capsys)
    assert "2 inverted" in err and Image.open(out / "p0.png").size == (16, 16)
    code, err = run_cli(argv[:-2] + ["--resize", "16", "--overwrite", "-o", out], capsys)
    assert "2 inverted" in err
    assert len(manifest(out)) == 2


def test_edit_names_are_unique_and_the_manifest_lists_what_was_written(tmp_path, capsys):
    gen = tmp_path / "gen"
    assert run_cli(["generate", "--weights", "demo-faces", "--seeds", "1", "-o", gen, "--no-grid"], capsys)[0] == 0
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(128).astype(np.float32))
    out = tmp_path / "edits"
    code, err = run_cli(["edit", gen / "seed0001.safetensors", "-d", tmp_path / "d.npy", "--strength=0.001,0.002,0.004",
                         "-o", out], capsys)
    assert code == 0, err
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["seed0001_d_p0.001.png", "seed0001_d_p0.002.png", "seed0001_d_p0.004.png", "seed0001_sheet.png"]
    (e,) = manifest(out)
    assert sorted(e["outputs"].values()) == written
    ids = e["metrics"]["identity_to_reconstruction"]  # tiny edits keep the person
    assert sorted(ids) == [f"seed0001_d_p0.00{k}" for k in (1, 2, 4)] and all(0 <= v < 0.1 for v in ids.values())
    out2 = tmp_path / "strip"
    code, err = run_cli(["edit", gen / "seed0001.safetensors", "-d", tmp_path / "d.npy", "--strength", "0:1:201",
                         "--no-identity", "-o", out2], capsys)
    assert code == 0, err
    files = {p.name for p in out2.glob("seed0001_d_*.png")}
    (e,) = manifest(out2)
    assert len(files) == 201 and {v for k, v in e["outputs"].items() if k != "sheet"} == files
    assert "seed0001_d_p0.005.png" in files and "seed0001_d_0.png" in files and "seed0001_d_p1.png" in files


def test_edit_and_adapt_run_without_dlibs_models(tmp_path, capsys, monkeypatch):
    """The identity distance is a side metric: where dlib's models are missing (as on a bare GPU machine), edit and
    adapt write their images and say once why the metric is absent, instead of failing every record."""
    from gantune.align import landmarks
    from gantune.errors import WeightsError

    real_path = landmarks.model_path

    def missing(name):
        if name == "dlib-landmarks-68":
            raise WeightsError("dlib model shape_predictor_68_face_landmarks.dat not found",
                               "pip install face_recognition_models")
        return real_path(name)

    def hide_the_model():
        monkeypatch.setattr(landmarks, "model_path", missing)
        landmarks.shape_predictor.cache_clear()  # as in a process that never had it

    gen = tmp_path / "gen"
    assert run_cli(["generate", "--weights", "demo-faces", "--seeds", "1", "-o", gen, "--no-grid"], capsys)[0] == 0
    hide_the_model()
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(128).astype(np.float32))
    code, err = run_cli(["edit", gen / "seed0001.safetensors", "-d", tmp_path / "d.npy", "-s", "1", "-o",
                         tmp_path / "ed"], capsys)
    assert code == 0, err
    assert err.count("note: no identity distances (dlib model shape_predictor_68") == 1
    (e,) = manifest(tmp_path / "ed")
    assert e["status"] == "ok" and "identity_to_reconstruction" not in (e.get("metrics") or {})
    assert e["params"]["identity"] is False  # the manifest says what was computed, not what was asked
    assert (tmp_path / "ed" / "seed0001_d_p1.png").exists()
    # a rerun on the same machine has nothing to do (and no note); once the models are there, it adds the metric
    code, err = run_cli(["edit", gen / "seed0001.safetensors", "-d", tmp_path / "d.npy", "-s", "1", "-o",
                         tmp_path / "ed"], capsys)
    assert code == 0 and "1 skipped" in err and "note" not in err, err
    monkeypatch.undo()
    code, err = run_cli(["edit", gen / "seed0001.safetensors", "-d", tmp_path / "d.npy", "-s", "1", "-o",
                         tmp_path / "ed"], capsys)
    assert code == 0 and "1 edited" in err, err
    (e,) = manifest(tmp_path / "ed")
    assert e["params"]["identity"] is True and "identity_to_reconstruction" in e["metrics"]
    hide_the_model()
    code, err = run_cli(["adapt", gen / "seed0001.safetensors", "--target", "demo-faces", "-o", tmp_path / "ad"],
                        capsys)
    assert code == 0, err
    assert "note: no identity distances" in err and (tmp_path / "ad" / "seed0001.png").exists()
    code, err = run_cli(["edit", gen / "seed0001.safetensors", "-d", tmp_path / "d.npy", "-s", "2", "--no-identity",
                         "-o", tmp_path / "ed"], capsys)
    assert code == 0 and "identity" not in err


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_respect_the_umask(tmp_path, capsys, umask):
    old = os.umask(umask)
    try:
        import gantune.io.atomic as atomic

        atomic._UMASK = None  # read again
        assert run_cli(["generate", "--weights", "demo-faces", "--seeds", "0", "-o", tmp_path / "g"], capsys)[0] == 0
    finally:
        os.umask(old)
        atomic._UMASK = None
    for name in ("seed0000.png", "seed0000.safetensors", "manifest.jsonl", "grid.png"):
        assert (tmp_path / "g" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_paste_output_never_overwrites_the_photo(tmp_path, capsys):
    """An align manifest names the photo; pasting with -o into the photo's folder cannot write over it."""
    from skimage import data

    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(data.astronaut()).save(src / "astro_pasted.png")  # the name paste would choose for astro.png
    Image.fromarray(data.astronaut()).save(src / "astro.png")
    aligned = tmp_path / "aligned"
    assert run_cli(["align", src / "astro.png", "-o", aligned, "--size", "64"], capsys)[0] == 0
    before = (src / "astro_pasted.png").read_bytes()
    code, err = run_cli(["paste", aligned / "astro.png", "-t", aligned / "manifest.jsonl", "--onto",
                         src / "astro_pasted.png", "-o", src], capsys)
    assert code == 2 and "would overwrite the input" in err
    assert (src / "astro_pasted.png").read_bytes() == before


def test_progress_inside_long_items_reaches_logs(tmp_path, capsys, monkeypatch):
    """Not on a terminal: a line per item, and lines inside an item (iterations, steps) every few seconds."""
    monkeypatch.setenv("GANTUNE_PROGRESS_EVERY", "0")
    inputs = photos(tmp_path / "in", 1)
    code, err = run_cli(["invert", *inputs, *HS, "--iters", "3", "-o", tmp_path / "h"], capsys)
    assert code == 0 and [f"iteration {t}/3" in err for t in (1, 2, 3)] == [True] * 3
    code, err = run_cli(["invert", *inputs, "--method", "optim", "--weights", "demo-faces", "--param", "loss=l2",
                         "--param", "num_steps=4", "--param", "w_avg_samples=50", "--device", "cpu", "-o",
                         tmp_path / "o"], capsys)
    assert code == 0 and "p0.png: projector step 4/4" in err


def test_the_command_line_starts_without_torch():
    """`gantune --help` and option errors stay instant: no command module imports torch at import time."""
    code = "import sys, gantune.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
