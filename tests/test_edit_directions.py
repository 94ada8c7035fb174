"""InterFaceGAN-style directions: file layouts, strengths, and w + s·n."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gantune.editing import apply_direction, load_direction, parse_strengths
from gantune.errors import InputError


def test_interfacegan_layouts(tmp_path):
    n = torch.randn(512)
    n = n / n.norm()
    torch.save(n[None].clone(), tmp_path / "age.pt")  # (1, 512) as age.pt / smile.pt
    torch.save(n[None, None].repeat(1, 18, 1), tmp_path / "pose.pt")  # (1, 18, 512) as pose.pt
    np.save(tmp_path / "d.npy", n.numpy()[None])
    age, pose, npy = (load_direction(tmp_path / f) for f in ("age.pt", "pose.pt", "d.npy"))
    assert age.name == "age" and age.vector.shape == (512,) and pose.vector.shape == (18, 512)
    torch.testing.assert_close(npy.vector, n)
    for d in (age, pose, npy):
        torch.testing.assert_close(d.fit(18, 512), n[None].expand(18, 512))
    with pytest.raises(InputError, match="18 layers, the generator has 16"):
        pose.fit(16, 512)
    with pytest.raises(InputError, match="size 512, the generator's w has 32"):
        age.fit(18, 32)
    w = torch.randn(18, 512)
    torch.testing.assert_close(apply_direction(w, age.fit(18, 512), -2.5), w - 2.5 * n)
    torch.testing.assert_close(apply_direction(w[None].repeat(3, 1, 1), age.fit(18, 512), 1.0)[2], w + n)


def test_bad_direction_files(tmp_path):
    torch.save({"mean": torch.zeros(1, 512), "std": torch.ones(80), "comp": torch.zeros(80, 1, 512)}, tmp_path / "pca.pt")
    with pytest.raises(InputError, match="GANSpace"):
        load_direction(tmp_path / "pca.pt")
    torch.save(torch.zeros(2, 3, 4, 5), tmp_path / "weird.pt")
    with pytest.raises(InputError, match=r"got \(2, 3, 4, 5\)"):
        load_direction(tmp_path / "weird.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a plain numeric"):
        load_direction(tmp_path / "obj.npy")
    with pytest.raises(InputError, match="no such direction file"):
        load_direction(tmp_path / "missing.pt")


def test_parse_strengths():
    assert parse_strengths("-3:3:7") == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert parse_strengths("2") == [2.0] and parse_strengths("-1,0.5") == [-1.0, 0.5] and parse_strengths(1.5) == [1.5]
    for bad in ("a", "1:2", "0:1:0"):
        with pytest.raises(InputError):
            parse_strengths(bad)
