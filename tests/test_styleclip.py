"""StyleCLIP global directions: CLIP files, text directions, statistics (import and computation), edit --text."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from gantune.editing import clip as sclip
from gantune.editing import styleclip as sc
from gantune.editing import styleclip_compute as scc
from gantune.editing import styleclip_stats as ss
from gantune.weights import torchscript as ts
from gantune.errors import InputError, WeightsError


def tiny_clip(seed=0):
    """A randomly initialised CLIP of the OpenAI layout (QuickGELU, heads = width / 64), small."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    return CLIP(embed_dim=16, quick_gelu=True,
                vision_cfg=CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=16, image_size=32),
                text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)).eval()


def _jit_archive(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {"encode_image": torch.randn(1, 3, 32, 32),
                                                "encode_text": torch.zeros(1, 77, dtype=torch.long)},
                                        check_trace=False)
    traced.save(str(path))


def test_clip_archive_is_read_without_running_it(tmp_path):
    m = tiny_clip()
    _jit_archive(m, tmp_path / "clip.pt")
    state = ts.read_jit_state_dict(tmp_path / "clip.pt")
    ref = m.state_dict()
    assert set(ref) <= set(state) and all(k.endswith("attn_mask") for k in set(state) - set(ref))  # buffers kept
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    model, tok = sclip.load_clip(tmp_path / "clip.pt")
    img = torch.randn(2, 3, 32, 32)
    tokens = tok(["a face", "a smiling face"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(img), m.encode_image(img))
        assert torch.equal(model.encode_text(tokens), m.encode_text(tokens))
    # a plain state dict works too
    torch.save(ref, tmp_path / "sd.pt")
    model2, _ = sclip.load_clip(tmp_path / "sd.pt")
    with torch.no_grad():
        assert torch.equal(model2.encode_image(img), m.encode_image(img))


def test_clip_archive_with_a_foreign_global_is_refused(tmp_path):
    import zipfile

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(WeightsError, match=r"builtin\w*\.print"):
        ts.read_jit_state_dict(tmp_path / "evil.pt")


def test_official_vit_b_32_layout_is_built_from_its_keys():
    import open_clip

    official = open_clip.create_model("ViT-B-32", pretrained=None)  # random weights, the published layout
    model = sclip.clip_from_state_dict(official.state_dict())
    assert model.visual.conv1.weight.shape == (768, 3, 32, 32)
    assert len(model.visual.transformer.resblocks) == 12 and len(model.transformer.resblocks) == 12
    assert model.text_projection.shape == (512, 512) and sclip.clip_image_size(model) == 224
    assert torch.equal(model.visual.proj, official.visual.proj)


def test_templates_and_text_direction():
    import open_clip

    t = sc.imagenet_templates()
    assert len(t) == 79 and "a photo of many {}." not in t and t[0] == "a bad photo of a {}."
    m, tok = tiny_clip(), open_clip.get_tokenizer("ViT-B-32")
    e = sc.text_embedding(m, tok, "a face")
    assert abs(float(e.norm()) - 1) < 1e-5
    # the embedding is the normalised mean of the normalised template embeddings
    with torch.no_grad():
        f = m.encode_text(tok([x.format("a face") for x in t])).float()
    f = f / f.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(e, f.mean(0) / f.mean(0).norm())
    d = sc.text_direction(m, tok, "a smiling face", "a face")
    torch.testing.assert_close(d, (sc.text_embedding(m, tok, "a smiling face") - e)
                               / (sc.text_embedding(m, tok, "a smiling face") - e).norm())
    with pytest.raises(InputError, match="same CLIP embedding"):
        sc.text_direction(m, tok, "a face", "a face")


def _stats(G, clip_dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = [s.name for s in G.specs if s.kind == "conv"]
    n = sum(s.in_ch for s in G.specs if s.kind == "conv")
    rel = torch.randn(n, clip_dim, generator=g)
    rel = rel / rel.norm(dim=-1, keepdim=True)
    mean = {s.name: torch.randn(s.in_ch, generator=g) for s in G.specs}
    std = {s.name: torch.rand(s.in_ch, generator=g) + 0.5 for s in G.specs}
    return ss.StyleStats(layers, rel, mean, std, {"test": True})


def test_global_direction_is_styleclips_formula(tiny_G):
    st = _stats(tiny_G)
    dt = torch.randn(16)
    dt = dt / dt.norm()
    beta = 0.3
    gd = sc.global_direction(st, dt, beta)
    r = st.relevance.numpy() @ dt.numpy()
    r[np.abs(r) < beta] = 0
    r = r / np.abs(r).max()
    assert gd.channels == int((r != 0).sum()) > 0
    start = 0
    for s in tiny_G.specs:
        if s.kind != "conv":
            assert s.name not in gd.offsets  # toRGB styles stay
            continue
        want = r[start:start + s.in_ch] * st.s_std[s.name].numpy()
        np.testing.assert_allclose(gd.offsets[s.name].numpy(), want, rtol=1e-5, atol=1e-6)
        start += s.in_ch
    assert abs(abs(gd.top[0][2]) - 1.0) < 1e-6
    with pytest.raises(InputError, match="no style channel reaches --beta 1.01"):
        sc.global_direction(st, dt, 1.01)


def test_published_files_are_mapped_onto_layer_names(tiny_G, tmp_path):
    specs = tiny_G.specs
    means = [np.random.randn(s.in_ch).astype(np.float32) for s in specs]
    stds = [np.random.rand(s.in_ch).astype(np.float32) for s in specs]
    with open(tmp_path / "S_mean_std", "wb") as f:
        pickle.dump([means, stds], f, protocol=pickle.HIGHEST_PROTOCOL)
    convs = [s for s in specs if s.kind == "conv"]
    k = 4  # StyleCLIP's PyTorch port covers a prefix of the conv layers
    rows = sum(s.in_ch for s in convs[:k])
    np.save(tmp_path / "fs3.npy", np.random.randn(rows, 16).astype(np.float32))
    st = ss.import_styleclip_stats(tiny_G, tmp_path / "fs3.npy", tmp_path / "S_mean_std")
    assert st.layers == [s.name for s in convs[:k]]
    assert "b4.torgb" in st.s_std and np.array_equal(st.s_std["b8.conv1"].numpy(), stds[3])  # b8.conv1 is index 3
    st.check(tiny_G)
    np.save(tmp_path / "bad.npy", np.random.randn(rows + 1, 16).astype(np.float32))
    with pytest.raises(InputError, match="do not end at a conv layer"):
        ss.import_styleclip_stats(tiny_G, tmp_path / "bad.npy", tmp_path / "S_mean_std")
    with open(tmp_path / "short", "wb") as f:
        pickle.dump([means[:-1], stds[:-1]], f)
    with pytest.raises(InputError, match="style layers"):
        ss.import_styleclip_stats(tiny_G, tmp_path / "fs3.npy", tmp_path / "short")

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with open(tmp_path / "evil", "wb") as f:
        pickle.dump([Evil(), stds], f)
    with pytest.raises(WeightsError, match=r"builtin\w*\.print"):
        ss.read_s_mean_std(tmp_path / "evil")


def test_computed_statistics_and_resume(tmp_path):
    from support import tiny_generator

    tiny_G = tiny_generator(0, channel_max=8)  # 8 channels a layer: 24 up to 8 px
    clip = tiny_clip()
    kw = dict(images=2, stat_samples=200, seed=1, max_res=8, batch_size=2)  # two chunks of one image
    full = scc.compute_style_stats(tiny_G, clip, out=tmp_path / "a.pt", **kw)
    convs = [s for s in tiny_G.specs if s.kind == "conv" and s.res <= 8]
    assert full.layers == [s.name for s in convs]
    assert full.relevance.shape == (sum(s.in_ch for s in convs), 16)
    torch.testing.assert_close(full.relevance.norm(dim=-1), torch.ones(full.relevance.shape[0]))
    assert not (tmp_path / "a.pt.partial").exists()
    # the style statistics are those of the mapped samples
    z = torch.randn(200, 32, generator=torch.Generator().manual_seed(1))
    S = tiny_G.synthesis.styles(tiny_G.map(z, truncation=0.7))
    torch.testing.assert_close(full.s_std["b8.conv0"], S["b8.conv0"].std(0), atol=1e-4, rtol=1e-4)
    # relevance row of one channel, independently: set it to mean ± 5σ, embed, normalise, average
    ws = tiny_G.map(tiny_G.sample_z(2, generator=torch.Generator().manual_seed(2)), truncation=0.7)
    name, c = "b8.conv1", 5
    s = tiny_G.synthesis.styles(ws)[name][:, c]
    outs = []
    for sign in (-5.0, 5.0):
        off = torch.zeros(2, 8)
        off[:, c] = full.s_mean[name][c] + sign * full.s_std[name][c] - s
        with torch.no_grad():
            f = clip.encode_image(sclip.clip_image_input(tiny_G.synthesis(ws, style_offsets={name: off}), 32))
        outs.append(f / f.norm(dim=-1, keepdim=True))
    d = outs[1] - outs[0]
    d = (d / d.norm(dim=-1, keepdim=True)).mean(0)
    row = 8 + 8 + c  # after b4.conv1 and b8.conv0
    torch.testing.assert_close(full.relevance[row], d / d.norm(), atol=1e-4, rtol=1e-3)

    class Stop(Exception):
        pass

    def stop_at(done, total, label):
        if done >= 12:
            raise Stop

    with pytest.raises(Stop):
        scc.compute_style_stats(tiny_G, clip, out=tmp_path / "b.pt", progress=stop_at, **kw)
    assert (tmp_path / "b.pt.partial").exists() and not (tmp_path / "b.pt").exists()
    seen = []
    resumed = scc.compute_style_stats(tiny_G, clip, out=tmp_path / "b.pt", progress=lambda d, t, lb: seen.append(d),
                                      **kw)
    assert min(seen) >= 8  # the first layer was not computed again
    torch.testing.assert_close(resumed.relevance, full.relevance, atol=1e-5, rtol=1e-4)
    loaded = ss.load_style_stats(tmp_path / "b.pt")
    assert loaded.layers == full.layers and torch.equal(loaded.relevance, resumed.relevance)


def test_edit_text_cli(tiny_G, tmp_path):
    from PIL import Image

    from gantune.cli.app import main
    from gantune.editing.render import render_record
    from gantune.io import InversionRecord
    from gantune.io.images import tensor_to_pil
    from gantune.io.manifest import read_manifest
    from gantune.weights.native import save_native

    gpath = tmp_path / "g.safetensors"
    save_native(tiny_G, gpath)
    clip = tiny_clip()
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    st = _stats(tiny_G)
    st.save(tmp_path / "stats.pt")
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(4)))[0]
    deltas = {"b16.conv1": 0.2 * torch.randn(16, 16)}
    rec = InversionRecord(latent=ws, latent_kind="w+", method="hyperstyle", deltas=deltas)
    rec.save(tmp_path / "face.safetensors")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["edit", str(tmp_path / "face.safetensors"), "--text", "a smiling face", "--neutral", "a face",
              "--alpha", "0,2", "--beta", "0.1", "--clip", str(tmp_path / "clip.pt"), "--styleclip-stats",
              str(tmp_path / "stats.pt"), "--weights", str(gpath), "--device", "cpu", "--no-identity", "-o", str(out)])
    assert e.value.code == 0
    entry = read_manifest(out / "manifest.jsonl")[0]
    assert entry["status"] == "ok" and entry["info"]["channels"] > 0
    assert set(entry["outputs"].values()) == {"face_a-smiling-face_0.png", "face_a-smiling-face_p2.png",
                                              "face_sheet.png"}
    rec = InversionRecord.load(tmp_path / "face.safetensors")
    plain = np.asarray(tensor_to_pil(render_record(tiny_G, rec))[0])
    assert np.array_equal(np.asarray(Image.open(out / "face_a-smiling-face_0.png")), plain)
    import open_clip

    dt = sc.text_direction(clip, open_clip.get_tokenizer("ViT-B-32"), "a smiling face", "a face")
    gd = sc.global_direction(st, dt, 0.1)
    want = render_record(tiny_G, rec, style_offsets={k: 2.0 * v[None] for k, v in gd.offsets.items()})
    got = np.asarray(Image.open(out / "face_a-smiling-face_p2.png")).astype(int)
    assert np.abs(got - np.asarray(tensor_to_pil(want)[0]).astype(int)).max() <= 1
    assert np.abs(got - plain.astype(int)).max() > 10
    # the Python API's text edit gives the command's images, bit for bit
    import gantune

    api = gantune.edit(tmp_path / "face.safetensors", text="a smiling face", neutral="a face", strength=[0, 2],
                       beta=0.1, clip=str(tmp_path / "clip.pt"), styleclip_stats=str(tmp_path / "stats.pt"),
                       generator=tiny_G)
    assert np.array_equal(np.asarray(tensor_to_pil(api)[1]), got.astype(np.uint8))
    assert np.array_equal(np.asarray(tensor_to_pil(api)[0]), plain)
    # one edit kind per run
    with pytest.raises(SystemExit) as e:
        main(["edit", str(tmp_path / "face.safetensors"), "--text", "x", "--direction", "age", "-o", str(out)])
    assert e.value.code != 0


def test_edit_text_without_clip_stops_once_before_any_record(tiny_G, tmp_path, capsys):
    from gantune.cli.app import main
    from gantune.io import InversionRecord

    for name in ("a", "b"):
        InversionRecord(latent=tiny_G.map(torch.randn(1, 32))[0], latent_kind="w+", method="optim").save(
            tmp_path / f"{name}.safetensors")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["edit", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--text", "a smiling face",
              "--clip", str(tmp_path / "missing-clip.pt"), "--device", "cpu", "-o", str(out)])
    assert e.value.code not in (0, None)
    err = capsys.readouterr().err
    assert err.count("missing-clip.pt") == 1 and "Traceback" not in err
    assert not (out / "manifest.jsonl").exists() or "a.safetensors" not in (out / "manifest.jsonl").read_text()
