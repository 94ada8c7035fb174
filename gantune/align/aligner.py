"""``FaceAligner``: detection + landmarks + the FFHQ transform, with explicit failures and face selection."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import GantuneError, InputError
from ..io.images import load_image, to_rgb
from .ffhq import align_quad, ffhq_quad, to_aligned
from .landmarks import DETECTORS, Detection, detect_faces, load_models

MIN_SIDE = 32  # smaller photos cannot hold a face the detectors find
TRANSFORM_KIND = "ffhq"
RECORD_META_KEY = "align"  # key of the transform dict in an inversion record's metadata


class AlignError(GantuneError):
    """A photo that could not be aligned (no face, asked-for face missing)."""


class NoFaceError(AlignError):
    """The detector found no face."""


def parse_faces(value: str | int) -> str | int:
    """``largest`` | ``all`` | a 1-based face number (faces are numbered largest first)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        v = str(value).strip().lower()
        if v in ("largest", "all"):
            return v
        try:
            n = int(v)
        except ValueError:
            raise InputError(f"--faces {value!r}: expected largest, all or a face number", "e.g. --faces 2") from None
    if n < 1:
        raise InputError(f"--faces {n}: face numbers start at 1 (largest face first)")
    return n


def check_size(size: int) -> int:
    if not isinstance(size, int) or size < 16 or size > 8192 or size & (size - 1):
        raise InputError(f"--size {size}: must be a power of two between 16 and 8192", "e.g. --size 1024 or 256")
    return size


@dataclass
class AlignedFace:
    """One aligned face crop and where it came from."""

    image: Image.Image  # the aligned crop, size x size RGB
    quad: np.ndarray  # (4, 2) crop square in the original photo (pixel-index coords): TL, BL, BR, TR
    landmarks: np.ndarray  # (68, 2) landmarks in the original photo
    box: tuple[float, float, float, float]  # detector box (left, top, right, bottom) in the original photo
    index: int  # 1-based rank among the detections, largest first (the N of <stem>_faceN.png)
    score: float  # detector confidence
    size: int  # side of the crop in pixels
    image_size: tuple[int, int]  # (width, height) of the original photo (after EXIF rotation)
    faces_found: int = 1  # how many faces the detector found in the photo
    extra: dict = field(default_factory=dict)  # free-form (e.g. output path), copied into transform_dict()

    def transform_dict(self) -> dict:
        """JSON-able description of the crop, enough for :func:`gantune.align.paste_back` (store it in records)."""
        return {
            "kind": TRANSFORM_KIND,
            "quad": np.round(self.quad, 4).tolist(),
            "size": int(self.size),
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "box": [round(float(v), 2) for v in self.box],
            "index": int(self.index),
            **self.extra,
        }

    def landmarks_in_crop(self) -> np.ndarray:
        """The landmarks mapped into the crop's pixel coordinates."""
        return to_aligned(self.landmarks, self.quad, self.size)


class FaceAligner:
    """Detect faces, pick them, and FFHQ-align them. Models load once per process (on first use or ``load()``).

    >>> faces = FaceAligner(size=256).align(load_image("photo.jpg"))
    """

    def __init__(
        self,
        size: int = 1024,  # output side in pixels (power of two)
        detector: str = "hog",  # hog: dlib frontal HOG detector (fast); cnn: dlib MMOD CNN (finds more, slow on CPU)
        faces: str | int = "largest",  # largest | all | 1-based face number (largest first)
        *,
        upsample: int = 1,  # detector upsampling passes (finds faces down to ~40 px at 1, as in FFHQ)
        detect_max_side: int = 1024,  # photos larger than this are detected on a downscaled copy
        min_score: float | None = None,  # drop detections with a lower confidence; None: the detector's default
        # (keep the strongest detection, count others from SECOND_FACE_MIN_SCORE[detector])
        supersample: int | None = None,  # quad transform at size*k then LANCZOS down; None: automatic (<= 4)
    ) -> None:
        if detector not in DETECTORS:
            raise InputError(f"--detector {detector!r}: expected one of {', '.join(DETECTORS)}")
        if upsample < 0:
            raise InputError(f"upsample must be >= 0, got {upsample}")
        self.size = check_size(size)
        self.detector = detector
        self.faces = parse_faces(faces)
        self.upsample = upsample
        self.detect_max_side = detect_max_side
        self.min_score = min_score
        self.supersample = supersample

    def config(self) -> dict:
        return dict(size=self.size, detector=self.detector, faces=self.faces, upsample=self.upsample,
                    detect_max_side=self.detect_max_side, min_score=self.min_score, supersample=self.supersample)

    def load(self) -> "FaceAligner":
        load_models(self.detector)
        return self

    def detect(self, image: Image.Image) -> list[Detection]:
        """All detections, largest first."""
        if self.min_score is None:
            strict, others = 0.0, None
        else:
            strict = others = self.min_score
        return detect_faces(image, detector=self.detector, upsample=self.upsample, max_side=self.detect_max_side,
                            min_score=strict, others_min_score=others)

    def select(self, detections: list[Detection]) -> list[tuple[int, Detection]]:
        """(1-based index, detection) pairs chosen by ``faces``; raises :class:`AlignError` when none fits."""
        if not detections:
            raise NoFaceError("no face found",
                              "the detector needs a frontal face of at least ~40 px; try gantune align --detector cnn")
        if self.faces == "largest":
            return [(1, detections[0])]
        if self.faces == "all":
            return list(enumerate(detections, start=1))
        if self.faces > len(detections):
            raise AlignError(f"face {self.faces} asked for, but only {len(detections)} found")
        return [(self.faces, detections[self.faces - 1])]

    def align_detection(self, image: Image.Image, det: Detection, index: int = 1, faces_found: int = 1) -> AlignedFace:
        quad = ffhq_quad(det.landmarks)
        crop = align_quad(image, quad, self.size, supersample=self.supersample)
        return AlignedFace(image=crop, quad=quad, landmarks=det.landmarks, box=det.box, index=index, score=det.score,
                           size=self.size, image_size=image.size, faces_found=faces_found)

    def align(self, image: Image.Image) -> list[AlignedFace]:
        """Aligned crops of the selected faces (one for ``largest`` / a number). Raises :class:`NoFaceError` when
        there is no face and :class:`AlignError` when the asked-for face number does not exist."""
        if image.mode != "RGB":
            image = to_rgb(image)
        dets = self.detect(image)
        return [self.align_detection(image, d, i, len(dets)) for i, d in self.select(dets)]

    def align_file(self, path: str | os.PathLike) -> tuple[Image.Image, list[AlignedFace]]:
        """Load a photo robustly (EXIF, modes, corrupt files -> ImageError) and align it."""
        image = load_image(path, min_side=MIN_SIDE)
        faces = self.align(image)
        for f in faces:
            f.extra["source"] = str(path)  # lets ``edit --paste`` / ``paste`` find the photo again
        return image, faces
