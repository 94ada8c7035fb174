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
    from ..align.batch import AlignPool, output_names
    from ..align.landmarks import load_models
    from ..io.runner import Batch, Item, output_stems

    def write(item, photo, outs) -> None:
        for (i, img), name in zip(photo.crops, output_names(item.name, "largest", 1)):
            outs.image(f"face{i}", name, img)

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
                batch = Batch("align", [Item(name=s, input=p) for p, s in zip(paths, output_stems(paths))], out,
                              params={"size": size})
                with AlignPool(aligner, workers) as pool:  # what gantune align runs
                    ok = batch.run(process=pool, write=write, batch_size=workers).ok
                el = time.perf_counter() - t0
                lines.append(f"align {size}px hog, {workers} worker{'s' if workers > 1 else ''}: "
                             f"{len(paths) / el:5.2f} photos/s ({len(paths)} photos incl. 2048 px ones, {el:.1f} s, "
                             f"{ok} ok)")
    return lines


if __name__ == "__main__":
    for line in bench_align():
        print(line)
