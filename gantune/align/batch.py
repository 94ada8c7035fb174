"""Aligning many photos: the per-photo work of ``gantune align``, in this process or in a worker pool."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.images import load_image
from ..io.runner import error_line
from .aligner import MIN_SIDE, FaceAligner


def output_names(stem: str, mode, n_faces: int) -> list[str]:
    """File names for a photo's crops: ``<stem>.png`` for one chosen face, ``<stem>_faceN.png`` with ``--faces all``."""
    if mode == "all":
        return [f"{stem}_face{i}.png" for i in range(1, n_faces + 1)]
    return [f"{stem}.png"]


@dataclass
class AlignedPhoto:
    """What aligning one photo gave: the crops (PIL images, with their face numbers) and facts for the manifest."""

    crops: list = field(default_factory=list)  # [(face number, PIL image)]
    info: dict = field(default_factory=dict)  # faces_found, image_size, faces (box, score, landmarks, transform)


def align_photo(aligner: FaceAligner, path: Path) -> AlignedPhoto:
    """Detect, select and align the faces of one photo (raises a one-line error for a bad photo or no face)."""
    image = load_image(path, min_side=MIN_SIDE)
    dets = aligner.detect(image)
    out = AlignedPhoto(info={"faces_found": len(dets), "image_size": list(image.size)})
    faces = [{"index": i, "box": [round(v, 2) for v in d.box], "score": round(d.score, 4),
              "landmarks": d.landmarks.tolist()} for i, d in enumerate(dets, start=1)]
    for i, det in aligner.select(dets):
        face = aligner.align_detection(image, det, i, len(dets))
        faces[i - 1].update(face.transform_dict())
        out.crops.append((i, face.image))
    out.info["faces"] = faces
    return out


# --- worker pool ----------------------------------------------------------------------------------------------------
_worker: FaceAligner | None = None


def _init_worker(config: dict) -> None:
    global _worker
    _worker = FaceAligner(**config).load()


def _work(path: Path):
    """In a worker: the result, or the error as a one-line InputError (exceptions cross processes as text)."""
    assert _worker is not None
    try:
        return align_photo(_worker, path)
    except Exception as e:  # noqa: BLE001 - reported for this photo by the runner
        return InputError(error_line(e))


def _attempt(aligner: FaceAligner, path: Path):
    """The aligned photo, or the exception (the runner reports it for this photo)."""
    try:
        return align_photo(aligner, path)
    except Exception as e:  # noqa: BLE001
        return e


def _mp_context():
    # fork shares the already loaded models and skips re-importing torch; elsewhere (macOS, Windows) spawn
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class AlignPool:
    """``process`` for the runner: a batch of photos aligned in this process (workers=1) or in a pool."""

    def __init__(self, aligner: FaceAligner, workers: int = 1) -> None:
        self.aligner, self.workers, self._pool = aligner, workers, None

    def __enter__(self) -> "AlignPool":
        self.aligner.load()  # once, here: forked workers inherit the models
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_mp_context(),
                                             initializer=_init_worker, initargs=(self.aligner.config(),))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def __call__(self, items) -> list:
        if self._pool is None:
            return [_attempt(self.aligner, it.input) for it in items]
        return list(self._pool.map(_work, [it.input for it in items], chunksize=1))
