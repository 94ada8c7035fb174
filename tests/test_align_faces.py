"""Face counting: a weak extra HOG detection is not a face; a photo whose only face scores low still has it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from gantune.align import FaceAligner  # noqa: E402
from gantune.align import landmarks  # noqa: E402


def test_astronaut_has_one_face_by_default_and_two_detections_without_a_minimum():
    photo = Image.fromarray(skdata.astronaut())
    dets = FaceAligner(size=256).detect(photo)
    assert len(dets) == 1 and dets[0].score > 1.0 and 150 < dets[0].box[0] < 200
    weak = FaceAligner(size=256, min_score=0.0).detect(photo)  # an explicit minimum applies to every detection
    assert len(weak) == 2 and min(d.score for d in weak) < 0.3
    assert FaceAligner(size=256, min_score=1.5).detect(photo) == []


def test_a_lone_weak_face_is_kept_and_weak_extras_are_dropped(monkeypatch):
    photo = Image.fromarray(skdata.astronaut())
    face, patch = (175, 76, 265, 166), (126, 335, 215, 425)
    monkeypatch.setattr(landmarks, "_run_detector", lambda arr, det, up: [(face, 0.1)])
    [d] = landmarks.detect_faces(photo)
    assert d.score == 0.1 and d.landmarks.shape == (68, 2)
    monkeypatch.setattr(landmarks, "_run_detector", lambda arr, det, up: [(face, 1.1), (patch, 0.2), (patch, 0.5)])
    assert sorted(d.score for d in landmarks.detect_faces(photo)) == [0.5, 1.1]
    assert len(landmarks.detect_faces(photo, others_min_score=0.0)) == 3


def test_landmarks_from_a_crop_match_the_full_photo():
    photo = Image.fromarray(skdata.astronaut())
    [d] = landmarks.detect_faces(photo)
    rect = landmarks._dlib().rectangle(*(int(round(v)) for v in d.box))
    shape = landmarks.shape_predictor()(np.asarray(photo), rect)
    full = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
    assert np.array_equal(full, d.landmarks)
