"""Aligning many photos: fixed output names, one manifest line per input, an optional worker pool."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..errors import GantuneError
from .aligner import MIN_SIDE, AlignError, FaceAligner


def output_stems(paths: list[Path]) -> list[str]:
    """One output stem per input, fixed before anything runs (so a failure never shifts later names).

    Inputs with the same stem (``a/x.jpg``, ``b/x.png``) get ``x``, ``x_2``, ``x_3``… in input order.
    """
    seen: dict[str, int] = {}
    taken = {p.stem for p in paths}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        stem = p.stem if n == 1 else f"{p.stem}_{n}"
        while n > 1 and stem in taken:  # "x_2" might itself be an input's stem
            n += 1
            stem = f"{p.stem}_{n}"
        taken.add(stem)
        stems.append(stem)
    return stems


def output_names(stem: str, mode, n_faces: int) -> list[str]:
    """File names for a photo's crops: ``<stem>.png`` for one chosen face, ``<stem>_faceN.png`` with ``--faces all``."""
    if mode == "all":
        return [f"{stem}_face{i}.png" for i in range(1, n_faces + 1)]
    return [f"{stem}.png"]


def align_one(aligner: FaceAligner, path: Path, stem: str, out_dir: Path) -> dict:
    """Align one photo, write its crop(s), and return its manifest entry (never raises for a bad photo)."""
    from ..io.images import ImageError, load_image, save_image

    t0 = time.perf_counter()
    entry: dict = {"input": str(path), "stem": stem, "status": "failed", "reason": None, "faces_found": None,
                   "faces": [], "outputs": []}
    try:
        image = load_image(path, min_side=MIN_SIDE)
        dets = aligner.detect(image)
        entry["faces_found"] = len(dets)
        entry["image_size"] = list(image.size)
        entry["faces"] = [{"index": i, "box": [round(v, 2) for v in d.box], "score": round(d.score, 4),
                           "landmarks": d.landmarks.tolist()} for i, d in enumerate(dets, start=1)]
        chosen = aligner.select(dets)
        names = output_names(stem, aligner.faces, len(dets))
        for (i, det), name in zip(chosen, names):
            face = aligner.align_detection(image, det, i, len(dets))
            out = save_image(face.image, out_dir / name)
            info = entry["faces"][i - 1]
            info.update(face.transform_dict())
            info["output"] = str(out)
            entry["outputs"].append(str(out))
        entry["status"] = "ok"
    except (ImageError, AlignError) as e:
        reason = e.one_line() if isinstance(e, GantuneError) else str(e)
        entry["reason"] = reason[len(str(path)) + 2:] if reason.startswith(f"{path}: ") else reason
    except GantuneError:
        raise  # missing models etc.: the whole run fails, not one photo
    except (OSError, ValueError, RuntimeError, MemoryError) as e:  # a photo that breaks dlib/PIL: report it, go on
        entry["reason"] = f"{type(e).__name__}: {e}"
    entry["seconds"] = round(time.perf_counter() - t0, 4)
    return entry


# --- worker pool ----------------------------------------------------------------------------------------------------
_worker: FaceAligner | None = None


def _init_worker(config: dict) -> None:
    global _worker
    _worker = FaceAligner(**config).load()


def _work(job: tuple[Path, str, Path]) -> dict:
    assert _worker is not None
    return align_one(_worker, *job)


def _mp_context():
    # fork shares the already loaded models and skips re-importing torch; elsewhere (macOS, Windows) spawn
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def align_files(paths: list[Path], out_dir: str | os.PathLike, aligner: FaceAligner, *, stems: list[str] | None = None,
                workers: int = 1, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Align ``paths`` into ``out_dir``; returns the manifest entries in input order (also passed to ``on_result``
    as they finish, in order). ``stems``: precomputed output stems (default :func:`output_stems`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = stems if stems is not None else output_stems(paths)
    jobs = [(Path(p), s, out) for p, s in zip(paths, stems)]
    aligner.load()  # once, here: forked workers inherit the models
    results: list[dict] = []

    def emit(it: Iterable[dict]) -> None:
        for entry in it:
            results.append(entry)
            if on_result:
                on_result(entry)

    if workers <= 1 or len(jobs) <= 1:
        emit(align_one(aligner, *job) for job in jobs)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_mp_context(),
                                 initializer=_init_worker, initargs=(aligner.config(),)) as pool:
            emit(pool.map(_work, jobs, chunksize=1))
    return results
