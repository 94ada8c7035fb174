"""Inversion as a batch job: what every ``invert`` method shares on top of the item runner (:mod:`gantune.io.runner`).

A method only supplies a per-batch callable::

    invert_batch(images: Tensor (B, 3, H, W) in [-1, 1], names: list[str]) -> list[InversionResult]

and :class:`InvertJob` does the rest, identically for all methods: load each photo (EXIF, any mode), optionally
FFHQ-align it, fit it to the aspect of the method's input size (square; 4:3 for HyperStyle cars) by centre crop or
edge padding (``fit``, said in the manifest), resize it to the method's input size, and write per image
``<stem>.png`` (the reconstruction), ``<stem>.safetensors`` (the :class:`~gantune.io.InversionRecord`) and, when
asked, ``intermediate/<t>/<stem>.png``. Names, checks, resume, batching with retry, the manifest and errors are the
runner's.

Method authors: a method plugs into ``gantune invert --method NAME`` and ``gantune.invert`` through ``METHODS`` in
:mod:`gantune.methods.registry` (NAME -> ``setup(InvertOptions) -> MethodRun``); :mod:`gantune.methods.hyper.method`
is the worked example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..io.record import class_label
from .result import InversionResult
from ..align import RECORD_META_KEY
from ..io.atomic import atomic_write
from ..io.images import load_image, pil_to_tensor, save_image, tensor_to_pil, to_width

InvertBatch = Callable[[torch.Tensor, list[str]], list[InversionResult]]


@dataclass
class InvertOptions:
    """What the ``invert`` command hands to a method's setup function (see :mod:`gantune.methods.registry`)."""

    weights: str | None = None  # generator / method checkpoint (registry name, path or URL); None = method default
    encoder: str | None = None  # encoder checkpoint for encoder-based methods; None = method default
    iters: int | None = None  # iterations / steps; None = method default
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # compute dtype
    noise: str = "const"  # generator noise mode
    batch_size: int = 1  # images per batch
    save_intermediate: bool = False  # keep every iteration's image
    params: dict = field(default_factory=dict)  # method-specific KEY=VALUE options (text, or typed values)
    compile: bool = False  # torch.compile the synthesis (hyperstyle on CUDA; runtime.compile_synthesis)
    class_index: int | None = None  # class of a class-conditional generator (the record stores its one-hot label)


@dataclass
class MethodRun:
    """A method ready to run: what the pipeline needs from it."""

    invert_batch: InvertBatch  # (B,3,H,W) in [-1,1], names -> results
    input_size: int | tuple[int, int]  # images are resized to this before the call
    record_meta: dict = field(default_factory=dict)  # merged into every record (generator, method params, …)
    describe: str = ""  # one line for the console

    def class_label(self, class_index: int | None) -> torch.Tensor | None:
        """The one-hot label of ``class_index`` for this run's generator (None for an unconditional one), checked."""
        c_dim = int(((self.record_meta.get("generator") or {}).get("config") or {}).get("c_dim", 0))
        return class_label(c_dim, class_index, what="the generator")


def make_square(img: Image.Image, fit: str) -> tuple[Image.Image, dict | None]:
    """A square image from ``img``: ``crop`` keeps the centre square, ``pad`` extends the short side with its edge
    pixels. Returns the image and what was done (None when it was square already)."""
    return fit_aspect(img, fit)


def fit_aspect(img: Image.Image, fit: str, hw: tuple[int, int] = (1, 1)) -> tuple[Image.Image, dict | None]:
    """``img`` at the aspect of ``hw`` (H, W; a method's input size, (192, 256) for cars): ``crop`` keeps the
    largest centred box of that aspect, ``pad`` extends the other side with its edge pixels. Returns the image and what
    was done (None when it had that aspect already); the info gives ``aspect`` [W, H] when it is not square."""
    w, h = img.size
    ah, aw = hw
    if w * ah == h * aw:
        return img, None
    g = math.gcd(aw, ah)
    extra = {} if ah == aw else {"aspect": [aw // g, ah // g]}
    if fit == "crop":
        cw, ch = (w, w * ah // aw) if w * ah < h * aw else (h * aw // ah, h)  # too tall: full width; too wide: full height
        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
        return img.crop(box), {"mode": "crop", "from": [w, h], "box": list(box), **extra}
    if fit == "pad":
        pw, ph = (h * aw // ah, h) if w * ah < h * aw else (w, w * ah // aw)
        pw, ph = max(pw, w), max(ph, h)
        left, top = (pw - w) // 2, (ph - h) // 2
        arr = np.pad(np.asarray(img), ((top, ph - h - top), (left, pw - w - left), (0, 0)), mode="edge")
        return Image.fromarray(arr), {"mode": "pad", "from": [w, h], "offset": [left, top], **extra}
    raise ValueError(f"fit must be crop or pad, got {fit!r}")


class InvertJob:
    """The invert command's item logic for the runner: ``planned`` / ``load`` / ``process`` / ``write``."""

    def __init__(self, *, resize: int | None = None, save_intermediate: bool = False,
                 delta_dtype: torch.dtype = torch.float32, aligner=None, fit: str = "crop", gif: bool = False) -> None:
        self.method: MethodRun | None = None  # set once the model is loaded (after the runner's checks)
        self.resize, self.save_intermediate, self.delta_dtype = resize, save_intermediate, delta_dtype
        self.aligner, self.fit, self.gif = aligner, fit, gif
        self.c: torch.Tensor | None = None  # the class label every record gets (see use)

    def use(self, method: MethodRun, class_index: int | None) -> None:
        """Run ``method``; ``class_index`` is checked against its generator (conditional or not, in range)."""
        self.c = method.class_label(class_index)
        self.method = method

    @staticmethod
    def planned(item) -> list[str]:
        return [f"{item.name}.png", f"{item.name}.safetensors"]

    def load(self, item) -> torch.Tensor:
        img = load_image(item.input)
        if self.aligner is not None:
            face = self.aligner.align(img)[0]
            img = face.image
            item.info["align"] = face.transform_dict()
        else:
            size = self.method.input_size
            img, how = fit_aspect(img, self.fit, (size, size) if isinstance(size, int) else tuple(size))
            if how is not None:
                item.info["fit"] = how
        return pil_to_tensor(img, self.method.input_size)

    def process(self, items) -> list[InversionResult]:
        x = torch.cat([it.data for it in items])
        return self.method.invert_batch(x, [it.name for it in items])

    def write(self, item, res: InversionResult, outs) -> None:
        img = tensor_to_pil(res.image)
        if self.resize:  # the width; a non-square image (cars 512×384) keeps its aspect
            img = to_width(img, self.resize)
        meta = {**self.method.record_meta, **res.meta, "source": {"path": str(item.input), "sha256": item.sha256},
                "timings": {**{k: round(v, 4) for k, v in item.timings.items()},
                            **{k: round(v, 4) for k, v in res.timings.items()}}}
        if "align" in item.info:
            meta[RECORD_META_KEY] = item.info["align"]
        if "fit" in item.info:
            meta["fit"] = item.info["fit"]
        if self.c is not None:
            res.c = self.c
        record = res.to_record(delta_dtype=self.delta_dtype, extra_meta=meta)
        outs.image("image", f"{item.name}.png", img)
        record.save(outs.path("record", f"{item.name}.safetensors"))
        if self.save_intermediate:
            for t, y in enumerate(res.intermediates):
                save_image(y, outs.path(f"intermediate/{t}", f"intermediate/{t}/{item.name}.png"))
        if self.gif and res.intermediates:
            write_gif([tensor_to_pil(y) for y in res.intermediates], outs.path("gif", f"{item.name}.gif"))
        if res.meta.get("metrics"):
            item.metrics.update(res.meta["metrics"])
        item.timings.update({k: v for k, v in res.timings.items()})


def write_gif(frames: list[Image.Image], path, *, ms: int = 100):
    """An animated GIF of ``frames`` (written atomically), looping."""
    with atomic_write(path) as f:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return path
