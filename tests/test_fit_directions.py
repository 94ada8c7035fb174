"""Fitting InterFaceGAN directions: landmark measures, the linear boundary, labels, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gantune.editing.fit import attribute_value, fit_boundary, measure, read_labels
from gantune.errors import InputError


def _face():
    """A frontal 68-point layout: eyes at y=40, nose tip (30) centred, mouth below."""
    p = np.zeros((68, 2))
    p[36], p[39], p[42], p[45] = (30, 40), (45, 40), (55, 40), (70, 40)
    p[37], p[38], p[41], p[40] = (35, 37), (40, 37), (35, 43), (40, 43)
    p[43], p[44], p[47], p[46] = (60, 37), (65, 37), (60, 43), (65, 43)
    p[30] = (50, 60)
    p[48], p[54], p[60], p[64] = (38, 75), (62, 75), (41, 75), (59, 75)
    p[62], p[66] = (50, 74), (50, 76)
    return p


def test_landmark_attributes_move_the_right_way():
    p = _face()
    assert attribute_value(p, "pose") == pytest.approx(0.0)
    q = p.copy()
    q[30, 0] += 8  # the nose moves right: positive yaw
    assert attribute_value(q, "pose") == pytest.approx(8 / 40)
    q = p.copy()
    q[48, 0] -= 5
    q[54, 0] += 5  # a wider mouth
    assert attribute_value(q, "smile") > attribute_value(p, "smile") and attribute_value(q, "pose") == 0
    q = p.copy()
    q[66, 1] += 10  # the jaw drops
    assert attribute_value(q, "mouth-open") == pytest.approx(12 / 18)
    q = p.copy()
    q[[37, 38, 43, 44], 1] -= 2  # upper lids up
    assert attribute_value(q, "eyes-open") > attribute_value(p, "eyes-open")
    with pytest.raises(InputError, match="unknown attribute"):
        attribute_value(p, "age")


def test_measure_on_a_photo_and_its_mirror():
    from skimage import data

    img = Image.fromarray(data.astronaut())
    a, b = measure(img, ("pose", "smile")), measure(img.transpose(Image.FLIP_LEFT_RIGHT), ("pose", "smile"))
    assert a is not None and b is not None
    assert abs(a["pose"]) < 0.1 and a["pose"] == pytest.approx(-b["pose"], abs=0.03)  # frontal; mirrored yaw
    assert a["smile"] == pytest.approx(b["smile"], rel=0.1)
    assert measure(Image.new("RGB", (64, 64), (128, 128, 128)), ("pose",)) is None  # no face


def test_boundary_recovers_a_planted_direction_and_keeps_orthogonal():
    g = torch.Generator().manual_seed(0)
    ws = torch.randn(600, 16, generator=g) * torch.linspace(0.5, 2.0, 16)  # unequal scales per dimension
    truth = torch.randn(16, generator=g)
    truth /= truth.norm()
    values = (ws @ truth + 0.1 * torch.randn(600, generator=g)).numpy()
    n, acc, used = fit_boundary(ws, values)
    assert used == 300 and acc > 0.95 and float(n @ truth) > 0.9 and n.norm() == pytest.approx(1.0)
    other = torch.zeros(16)
    other[0] = 1.0
    k, _, _ = fit_boundary(ws, values, keep=[other])
    assert abs(float(k @ other)) < 1e-6 and float(k @ truth) > 0.7
    with pytest.raises(InputError, match="too few"):
        fit_boundary(ws[:3], values[:3])


def test_fit_command_with_labels(tmp_path, capsys):
    from gantune.cli.app import main
    from gantune.editing import load_direction
    from gantune.sampling import seed_z
    from gantune.weights import load_generator

    G, _ = load_generator("demo-faces")
    truth = torch.randn(G.cfg.w_dim, generator=torch.Generator().manual_seed(1))
    truth /= truth.norm()
    rows = ["key,value"]
    with torch.no_grad():
        for s in range(400):
            rows.append(f"{s},{float(G.map(seed_z(G, s))[0, 0] @ truth)}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["directions", "fit", "--attribute", "my-score", "--labels", str(tmp_path / "labels.csv"), "--weights",
              "demo-faces", "-o", str(tmp_path / "d.pt"), "--fraction", "0.5", "--device", "cpu"])
    assert (e.value.code or 0) == 0, capsys.readouterr().err
    d = load_direction(str(tmp_path / "d.pt"))
    # the direction predicts the labels on samples it never saw. Its cosine to the truth is lower: the trained
    # mapping puts most of W's variance in a few dimensions (effective rank about 15 of 128 in the demo model), and
    # 400 samples cannot pin down the components along which w hardly varies (a random direction: |cos| ~ 0.1)
    assert d.vector.shape == (G.cfg.w_dim,) and float(d.vector @ truth) > 0.4
    with torch.no_grad():
        held = torch.cat([G.map(seed_z(G, s))[:, 0] for s in range(1000, 1400)])
    assert float(torch.corrcoef(torch.stack([held @ d.vector, held @ truth]))[0, 1]) > 0.9
    meta = json.loads((tmp_path / "d.json").read_text())
    assert meta["attribute"] == "my-score" and meta["measured"] == 400 and meta["correlation"] > 0.8
    # a name gantune does not measure needs labels; an existing output needs --force
    for argv, words in ((["--attribute", "age", "-o", str(tmp_path / "x.pt")], "not measured"),
                        (["--attribute", "pose", "-o", str(tmp_path / "d.pt")], "exists")):
        with pytest.raises(SystemExit) as e:
            main(["directions", "fit", "--weights", "demo-faces", *argv])
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_labels_file_errors(tmp_path):
    from gantune.weights import load_generator

    G, _ = load_generator("demo-faces")
    (tmp_path / "l.csv").write_text("seed,value\n1,0.5\n2,abc\n")
    with pytest.raises(InputError, match="not a number"):
        read_labels(tmp_path / "l.csv", G)
    (tmp_path / "l.csv").write_text("1,0.5\n2,nan\n")
    with pytest.raises(InputError, match="not finite"):
        read_labels(tmp_path / "l.csv", G)
