"""dlib identity distance, and the interpolation measures (path length, midpoint realism)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


def test_identity_distance_separates_people():
    from skimage import data

    from gantune.metrics.identity import SAME_PERSON, descriptor, identity_distance

    astro = Image.fromarray(data.astronaut())
    d = descriptor(astro)
    assert d.detected and d.vector.shape == (128,)
    assert identity_distance(astro, astro.transpose(Image.FLIP_LEFT_RIGHT)) < SAME_PERSON  # mirror: same person
    others = data.lfw_subset()[:3]  # other people (25 px, upscaled before detection)
    for face in others:
        assert identity_distance(d, Image.fromarray((face * 255).astype(np.uint8))) > SAME_PERSON


def test_path_measures(tiny_G):
    from gantune.evaluation.lpips import lpips_metric
    from gantune.evaluation.interpolation import SEGMENTS, evaluate_path
    from gantune.io.record import InversionRecord

    torch.manual_seed(0)
    a, b = (InversionRecord(latent=torch.randn(tiny_G.num_ws, tiny_G.cfg.w_dim), latent_kind="w+", method="t")
            for _ in range(2))
    lpips = lpips_metric("cpu")
    ab, ba, aa = evaluate_path(tiny_G, a, b, lpips), evaluate_path(tiny_G, b, a, lpips), evaluate_path(tiny_G, a, a, lpips)
    assert SEGMENTS == 5 and ab["ppl"] > 0 and aa["ppl"] == pytest.approx(0, abs=1e-6)
    assert ab["ppl"] == pytest.approx(ba["ppl"], rel=1e-4)  # the same path walked backwards
    assert ab["id_a_to_b"] == pytest.approx(ba["id_a_to_b"], rel=1e-6) and aa["id_a_to_b"] == pytest.approx(0, abs=1e-6)
    assert aa["id_mid_to_a"] == pytest.approx(0, abs=1e-6)  # a path from a record to itself stays on it
