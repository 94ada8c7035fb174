"""Image <-> tensor conversion, in exactly one place.

Convention: generator images are float tensors in [-1, 1], shape (B, 3, H, W). To 8-bit:
``round((x + 1) · 127.5)`` clamped to [0, 255] (round half to even, as torch.round). From 8-bit: ``x / 127.5 - 1``.
(The HyperStyle scripts truncate instead of rounding; gantune rounds, which halves the quantisation error.)
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import GantuneError, RenderError
from .atomic import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(GantuneError):
    """A file that cannot be used as an input image (one-line reason in the message)."""


def tensor_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (C, H, W) in [-1, 1] -> uint8 (B, H, W, C) / (H, W, C).

    Raises :class:`~gantune.errors.RenderError` when ``x`` holds NaN or infinite values (a clamp would silently turn
    them into black or white pixels)."""
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise RenderError(f"the render produced NaN or infinite values ({bad} of {x.numel()} pixel values)",
                          "check the latent, the strengths and the weights for NaN/inf")
    y = ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return y.movedim(-3, -1).cpu()


def tensor_to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """One image for (C, H, W), a list for (B, C, H, W)."""
    arr = tensor_to_uint8(x).numpy()
    if arr.ndim == 3:
        return Image.fromarray(arr)
    return [Image.fromarray(a) for a in arr]


def pil_to_tensor(img: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float in [-1, 1]. Resizes with LANCZOS (antialiased) when ``size`` is given."""
    img = to_rgb(img)
    if size is not None:
        wh = (size, size) if isinstance(size, int) else (size[1], size[0])
        if img.size != wh:
            img = img.resize(wh, Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, …) -> RGB. Alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb limit (2x its warning threshold)
LARGE_PIXELS = 89_478_485  # Pillow's decompression-bomb warning threshold: above it, a one-line note instead

log = logging.getLogger("gantune")  # notes for the user (one line each; without a handler they go to stderr)


def note(message: str) -> None:
    """A one-line note for the user (never a Python warning)."""
    log.warning("note: %s", message)


def load_image(path: str | os.PathLike, *, min_side: int = 16) -> Image.Image:
    """Open an image file robustly: EXIF orientation applied, any mode converted to RGB, fully decoded.

    Raises :class:`ImageError` with a one-line reason for corrupt, truncated, non-image, too small or too large files.
    A photo over Pillow's decompression-bomb warning size gives a one-line note (never a Python warning). The decoded
    image is rotated in place and converted only when it is not RGB already, so a large RGB photo is held once.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image")
    im = None
    try:
        with warnings.catch_warnings():  # Pillow's DecompressionBombWarning: the note below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        if im.width * im.height > MAX_PIXELS:
            raise ImageError(f"{p}: {im.width}x{im.height} is too large (over {MAX_PIXELS:,} pixels)")
        if im.width * im.height > LARGE_PIXELS:
            note(f"{p.name} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} megapixels), a very large "
                 f"photo: it is held in memory once (about {im.width * im.height * 3 / 2**30:.1f} GB) and faces are "
                 "detected on a reduced copy")
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        rgb = to_rgb(im)
    except ImageError:
        if im is not None:
            im.close()
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        if im is not None:
            im.close()
        raise ImageError(f"{p}: not a readable image ({e})") from None
    if rgb is not im:
        im.close()  # the converted copy is kept: free the decoded original now
    if min(rgb.size) < min_side:
        raise ImageError(f"{p}: {rgb.width}x{rgb.height} is too small (need at least {min_side} px per side)")
    return rgb


# zlib level of the PNGs gantune writes: 4 against Pillow's default 6 measured 2.1-2.4x faster on 1024 px photos
# (0.18-0.22 s against 0.44-0.52 s on this project's CPU) for files 0.6-2.8 % larger: a GPU inverts a 1024 px image
# in 13-25 ms, so writing is what a batch run waits for
PNG_COMPRESS_LEVEL = 4


def save_image(img: Image.Image | torch.Tensor, path: str | os.PathLike, **save_kw) -> Path:
    """Write atomically (temp file + rename); tensors go through :func:`tensor_to_pil`; PNGs at zlib level
    ``PNG_COMPRESS_LEVEL`` unless ``compress_level`` is given."""
    if isinstance(img, torch.Tensor):
        img = tensor_to_pil(img if img.ndim == 3 else img[0])
    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower(), "PNG")
    if fmt == "PNG":
        save_kw.setdefault("compress_level", PNG_COMPRESS_LEVEL)
    with atomic_write(p) as f:
        img.save(f, format=fmt, **save_kw)
    return p


def to_width(img: Image.Image, width: int) -> Image.Image:
    """``img`` at ``width`` pixels wide, its aspect kept (LANCZOS); unchanged when it already is."""
    if img.width == width:
        return img
    return img.resize((width, max(1, round(img.height * width / img.width))), Image.LANCZOS)


def image_grid(images: list[Image.Image], cols: int | None = None, *, pad: int = 0, bg=(255, 255, 255)) -> Image.Image:
    """Tile images (resized to the first one's size) into a grid."""
    if not images:
        raise ValueError("no images to tile")
    cols = cols or len(images)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w + (cols - 1) * pad, rows * h + (rows - 1) * pad), bg)
    for i, im in enumerate(images):
        if im.size != (w, h):
            im = im.resize((w, h), Image.LANCZOS)
        sheet.paste(im.convert("RGB"), ((i % cols) * (w + pad), (i // cols) * (h + pad)))
    return sheet
