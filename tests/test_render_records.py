"""The one record renderer: tuned differences, latent matrices, and edits of every latent kind."""

from __future__ import annotations

import copy

import pytest
import torch

from gantune.editing.render import edited_latents, render_record
from gantune.io import InversionRecord


def test_tuned_differences_are_applied(tiny_G):
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(0)))[0]
    name = "synthesis.layers.b16.conv1.weight"
    diff = (0.2 * torch.randn_like(tiny_G.get_parameter(name))).half()
    noise = "synthesis.layers.b8.conv0.noise_const"
    ndiff = torch.randn(8, 8).half()
    rec = InversionRecord(latent=ws, latent_kind="w+", method="optim", tuned={name: diff, noise: ndiff})
    G2 = copy.deepcopy(tiny_G)
    with torch.no_grad():
        G2.get_parameter(name).add_(diff.float())
        G2.get_buffer(noise).add_(ndiff.float())
        want = G2.synthesis(ws[None])
        plain = tiny_G.synthesis(ws[None])
    got = render_record(tiny_G, rec)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-2
    # the base generator is untouched
    with torch.no_grad():
        assert torch.equal(tiny_G.synthesis(ws[None]), plain)


def test_edit_of_a_latent_matrix(tiny_G):
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(1)))[0, 0]
    W = ws[None].repeat(32, 1) + 0.1 * torch.randn(32, 32)
    rec = InversionRecord(latent=W, latent_kind="W", method="overparam")
    base = render_record(tiny_G, rec)
    n = torch.randn(32)
    n = n / n.norm()
    lats = edited_latents(tiny_G, rec, n[None].expand(tiny_G.num_ws, 32), [0.0, 2.0])
    assert lats.shape == (2, tiny_G.num_ws, 32, 32)
    imgs = render_record(tiny_G, rec, latents=lats)
    torch.testing.assert_close(imgs[:1], base, atol=1e-5, rtol=1e-4)
    want = tiny_G.synthesis(wmat=(W + 2.0 * n)[None])
    torch.testing.assert_close(imgs[1:], want, atol=1e-5, rtol=1e-4)


def test_edit_paste_puts_edits_back_into_the_original_photo(tiny_G, tmp_path):
    """`edit --paste` on a record inverted with --align: full-size photo, changed inside the face, unchanged far away."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from gantune.align import RECORD_META_KEY, FaceAligner
    from gantune.cli.app import main
    from gantune.weights.native import save_native

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    face = FaceAligner(size=32).align(Image.open(photo).convert("RGB"))[0]
    gpath = tmp_path / "g.safetensors"
    save_native(tiny_G, gpath)
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(3)))[0]
    rec = InversionRecord(latent=ws, latent_kind="w+", method="optim",
                          meta={RECORD_META_KEY: face.transform_dict(), "source": {"path": str(photo)}})
    rec.save(tmp_path / "astronaut.safetensors")
    n = tmp_path / "dir.npy"
    np.save(n, np.ones(32, dtype=np.float32))
    out = tmp_path / "edits"
    with pytest.raises(SystemExit) as e:
        main(["edit", str(tmp_path / "astronaut.safetensors"), "--direction", str(n), "--strength", "1", "--paste",
              "-o", str(out), "--weights", str(gpath), "--device", "cpu"])
    assert e.value.code == 0
    pasted = np.asarray(Image.open(out / "astronaut_dir_p1_photo.png")).astype(int)
    orig = np.asarray(Image.open(photo)).astype(int)
    assert pasted.shape == orig.shape
    assert np.array_equal(pasted[:40, -40:], orig[:40, -40:])  # a corner far from the face is untouched
    cx, cy = np.asarray(face.quad).mean(0).astype(int)
    assert np.abs(pasted[cy - 5 : cy + 5, cx - 5 : cx + 5] - orig[cy - 5 : cy + 5, cx - 5 : cx + 5]).mean() > 5
    # a record without a transform gets a one-line error
    InversionRecord(latent=ws, latent_kind="w+", method="optim").save(tmp_path / "plain.safetensors")
    with pytest.raises(SystemExit) as e:
        main(["edit", str(tmp_path / "plain.safetensors"), "--direction", str(n), "--paste", "-o", str(out),
              "--weights", str(gpath), "--device", "cpu"])
    assert e.value.code != 0


def test_edit_batch_goes_on_past_a_bad_record(tiny_G, tmp_path, capsys):
    import numpy as np

    from gantune.cli.app import main
    from gantune.io.manifest import read_manifest
    from gantune.weights.native import save_native

    gpath = tmp_path / "g.safetensors"
    save_native(tiny_G, gpath)
    ws = tiny_G.map(torch.randn(1, 32, generator=torch.Generator().manual_seed(4)))[0]
    InversionRecord(latent=ws, latent_kind="w+", method="optim").save(tmp_path / "good.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a record")
    np.save(tmp_path / "d.npy", np.ones(32, dtype=np.float32))
    with pytest.raises(SystemExit) as e:
        main(["edit", str(tmp_path / "bad.safetensors"), str(tmp_path / "good.safetensors"), "--direction",
              str(tmp_path / "d.npy"), "--strength", "1", "--weights", str(gpath), "--device", "cpu",
              "-o", str(tmp_path / "out")])
    assert e.value.code == 1  # one failed
    entries = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [x["status"] for x in entries] == ["failed", "ok"]
    assert "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "out" / "good_d_p1.png").exists()
