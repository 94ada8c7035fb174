"""Edits of one record, as ``gantune edit`` and :func:`gantune.edit` make them: the record moved along latent
directions (w + s·n: InterFaceGAN, GANSpace) or towards a text (a StyleCLIP global direction in style space), rendered
with its offsets and tuned weights a chunk of strengths at a time. For the command each image also gets its identity
distance to the unedited reconstruction and, for a record inverted with --align, its paste-back into the photo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .. import progress
from ..align import RECORD_META_KEY, paste_back
from ..errors import InputError
from ..io.images import tensor_to_pil, to_width
from ..io.record import InversionRecord
from ..io.render import render_record
from .directions import Direction
from .identity import identity_to, reconstruction_descriptor
from .render import edited_latents
from .text import render_text_edit

Renderer = Callable[[list[float]], torch.Tensor]  # strengths -> images (S, 3, H, W) in [-1, 1]


def direction_renderer(G, record: InversionRecord, direction: Direction, *, noise_mode: str | None = None) -> Renderer:
    """The record at ``w + s·n`` for each strength s, n: ``direction`` fitted to G's W+ rows."""
    n = direction.fit(G.num_ws, G.cfg.w_dim)

    def render(strengths: list[float]) -> torch.Tensor:
        return render_record(G, record, latents=edited_latents(G, record, n, strengths), noise_mode=noise_mode)

    return render


def text_renderer(G, record: InversionRecord, direction, *, noise_mode: str | None = None) -> Renderer:
    """The record with its styles moved by α·Δs for each α, ``direction`` a StyleCLIP global direction of G."""

    def render(alphas: list[float]) -> torch.Tensor:
        return render_text_edit(G, record, direction, alphas, noise_mode=noise_mode)

    return render


def render_edits(renderers: list[Renderer], strengths: list[float], *,
                 batch_size: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(renderer index, index of the chunk's first strength, images) for each chunk of at most ``batch_size``
    strengths (None: all at once), renderer by renderer; the item's progress counts images after each chunk."""
    size = batch_size or max(1, len(strengths))
    total = len(renderers) * len(strengths)
    for di, render in enumerate(renderers):
        for k in range(0, len(strengths), size):
            chunk = strengths[k : k + size]
            yield di, k, render(chunk)
            progress.step(di * len(strengths) + k + len(chunk), total, "image")


@dataclass
class EditedImage:
    """One edit of a record as a picture, with what ``gantune edit`` reports of it."""

    direction: int  # index of its renderer (direction)
    strength: int  # index of its strength
    image: Image.Image  # at the asked width (resize) or the generator's
    photo: Image.Image | None = None  # the edit pasted back into the record's original photo
    identity: float | None = None  # dlib distance to the unedited reconstruction


def edited_images(G, record: InversionRecord, renderers: list[Renderer], strengths: list[float], *,
                  batch_size: int | None = None, noise_mode: str | None = None, resize: int | None = None,
                  photo: Image.Image | None = None, identity: bool = False) -> Iterator[EditedImage]:
    """Every edit of ``record`` in order (renderer by renderer, strength by strength), rendered ``batch_size``
    strengths at a time: with ``identity`` its distance to the record rendered unedited (``noise_mode``), with
    ``photo`` (the photo the record was aligned from) the edit pasted back into it along the record's transform."""
    ref = reconstruction_descriptor(G, record, noise_mode=noise_mode) if identity else None
    for di, k, imgs in render_edits(renderers, strengths, batch_size=batch_size):
        for j, im in enumerate(tensor_to_pil(imgs)):
            im = to_width(im, resize) if resize else im
            yield EditedImage(di, k + j, im,
                              photo=None if photo is None else paste_back(im, photo, record.meta[RECORD_META_KEY]),
                              identity=None if ref is None else identity_to(ref, im))


def paste_source(record: InversionRecord, onto: Path | None) -> Path:
    """The original photo to paste an edit of ``record`` into (one-line errors when the record cannot be pasted)."""
    transform = record.meta.get(RECORD_META_KEY)
    if not transform:
        raise InputError("the record has no alignment transform, so --paste has nothing to paste into",
                         "invert the photo with --align, or use gantune paste with the align manifest")
    src = onto or transform.get("source") or (record.meta.get("source") or {}).get("path")
    if not src:
        raise InputError("the record does not name its original photo", "pass --onto PHOTO")
    return Path(src)
