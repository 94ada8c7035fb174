"""A corpus of bad inputs, built at test time, through the real command line (``gantune.cli.app.main``).

For every case: the exit code, exactly one line that says what went wrong (no traceback), no file left behind for
the bad item (and no output folder at all when the command is refused), the other items of the batch processed,
and every input byte-identical afterwards. Models are the packaged demo-faces files (64 px, fast)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gantune.io.record import InversionRecord
from support import run_cli

HS = ["--method", "hyperstyle", "--weights", "demo-faces-hypernet", "--encoder", "demo-faces-w-encoder",
      "--device", "cpu"]


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (a decompression bomb as far as the header goes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class Evil:
    """Pickled with a reduce that would create a marker file if the pickle were ever executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    src = root / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    face = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    face.save(src / "good.png")
    buf = io.BytesIO()
    face.save(buf, format="PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    face.save(buf, format="JPEG")
    (src / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (src / "corrupt.png").write_bytes(b"this is not an image at all\n" * 10)
    (src / "empty.png").write_bytes(b"")
    (src / "notes.jpg").write_text("shopping list: eggs\n")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(src / "tiny.png")
    (src / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    # inputs that are odd but fine
    face.convert("CMYK").save(src / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (64, 64)) ).astype(np.uint16)).save(src / "sixteen.png")
    rgba = face.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°
    face.save(src / "rotated.jpg", exif=exif.tobytes())
    # records: one good, several bad
    rec = root / "rec"
    rec.mkdir()
    good = InversionRecord(latent=torch.randn(1, 128) * 0.1, latent_kind="w", method="test",
                           meta={"generator": {"spec": "demo-faces"}})
    good.save(rec / "good.safetensors")
    (rec / "random.safetensors").write_bytes(os.urandom(256))
    from safetensors.torch import save_file

    save_file({"latent": torch.zeros(1, 128)}, str(rec / "nometa.safetensors"))
    InversionRecord(latent=torch.full((1, 128), float("nan")), latent_kind="w", method="test",
                    meta={"generator": {"spec": "demo-faces"}}).save(rec / "nan.safetensors")
    InversionRecord(latent=torch.zeros(1, 128), latent_kind="w", method="test",
                    meta={"generator": {"spec": "http://127.0.0.1:9/evil.pt"}}).save(rec / "url.safetensors")
    InversionRecord(latent=torch.zeros(1, 64), latent_kind="w", method="test",
                    meta={"generator": {"spec": "demo-faces"}}).save(rec / "wrongdim.safetensors")
    save_file({"latent": torch.zeros(1, 128)}, str(rec / "badjson.safetensors"), metadata={"gantune": "{not json"})
    save_file({"latent": torch.zeros(1, 128)}, str(rec / "future.safetensors"),
              metadata={"gantune": json.dumps({"format_version": 99, "method": "x", "latent_kind": "w"})})
    save_file({"latent": torch.zeros(1, 128), "extra": torch.zeros(2)}, str(rec / "extra.safetensors"),
              metadata={"gantune": json.dumps({"format_version": 1, "method": "x", "latent_kind": "w"})})
    # directions and checkpoints
    d = root / "dirs"
    d.mkdir()
    np.save(d / "nan.npy", np.full(128, np.nan, np.float32))
    np.save(d / "ok.npy", rng.standard_normal(128).astype(np.float32))
    marker = root / "PWNED"
    torch.save(Evil(str(marker)), d / "evil.pt")
    (d / "evil.pkl").write_bytes(Path(d / "evil.pt").read_bytes())
    (d / "random.bin").write_bytes(os.urandom(4096))
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}}, d / "whole.pt")
    (d / "truncated.pt").write_bytes((d / "whole.pt").read_bytes()[:200])
    (root / "afile").write_text("an existing file\n")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "out" not in p.relative_to(root).parts[:1]}


def _error_lines(lines):
    return [ln for ln in lines if ln.startswith("error:") or "failed:" in ln]


# --- items of a batch that fail, while the good item is processed ----------------------------------------------------
BATCH_CASES = {
    # name: (command prefix, bad input (relative to the corpus), words the one line must contain)
    "corrupt image": (["invert", *HS], "in/corrupt.png", "not a readable image"),
    "truncated png": (["invert", *HS], "in/truncated.png", "not a readable image"),
    "truncated jpeg": (["invert", *HS], "in/truncated.jpg", "not a readable image"),
    "empty file": (["invert", *HS], "in/empty.png", "not a readable image"),
    "text with an image suffix": (["invert", *HS], "in/notes.jpg", "not a readable image"),
    "too small": (["invert", *HS], "in/tiny.png", "too small"),
    "decompression bomb": (["invert", *HS], "in/bomb.png", "too large"),
    "missing photo": (["invert", *HS], "in/missing.png", "no such file"),
    "align: corrupt image": (["align", "--size", "64"], "in/corrupt.png", "not a readable image"),
    "align: no face": (["align", "--size", "64"], "in/good.png", "no face found"),
    "record: random bytes": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/random.safetensors", "not a safetensors file"),
    "record: no gantune metadata": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/nometa.safetensors", "not a gantune"),
    "record: NaN latent": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/nan.safetensors", "finite"),
    "record: names a URL": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/url.safetensors", "never fetched"),
    "record: another generator's w": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/wrongdim.safetensors", "w has 128"),
    "record: corrupt metadata": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/badjson.safetensors", "corrupt record metadata"),
    "record: newer format": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/future.safetensors", "upgrade gantune"),
    "record: unexpected tensor": (["edit", "-d", "dirs/ok.npy", "-s", "1"], "rec/extra.safetensors", "unexpected tensor"),
    "adapt: random bytes": (["adapt", "--target", "demo-faces", "--layers", "all"], "rec/random.safetensors",
                            "not a safetensors file"),
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_a_bad_item_fails_alone(case, corpus, tmp_path, capsys):
    cmd, bad, words = BATCH_CASES[case]
    good = "rec/good.safetensors" if bad.startswith("rec/") else "in/good.png"
    if cmd[0] == "align":
        good = None  # random pixels hold no face: the align batch pairs the bad file with a real face below
    before = _snapshot(corpus)
    out = tmp_path / "out"
    inputs = [corpus / bad] + ([corpus / good] if good else [])
    if cmd[0] == "align":
        from skimage import data

        Image.fromarray(data.astronaut()).save(tmp_path / "astro.png")
        inputs.append(tmp_path / "astro.png")
    argv = [cmd[0], *inputs, *[corpus / a if a.startswith("dirs/") else a for a in cmd[1:]], "-o", out]
    code, lines = run_cli(argv, capsys)
    assert code == 1, lines
    assert not any("Traceback" in ln for ln in lines)
    (line,) = [ln for ln in _error_lines(lines)]  # exactly one line about the bad item
    assert words in line and Path(bad).name in line, line
    manifest = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(inputs)  # one line per input
    by = {Path(e["input"]["path"]).name: e for e in manifest}
    assert by[Path(bad).name]["status"] == "failed" and words in by[Path(bad).name]["error"]
    assert by[Path(bad).name]["outputs"] == {}
    ok = [e for e in manifest if e["status"] == "ok"]
    assert len(ok) == len(inputs) - 1  # the other items were processed
    written = {p.name for p in out.rglob("*") if p.is_file()}
    listed = {Path(p).name for e in ok for p in e["outputs"].values()} | {"manifest.jsonl"}
    assert written == listed  # nothing left behind for the bad item, no temporary files
    assert _snapshot(corpus) == before


def test_odd_but_valid_images_all_invert(corpus, tmp_path, capsys):
    names = ["cmyk.jpg", "sixteen.png", "alpha.png", "rotated.jpg", "good.png"]
    before = _snapshot(corpus)
    code, lines = run_cli(["invert", *[corpus / "in" / n for n in names], *HS, "-o", tmp_path / "out"], capsys)
    assert code == 0, lines
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(Path(n).stem + ".png" for n in names)
    assert _snapshot(corpus) == before


# --- commands refused before any work: exit 2, one line, nothing written ---------------------------------------------
REFUSED = {
    "invert -o is the input folder": (["invert", "in/good.png", *HS, "-o", "in"], "would overwrite the input"),
    "align -o is the input folder": (["align", "in", "-o", "in", "--size", "64"], "would overwrite the input"),
    "invert -o names a file": (["invert", "in/good.png", *HS, "-o", "afile"], "is a file"),
    "invert -o names a file, unknown weights": (["invert", "in/good.png", "--weights", "no-such-model", "-o", "afile"],
                                                "is a file"),
    "edit -o names a file": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "-o", "afile"], "is a file"),
    "generate -o names a file": (["generate", "--weights", "demo-faces", "--seeds", "0", "-o", "afile"], "is a file"),
    "align -o names a file": (["align", "in/good.png", "-o", "afile"], "is a file"),
    "-o looks like an image name": (["generate", "--weights", "demo-faces", "--seeds", "0", "-o", "NEW/x.png"],
                                    "looks like a file name"),
    "strength nan": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "--strength", "nan", "-o", "NEW"], "finite"),
    "strength inf": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "--strength", "inf", "-o", "NEW"], "finite"),
    "strength 1e400": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "--strength", "1e400", "-o", "NEW"],
                       "finite"),
    "strength empty": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "--strength=", "-o", "NEW"], "empty"),
    "strength strip too long": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "--strength=-3:3:100000", "-o",
                                 "NEW"], "the limit is"),
    "strength twice": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "--strength", "1,1", "-o", "NEW"],
                       "appears twice"),
    "direction twice": (["edit", "rec/good.safetensors", "-d", "dirs/ok.npy", "-d", "dirs/ok.npy", "-o", "NEW"],
                        "given twice"),
    "direction missing": (["edit", "rec/good.safetensors", "-d", "dirs/none.pt", "-o", "NEW"], "no such direction"),
    "direction holds NaN": (["edit", "rec/good.safetensors", "-d", "dirs/nan.npy", "-o", "NEW"], "finite"),
    "direction is a malicious pickle": (["edit", "rec/good.safetensors", "-d", "dirs/evil.pt", "-o", "NEW"], "evil.pt"),
    "generator is a malicious pickle": (["generate", "--weights", "dirs/evil.pkl", "--seeds", "0", "-o", "NEW"],
                                        "evil.pkl"),
    "truncation nan": (["generate", "--weights", "demo-faces", "--truncation", "nan", "-o", "NEW"], "finite"),
    "seeds not numbers": (["generate", "--weights", "demo-faces", "--seeds", "a-b", "-o", "NEW"], "a-b"),
    "unknown weights name": (["invert", "in/good.png", "--weights", "no-such-model", "-o", "NEW"], "no-such-model"),
    "unknown method": (["invert", "in/good.png", "--method", "nope", "-o", "NEW"], "nope"),
    "param without =": (["invert", "in/good.png", "--method", "optim", "--param", "space", "-o", "NEW"], "KEY=VALUE"),
    "param nan": (["invert", "in/good.png", "--method", "optim", "--weights", "demo-faces", "--param",
                   "learning_rate=nan", "-o", "NEW"], "finite"),
    "optim without generator": (["invert-optim", "in/good.png", "-o", "NEW"], "needs the generator"),
    "overparam random noise": (["invert-overparam", "in/good.png", "--weights", "demo-faces", "--noise", "random",
                                "-o", "NEW"], "cannot be re-rendered"),
    "weights info random bytes": (["weights", "info", "dirs/random.bin"], "random.bin"),
    "weights info truncated .pt": (["weights", "info", "dirs/truncated.pt"], "truncated.pt"),
    "weights import -o folder": (["weights", "import", "demo-faces", "-o", "dirs", "--force"], "is a folder"),
    "paste without transform file": (["paste", "in/good.png", "-t", "in/none.jsonl", "-o", "NEW"], "none.jsonl"),
    "adapt target missing": (["adapt", "rec/good.safetensors", "--target", "dirs/none.pt", "-o", "NEW"], "none.pt"),
    "compile on cpu": (["invert", "in/good.png", *HS, "--compile", "-o", "NEW"], "for CUDA devices, not cpu"),
    "compile on cpu, invert-hyper": (["invert-hyper", "in/good.png", "--weights", "demo-faces-hypernet", "--encoder",
                                      "demo-faces-w-encoder", "--device", "cpu", "--compile", "-o", "NEW"],
                                     "for CUDA devices, not cpu"),
    "compile with optim": (["invert", "in/good.png", "--method", "optim", "--weights", "demo-faces", "--compile",
                            "-o", "NEW"], "for --method hyperstyle, not optim"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_command_is_refused_in_one_line(case, corpus, capsys, monkeypatch):
    argv, words = REFUSED[case]
    monkeypatch.chdir(corpus)
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")  # a missing default checkpoint is named, never downloaded here
    before = _snapshot(corpus)
    code, lines = run_cli(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert words in lines[0], lines[0]
    assert not (corpus / "NEW").exists()  # nothing written
    assert not (corpus / "PWNED").exists()  # no pickle ran
    assert _snapshot(corpus) == before


def test_compile_on_cpu_is_refused_even_when_every_input_is_done(corpus, tmp_path, capsys, monkeypatch):
    """``--compile`` is checked before the resume check: a finished folder does not hide the error."""
    monkeypatch.chdir(corpus)
    out = tmp_path / "done"
    assert run_cli(["invert", "in/good.png", *HS, "-o", str(out)], capsys)[0] == 0
    code, lines = run_cli(["invert", "in/good.png", *HS, "--compile", "-o", str(out)], capsys)
    assert code == 2 and len(lines) == 1 and "for CUDA devices, not cpu" in lines[0], lines
