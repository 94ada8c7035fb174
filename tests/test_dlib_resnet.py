"""The torch port of dlib's face-recognition ResNet against dlib itself, on real faces shipped in scikit-image.

Both sides read the same 150 px chip (``dlib.get_face_chip(img, shape, size=150, padding=0.25)``, what
``compute_face_descriptor(img, shape)`` extracts), so the comparison isolates the network: every component of the
128-d descriptor must agree within 1e-4 (measured: ≤ 4e-7). A file that is not that network must fail in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

dlib = pytest.importorskip("dlib")

from gantune.align.landmarks import face_recognizer, hog_detector, model_path, shape_predictor  # noqa: E402
from gantune.errors import WeightsError  # noqa: E402
from gantune.metrics.dlib_resnet import CHIP_SIZE, load_dlib_resnet, read_dat  # noqa: E402

TOL = 1e-4


def _photos() -> list[np.ndarray]:
    from skimage import data

    lfw = data.lfw_subset()
    faces = [np.asarray(data.astronaut())]
    for i in (0, 7):  # two LFW faces (25×25 grey) upscaled ×10 so the detector finds them
        arr = (lfw[i] * 255).round().astype(np.uint8)
        faces.append(np.asarray(Image.fromarray(arr, "L").resize((250, 250), Image.LANCZOS).convert("RGB")))
    return faces


@pytest.fixture(scope="module")
def chips_and_reference():
    chips, refs = [], []
    for img in _photos():
        dets = hog_detector()(img, 1)
        assert len(dets), "the test photo must have a detected face"
        shape = shape_predictor()(img, max(dets, key=lambda r: r.area()))
        refs.append(np.asarray(face_recognizer().compute_face_descriptor(img, shape), dtype=np.float64))
        chips.append(np.asarray(dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=0.25)))
    return np.stack(chips), np.stack(refs)


def test_port_matches_dlib_descriptors(chips_and_reference):
    chips, refs = chips_and_reference
    net = load_dlib_resnet()
    got = net.descriptor(chips).double().numpy()
    assert got.shape == (len(chips), 128)
    diff = np.abs(got - refs).max(axis=1)
    assert (diff <= TOL).all(), f"max |port − dlib| per image: {diff}"
    # the faces are different people: the check is not satisfied by a constant output
    assert np.linalg.norm(refs[0] - refs[1]) > 0.3


def test_comparison_detects_a_wrong_input_convention(chips_and_reference):
    """The tolerance is far below what a plausible porting mistake changes: BGR order or a missing /256."""
    chips, refs = chips_and_reference
    net = load_dlib_resnet()
    bgr = net.descriptor(chips[..., ::-1].copy()).double().numpy()
    assert np.abs(bgr - refs).max() > 100 * TOL
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        unscaled = net(x * 2.0).double().numpy()  # a port that divided by 128 instead of 256 sees this
    assert np.abs(unscaled - refs).max() > 100 * TOL


def test_port_is_differentiable_and_frozen(chips_and_reference):
    chips, _ = chips_and_reference
    net = load_dlib_resnet()
    x = torch.from_numpy(chips[:1]).permute(0, 3, 1, 2).float().requires_grad_(True)
    net(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="150"):
        net(torch.zeros(1, 3, 64, 64))


def test_other_files_fail_in_one_line(tmp_path):
    real = model_path("dlib-face-recognition").read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(WeightsError, match="file ends early") as e:
        read_dat(cut)
    assert "\n" not in e.value.one_line()
    with pytest.raises(WeightsError, match="not dlib's face-recognition network"):
        read_dat(model_path("dlib-landmarks-68"))  # a dlib file, but the shape predictor
    longer = tmp_path / "longer.dat"
    longer.write_bytes(real + b"\x00")
    with pytest.raises(WeightsError, match="left over"):
        read_dat(longer)
    with pytest.raises(WeightsError, match="cannot read"):
        read_dat(tmp_path / "missing.dat")
