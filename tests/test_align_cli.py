"""``gantune align`` / ``gantune paste``: batches with failures, fixed names, manifest, workers, paste-back."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from gantune.cli import align_cmd
from gantune.errors import InputError
from gantune.io.manifest import read_manifest
from support import astronaut, lfw_face, two_faces


def cli_app() -> typer.Typer:
    app = typer.Typer()
    align_cmd.register(app)
    return app


def run(*args: str):
    return CliRunner().invoke(cli_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    astronaut().save(d / "astro.jpg", quality=95)
    (d / "notes.jpg").write_bytes(b"not an image at all\n")
    Image.new("RGB", (320, 240), (90, 120, 150)).save(d / "blank.png")
    two_faces()[0].save(d / "two.png")
    lfw_face(5, 8).save(d / "grey.png")
    (d / "sub").mkdir()
    astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "sub" / "astro.png")
    return d


def test_align_is_registered_in_the_main_app():
    from gantune.cli.app import COMMAND_MODULES

    assert "align_cmd" in COMMAND_MODULES


def test_batch_with_failures_keeps_names_and_reports(photos, tmp_path):
    out = tmp_path / "aligned"
    inputs = [photos / n for n in ("astro.jpg", "notes.jpg", "blank.png", "missing.jpg", "two.png", "grey.png")]
    inputs.append(photos / "sub" / "astro.png")  # same stem as the first input
    res = run("align", *inputs, "-o", out, "--size", "128")
    assert res.exit_code == 1, res.output  # not every input gave a crop
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["astro.png", "astro_2.png", "grey.png", "two.png"]
    for n in written:
        assert Image.open(out / n).size == (128, 128)
    entries = read_manifest(out / "manifest.jsonl")
    # one line per input, in input order, input paths relative to the manifest's folder
    assert [out / e["input"]["path"] for e in entries] == [out / os.path.relpath(p, out) for p in inputs]
    by = {e["input"]["path"].split("/")[-1] if "sub" not in e["input"]["path"] else "sub/astro.png": e for e in entries}
    assert [e["status"] for e in entries] == ["ok", "failed", "failed", "failed", "ok", "ok", "ok"]
    assert "not a readable image" in by["notes.jpg"]["error"]
    assert "no face found" in by["blank.png"]["error"]
    assert "no such file" in by["missing.jpg"]["error"]
    e = by["astro.jpg"]
    assert e["outputs"] == {"face1": "astro.png"} and len(e["input"]["sha256"]) == 64
    info = e["info"]
    chosen = [f for f in info["faces"] if "quad" in f]
    assert len(chosen) == 1 and chosen[0]["index"] == 1 and chosen[0]["output"] == "astro.png"
    assert np.array(chosen[0]["quad"]).shape == (4, 2) and np.array(chosen[0]["landmarks"]).shape == (68, 2)
    assert all(np.array(f["landmarks"]).shape == (68, 2) for f in info["faces"])  # landmarks of every face found
    assert by["two.png"]["info"]["faces_found"] == 2
    # the mirrored copy in sub/ went to astro_2.png and is the mirror image of astro.png (same face, flipped)
    a = np.asarray(Image.open(out / "astro.png"), dtype=float)
    b = np.asarray(Image.open(out / "astro_2.png"), dtype=float)[:, ::-1]
    assert np.abs(a - b).mean() < 12.0


def test_faces_all_and_workers_give_identical_results(photos, tmp_path):
    inputs = [photos / "two.png", photos / "blank.png", photos / "grey.png"]
    one, two = tmp_path / "w1", tmp_path / "w2"
    r1 = run("align", *inputs, "-o", one, "--size", "64", "--faces", "all")
    r2 = run("align", *inputs, "-o", two, "--size", "64", "--faces", "all", "--workers", "2")
    assert r1.exit_code == 1 and r2.exit_code == 1
    names = sorted(p.name for p in one.glob("*.png"))
    assert names == ["grey_face1.png", "two_face1.png", "two_face2.png"]
    assert sorted(p.name for p in two.glob("*.png")) == names
    for n in names:
        assert (one / n).read_bytes() == (two / n).read_bytes()
    m1, m2 = read_manifest(one / "manifest.jsonl"), read_manifest(two / "manifest.jsonl")
    strip = lambda es: [{k: v for k, v in e.items() if k not in ("timings", "params")} for e in es]  # noqa: E731
    assert strip(m1) == strip(m2)
    # face1 is the larger face
    faces = m1[0]["info"]["faces"]
    area = lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])  # noqa: E731
    assert area(faces[0]) > area(faces[1]) and faces[0]["output"].endswith("two_face1.png")


def test_face_number_and_exit_code(photos, tmp_path):
    res = run("align", photos / "two.png", "-o", tmp_path / "a", "--size", "64", "--faces", "2")
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "a").glob("*.png")] == ["two.png"]
    res = run("align", photos / "two.png", "-o", tmp_path / "b", "--size", "64", "--faces", "3")
    assert res.exit_code == 1
    (e,) = read_manifest(tmp_path / "b" / "manifest.jsonl")
    assert e["status"] == "failed" and "face 3 asked for, but only 2 found" in e["error"]


def test_bad_options_are_user_errors(photos, tmp_path):
    res = run("align", photos / "astro.jpg", "-o", tmp_path, "--size", "300")
    assert isinstance(res.exception, InputError) and "power of two" in str(res.exception)
    res = run("align", photos / "astro.jpg", "-o", tmp_path, "--faces", "most")
    assert isinstance(res.exception, InputError)


def test_paste_back_from_manifest_json_and_record(photos, tmp_path):
    import torch

    from gantune.io.record import InversionRecord

    out = tmp_path / "aligned"
    res = run("align", photos / "astro.jpg", photos / "two.png", "-o", out, "--size", "256", "--faces", "all")
    assert res.exit_code == 0, res.output
    original = np.asarray(astronaut(), dtype=float)
    manifest = out / "manifest.jsonl"
    entry = read_manifest(manifest)[0]
    face = entry["info"]["faces"][0]
    l, t, r, b = (int(v) for v in face["box"])

    def check(path):
        img = np.asarray(Image.open(path).convert("RGB"), dtype=float)
        assert img.shape == original.shape
        assert np.abs(img[t:b, l:r] - original[t:b, l:r]).mean() < 5.0  # the JPEG original vs its own crop

    # 1. the unchanged crop itself: found in the manifest by its file name
    res = run("paste", out / "astro_face1.png", "--onto", photos / "astro.jpg", "--transform", manifest, "-o", tmp_path / "p1")
    assert res.exit_code == 0, res.output
    check(tmp_path / "p1" / "astro_face1_pasted.png")
    # without --onto: the manifest names the photo
    res = run("paste", out / "astro_face1.png", "--transform", manifest, "-o", tmp_path / "p0")
    assert res.exit_code == 0, res.output
    name = "astro_face1_pasted.png"
    assert (tmp_path / "p0" / name).read_bytes() == (tmp_path / "p1" / name).read_bytes()
    # 2. an "edited" copy under another name: found by the original's path; the face number from --face
    edited = tmp_path / "edited.png"
    Image.open(out / "astro_face1.png").save(edited)
    res = run("paste", edited, "--onto", photos / "astro.jpg", "--transform", manifest, "--face", "1", "-o", tmp_path)
    assert res.exit_code == 0, res.output
    check(tmp_path / "edited_pasted.png")
    # astro.jpg has one face (its weak second HOG detection is not counted): no --face needed
    res = run("paste", edited, "--onto", photos / "astro.jpg", "--transform", manifest, "-o", tmp_path / "y")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "y" / "edited_pasted.png").read_bytes() == (tmp_path / "edited_pasted.png").read_bytes()
    # two.png has two: without --face the choice is ambiguous, and nothing is written
    Image.open(out / "two_face1.png").save(tmp_path / "edited2.png")
    res = run("paste", tmp_path / "edited2.png", "--onto", photos / "two.png", "--transform", manifest, "-o",
              tmp_path / "x")
    assert res.exit_code == 1 and "--face" in read_manifest(tmp_path / "x" / "manifest.jsonl")[0]["error"]
    assert not list((tmp_path / "x").glob("*.png"))
    # 3. a transform JSON and 4. an inversion record carrying meta["align"]
    (tmp_path / "t.json").write_text(json.dumps(face))
    res = run("paste", edited, "--onto", photos / "astro.jpg", "--transform", tmp_path / "t.json", "-o", tmp_path / "p3")
    assert res.exit_code == 0, res.output
    check(tmp_path / "p3" / "edited_pasted.png")
    rec = tmp_path / "rec.safetensors"
    InversionRecord(latent=torch.zeros(1, 8), latent_kind="w", method="test", meta={"align": face}).save(rec)
    small = tmp_path / "recon.png"
    Image.open(edited).resize((64, 64), Image.LANCZOS).save(small)  # e.g. a low-resolution reconstruction
    res = run("paste", small, "--onto", photos / "astro.jpg", "--transform", rec, "-o", tmp_path / "p4")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "p4" / "recon_pasted.png").size == (512, 512)
    # pasting a face into the wrong photo is caught when the aspect ratio differs
    res = run("paste", edited, "--onto", photos / "blank.png", "--transform", tmp_path / "t.json", "-o", tmp_path / "bad")
    assert res.exit_code == 1 and "aspect" in read_manifest(tmp_path / "bad" / "manifest.jsonl")[0]["error"]
