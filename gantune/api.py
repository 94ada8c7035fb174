"""Python API: ``gantune.invert``, ``gantune.edit``, ``gantune.adapt``, ``gantune.interpolate`` (the CLI commands
without the files).

>>> results = gantune.invert(["face.png"], method="hyperstyle", iters=5)          # list[InversionResult]
>>> codes = gantune.invert(["face.png"], method="e4e")                            # every method of the registry
>>> strip = gantune.edit(results[0], "age", strength=[-3, 0, 3])                   # (3, 3, H, W) images
>>> toon = gantune.adapt(results[0], target="toonify")                             # (3, H, W)
>>> path = gantune.interpolate(results[0], codes[0], steps=9)                      # (9, 3, H, W)
"""

from __future__ import annotations

import os

import torch

from .methods.invert import API_METHODS, invert

__all__ = ["API_METHODS", "adapt", "edit", "interpolate", "invert"]

def _generator(G, record, device):
    if G is not None and not isinstance(G, (str, os.PathLike)):
        return G
    from .editing.render import record_generator_spec
    from .errors import InputError
    from .weights import load_generator

    spec = G or record_generator_spec(record)
    if spec is None:
        raise InputError("the record does not say which generator it was made with", "pass the generator explicitly")
    return load_generator(spec, device=device)[0].eval()


def edit(record, direction=None, strength=1.0, *, text: str | None = None, neutral: str = "a face",
         beta: float = 0.15, clip: str = "clip-vit-b-32", styleclip_stats: str | None = None, generator=None,
         device="cpu", noise: str = "const") -> torch.Tensor:
    """Images (S, 3, H, W), one per strength s, with the record's offsets. A direction: G(w + s·n; θ ⊙ (1 + Δ)),
    ``direction`` a registry name (age/smile/pose), file, or tensor (w,) / (num_ws, w). A text edit (``text``, as
    ``gantune edit --text``): StyleCLIP's global direction of ``text`` against ``neutral`` with threshold ``beta``,
    each strength an α; ``styleclip_stats`` for generators other than ffhq-1024."""
    from .editing import Direction, load_direction, load_record, parse_strengths
    from .editing.edit import direction_renderer, render_edits, text_renderer
    from .editing.text import TextEditor
    from .errors import InputError
    from .runtime import resolve_device

    if (direction is None) == (text is None):
        raise InputError("give either a direction or a text", "gantune.edit(record, 'age') or text='a smiling face'")
    rec = load_record(record)
    dev = resolve_device(device)
    G = _generator(generator, rec, dev)
    strengths = parse_strengths(strength) if isinstance(strength, (str, int, float)) else [float(s) for s in strength]
    if text is not None:
        editor = TextEditor(text, neutral, beta, clip, styleclip_stats, dev)
        render = text_renderer(G, rec, editor.direction(G), noise_mode=noise)
    else:
        d = direction if isinstance(direction, Direction) else (Direction("direction", direction, "tensor")
                                                                if isinstance(direction, torch.Tensor)
                                                                else load_direction(direction))
        render = direction_renderer(G, rec, d, noise_mode=noise)
    return torch.cat([imgs for _, _, imgs in render_edits([render], strengths)])  # one chunk: all strengths at once


def interpolate(a, b, steps: int | list[float] = 9, *, generator=None, device="cpu",
                noise: str | None = None) -> torch.Tensor:
    """Frames (S, 3, H, W) from record ``a`` (t = 0) to ``b`` (t = 1), both included: latents, HyperStyle offsets and
    tuned weights lerped together, as ``gantune interpolate`` renders them. ``a``, ``b``: records, paths or
    InversionResults made with the same generator; ``steps``: a frame count or a list of t; ``generator``: a
    Generator (rendered in its own precision) or a spec, default the one the records name."""
    from .editing.interpolate import interpolation_frames, load_compatible
    from .runtime import resolve_device

    ra, rb = load_compatible([a, b], ["a", "b"])
    G = _generator(generator, ra, resolve_device(device))
    return torch.stack([img for _, img in interpolation_frames(G, ra, rb, steps, noise_mode=noise)])


def adapt(record, target, *, layers=None, offset_scale: float = 1.0, device="cpu", noise: str = "const") -> torch.Tensor:
    """The record rendered with a fine-tuned ``target`` generator (spec or Generator) and its offsets: (3, H, W)."""
    from .editing import load_record
    from .editing.adapt import adapt_record
    from .runtime import resolve_device

    rec = load_record(record)
    G = _generator(target, rec, resolve_device(device))
    return adapt_record(G, rec, layers=layers, offset_scale=offset_scale, noise_mode=noise).image
