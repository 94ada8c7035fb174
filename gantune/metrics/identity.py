"""Identity distance with dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

An image's descriptor: the face found by the HOG detector (after a LANCZOS upscale of small images), or, when none is
found, the central box where an FFHQ-aligned crop has its face; 68 landmarks in that box, dlib's aligned face chip,
the 128-d embedding. The distance is Euclidean; dlib calls two faces the same person below 0.6.

For a differentiable version of the same network (training losses), see :mod:`gantune.metrics.dlib_resnet`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..align import landmarks
from ..errors import GantuneError

SAME_PERSON = 0.6  # dlib's threshold on the descriptor distance
MIN_SIDE = 256  # smaller images are upscaled to this before detection
MAX_SIDE = 512  # larger ones are reduced to this (the descriptor reads a 150 px face chip)


@dataclass
class Descriptor:
    vector: np.ndarray  # (128,)
    detected: bool  # the detector found the face (False: the FFHQ central box was used)


def _detection_image(image: Image.Image) -> Image.Image:
    """RGB, with the shorter side brought into [MIN_SIDE, MAX_SIDE] by a LANCZOS resize."""
    img = image.convert("RGB")
    if min(img.size) < MIN_SIDE or min(img.size) > MAX_SIDE:
        s = (MIN_SIDE if min(img.size) < MIN_SIDE else MAX_SIDE) / min(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
    return img


def face_found(image: Image.Image) -> bool:
    """dlib's HOG detector finds a face in the image (resized as :func:`descriptor` does before detecting)."""
    return len(landmarks.hog_detector()(np.asarray(_detection_image(image)), 1)) > 0


def descriptor(image: Image.Image) -> Descriptor:
    dlib = landmarks._dlib()
    img = _detection_image(image)
    arr = np.asarray(img)
    dets = landmarks.hog_detector()(arr, 1)
    if len(dets):
        box, found = max(dets, key=lambda r: r.area()), True
    else:
        w, h = img.size
        box, found = dlib.rectangle(int(0.22 * w), int(0.28 * h), int(0.78 * w), int(0.88 * h)), False
    shape = landmarks.shape_predictor()(arr, box)
    vec = np.asarray(landmarks.face_recognizer().compute_face_descriptor(arr, shape), dtype=np.float64)
    return Descriptor(vec, found)


def unavailable(*, load: bool = True) -> str | None:
    """Why identity distances cannot be had on this machine (dlib or its landmark / face-recognition models
    missing), as one line; None when they can. Commands that report the distance as a side metric skip it with a
    note instead of failing the job. ``load=False`` only finds dlib and the model files (milliseconds; loading the
    models takes about a second)."""
    try:
        if load:
            landmarks.shape_predictor()
            landmarks.face_recognizer()
        else:
            landmarks._dlib()
            landmarks.model_path("dlib-landmarks-68")
            landmarks.model_path("dlib-face-recognition")
    except GantuneError as e:
        return e.one_line()
    return None


def identity_distance(a: Image.Image | Descriptor, b: Image.Image | Descriptor) -> float:
    da = a if isinstance(a, Descriptor) else descriptor(a)
    db = b if isinstance(b, Descriptor) else descriptor(b)
    return float(np.linalg.norm(da.vector - db.vector))
