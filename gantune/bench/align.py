"""Alignment throughput on CPU: photos per second for a batch, with 1 and 2 worker processes.

The batch is built from photos shipped in scikit-image (astronaut, LFW faces upscaled, a two-face composite,
a 2048 px copy that exercises detection on a downscaled copy); ``gantune.bench`` calls :func:`bench_align`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _bench_photos(folder: Path, n: int) -> list[Path]:
    from skimage import data

    astro = Image.fromarray(data.astronaut())
    lfw = data.lfw_subset()

    def face(i: int, scale: int) -> Image.Image:
        arr = (lfw[i] * 255).round().astype(np.uint8)
        return Image.fromarray(arr, "L").resize((25 * scale, 25 * scale), Image.LANCZOS).convert("RGB")

    two = Image.new("RGB", (520, 320), (128, 128, 128))
    two.paste(face(0, 8), (20, 60))
    two.paste(face(1, 11), (245, 20))
    kinds = [
        ("astro", lambda i: astro),
        ("lfw", lambda i: face(i % 100, 8 + i % 4)),
        ("two", lambda i: two),
        ("mirror", lambda i: astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        ("big", lambda i: astro.resize((2048, 2048), Image.LANCZOS)),
    ]
    paths = []
    for i in range(n):
        name, make = kinds[i % len(kinds)]
        p = folder / f"{i:03d}_{name}.jpg"
        make(i).save(p, quality=92)
        paths.append(p)
    return paths


def bench_align(quick: bool = False) -> list[str]:
    """Lines like ``align 1024px hog, 2 workers: 3.1 photos/s (20 photos, 6.4 s, 20 ok)``."""
    from ..align.aligner import FaceAligner
    from ..align.batch import align_files
    from ..align.landmarks import load_models

    lines = []
    t0 = time.perf_counter()
    load_models("hog")
    lines.append(f"dlib HOG detector + 68-point predictor load: {time.perf_counter() - t0:.2f} s (once per process)")
    n = 10 if quick else 30
    sizes = (256,) if quick else (256, 1024)
    with tempfile.TemporaryDirectory(prefix="gantune-align-bench-") as tmp:
        src = Path(tmp) / "photos"
        src.mkdir()
        paths = _bench_photos(src, n)
        for size in sizes:
            for workers in (1, 2):
                aligner = FaceAligner(size=size)
                out = Path(tmp) / f"out{size}_{workers}"
                t0 = time.perf_counter()
                entries = align_files(paths, out, aligner, workers=workers)
                el = time.perf_counter() - t0
                ok = sum(e["status"] == "ok" for e in entries)
                lines.append(f"align {size}px hog, {workers} worker{'s' if workers > 1 else ''}: "
                             f"{len(paths) / el:5.2f} photos/s ({len(paths)} photos incl. 2048 px ones, {el:.1f} s, "
                             f"{ok} ok)")
    return lines


if __name__ == "__main__":
    for line in bench_align():
        print(line)
