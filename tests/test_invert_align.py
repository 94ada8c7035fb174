"""invert --align with the real dlib models: the transform lands in the record and edit --paste uses it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from gantune.cli.app import main
from gantune.io import InversionRecord
from gantune.weights.native import save_native


def test_invert_optim_align_then_edit_paste(tiny_G, tmp_path):
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    gpath = tmp_path / "g.safetensors"
    save_native(tiny_G, gpath)
    out = tmp_path / "inv"
    with pytest.raises(SystemExit) as e:
        main(["invert-optim", str(photo), "--weights", str(gpath), "--align", "--space", "w+", "--steps", "2",
              "--w-avg-samples", "50", "--loss", "l2", "--device", "cpu", "-o", str(out)])
    assert e.value.code == 0
    rec = InversionRecord.load(out / "astronaut.safetensors")
    quad = np.asarray(rec.meta["align"]["quad"])
    assert quad.shape == (4, 2)
    # the face of the astronaut is in the upper middle of the 512 px photo
    cx, cy = quad.mean(0)
    assert 180 < cx < 300 and 60 < cy < 220
    np.save(tmp_path / "d.npy", np.ones(32, dtype=np.float32))
    with pytest.raises(SystemExit) as e:
        main(["edit", str(out / "astronaut.safetensors"), "--direction", str(tmp_path / "d.npy"), "--strength", "0",
              "--paste", "--weights", str(gpath), "--device", "cpu", "-o", str(tmp_path / "ed")])
    assert e.value.code == 0
    assert Image.open(tmp_path / "ed" / "astronaut_d_0_photo.png").size == (512, 512)
