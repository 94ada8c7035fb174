"""Face-detection rates (``gantune eval detection``): the share of images in which dlib's frontal HOG face detector
(the one ``gantune align`` uses, with one upsampling pass) finds a face, for samples of each generator and for the
DCGAN source faces, all upscaled (LANCZOS) to the same side."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


from .. import __version__
from ..align.landmarks import hog_detector
from ..errors import InputError
from ..io.images import load_image, tensor_to_pil, to_rgb
from ..runtime import resolve_device
from ..sampling import generate
from ..train.data import SYNTHETIC_FACES
from ..weights import load_generator
from .common import describe_generator, say
from .data import HeldOutImages, heldout_seed

DETECT_UPSAMPLE = 1  # dlib HOG upsampling passes (gantune align's default)
DCGAN_SIDE = 64  # the synthetic-faces DCGAN's native resolution


def _as_pil_list(images) -> list:
    """A (B, 3, H, W) tensor in [-1, 1], or a sequence of PIL images / (3, H, W) tensors / paths / HxWx3 uint8 arrays."""
    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        return list(tensor_to_pil(x.detach().float().cpu().clamp(-1, 1)))
    out = []
    for im in images:
        if isinstance(im, torch.Tensor):
            out.append(tensor_to_pil(im.detach().float().cpu().clamp(-1, 1)))
        elif isinstance(im, np.ndarray):
            out.append(Image.fromarray(im).convert("RGB"))
        elif isinstance(im, Image.Image):
            out.append(to_rgb(im))
        else:
            out.append(load_image(im))
    return out


def upscaled(img, side: int):
    """The image resized with LANCZOS so that its longer side is ``side``."""
    w, h = img.size
    s = side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return img if size == img.size else img.resize(size, Image.LANCZOS)


def detection_rate(images, *, upscale: int = 256, upsample: int = DETECT_UPSAMPLE) -> dict:
    """Share of images in which dlib's frontal HOG detector finds at least one face after a LANCZOS resize to
    ``upscale`` px. {"count", "found", "rate", "faces": per-image face counts}."""
    det = hog_detector()
    faces = []
    for im in _as_pil_list(images):
        arr = np.ascontiguousarray(np.asarray(upscaled(im, upscale).convert("RGB")))
        faces.append(len(det(arr, upsample)))
    n = len(faces)
    found = sum(1 for f in faces if f > 0)
    return {"count": n, "found": found, "rate": found / n if n else float("nan"), "faces": faces}


def evaluate_detection(
    weights: Sequence[str] = (),  # generators (registry names, paths, URLs)
    *,
    count: int = 100,  # samples per generator (seeds S … S+N−1, as `gantune generate --seeds`)
    upscale: int = 256,  # side the images are resized to before detection
    seed: int = 0,  # first sample seed; the source faces use the held-out torch seed 10_000_000 + S
    truncation: float = 1.0,  # generator sampling psi
    source_too: bool = False,  # also the DCGAN synthetic-faces source
    device="auto",
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Face-detection rates of generator samples (and the DCGAN source) under one detector and one resize."""
    if count < 1:
        raise InputError(f"--count {count}: need at least one image")
    if upscale < 16:
        raise InputError(f"--upscale {upscale}: too small for the detector (use e.g. 256)")
    if not weights and not source_too:
        raise InputError("nothing to evaluate", "give --weights (repeatable) and/or --source-too")
    if not (isinstance(truncation, (int, float)) and math.isfinite(truncation)):
        raise InputError(f"--truncation {truncation!r}: not a finite number", "give a psi such as 0.7 or 1")
    dev = resolve_device(device)
    rows = []
    sides = {DCGAN_SIDE}  # the source at its own side and at every generator's (the side it was trained at)
    for spec in weights:
        G, info = load_generator(spec, device=dev)
        G = G.eval()
        say(log, f"{spec}: {count} samples at {G.cfg.resolution} px …")
        imgs = [s.image for s in generate(G, list(range(seed, seed + count)), truncation=truncation,
                                          batch_size=batch_size, device=dev)]
        r = detection_rate(torch.stack(imgs), upscale=upscale)
        rows.append({"images": Path(str(spec)).name, "kind": "generator",
                     "generator": describe_generator(spec, G, info), "resolution": G.cfg.resolution,
                     "sampling": {"seeds": f"{seed}-{seed + count - 1}", "truncation": truncation,
                                  "noise_mode": "const"},
                     **r})
        sides.add(G.cfg.resolution)
        del G
    if source_too:
        held = HeldOutImages(SYNTHETIC_FACES, count, seed)
        for side in sorted(sides, reverse=True):
            say(log, f"{SYNTHETIC_FACES}: {count} DCGAN faces at {side} px …")
            r = detection_rate(held.at(side), upscale=upscale)
            what = "DCGAN source" if side == DCGAN_SIDE else f"DCGAN source at {side} px, as a {side} px generator trains"
            rows.append({"images": f"{SYNTHETIC_FACES} ({what})", "kind": "source", "resolution": side,
                         "sampling": {"heldout_torch_seed": heldout_seed(seed)}, **r})
    return {
        "kind": "gantune-eval-detection",
        "format": 1,
        "gantune": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "detector": f"dlib frontal face detector (HOG, dlib.get_frontal_face_detector()), {DETECT_UPSAMPLE} upsampling "
                    "pass, as gantune align",
        "upscale": upscale,
        "resize": "LANCZOS, longer side to --upscale",
        "count": count,
        "rows": rows,
    }
