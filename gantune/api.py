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
from collections.abc import Sequence
from pathlib import Path

import torch

from .io.record import class_label
from .methods.pipeline import InvertOptions
from .methods.registry import METHODS, setup
from .methods.result import InversionResult

# method name -> function(images, **kwargs) -> list[InversionResult]: typed keyword arguments for hyperstyle, optim
# and overparam; every other method of the registry (gantune.methods.registry) through its InvertOptions
API_METHODS: dict = {}


def _to_batch(images, size: int | tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
    from .io.images import load_image, pil_to_tensor
    from .methods.pipeline import fit_aspect

    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"image tensors must be (3, H, W) or (B, 3, H, W) in [-1, 1]; got {tuple(images.shape)}")
        return x.float(), [f"image{i}" for i in range(x.shape[0])]
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        images = [images]
    xs, names = [], []
    for i, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            names.append(Path(im).stem)
            im = load_image(im)
        elif isinstance(im, torch.Tensor):
            names.append(f"image{i}")
            xs.append(im[None].float() if im.ndim == 3 else im.float())
            continue
        else:
            names.append(f"image{i}")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        xs.append(pil_to_tensor(fit_aspect(im.convert("RGB"), "crop", hw)[0], size))  # as gantune invert: centre crop
    if not xs:
        raise ValueError("no images given")
    return torch.cat([torch.nn.functional.interpolate(x, size=xs[0].shape[-2:], mode="bilinear", antialias=True)
                      if x.shape[-2:] != xs[0].shape[-2:] else x for x in xs]), names


def _hyperstyle(images, *, weights=None, encoder=None, iters: int = 5, device="auto", dtype="float32",
                batch_size: int = 4, noise: str = "const", keep_intermediates: bool = False, inverter=None):
    from .methods.hyper.hypernet import INPUT_SIZE
    from .methods.hyper.method import HyperStyle
    from .runtime import resolve_device, resolve_dtype

    if inverter is None:
        inverter = HyperStyle.load(weights, encoder, device=resolve_device(device), iters=iters, noise_mode=noise,
                                   dtype=resolve_dtype(dtype, device), keep_intermediates=keep_intermediates)
    x, names = _to_batch(images, getattr(inverter, "input_size", INPUT_SIZE))
    meta = inverter.record_meta()
    out: list[InversionResult] = []
    for i in range(0, x.shape[0], batch_size):
        for r in inverter(x[i : i + batch_size], names[i : i + batch_size]):
            r.meta = {**meta, **r.meta}
            out.append(r)
    return out


API_METHODS["hyperstyle"] = _hyperstyle


def _optimization(method: str):
    """``optim`` (W/W+ projector, ``tune=True`` for PTI) and ``overparam`` (latent-matrix inversion)."""

    def run(images, *, weights, device="auto", seed: int = 0, distance=None, tune: bool = False, tune_settings=None,
            class_index: int | None = None, **settings):
        from .methods.optim import ProjectorSettings, TuneSettings, project_and_tune
        from .methods.overparam import OverparamSettings, invert_overparam
        from .metrics.lpips import get_lpips
        from .runtime import resolve_device
        from .weights import load_generator

        dev = resolve_device(device)
        G = weights if not isinstance(weights, (str, os.PathLike)) else load_generator(weights, device=dev)[0]
        G = G.eval().to(dev)
        c = class_label(G.cfg.c_dim, class_index, what="the generator")
        x, names = _to_batch(images, G.cfg.resolution)
        dist = distance or get_lpips("vgg", device=dev)
        if method == "optim":
            ts = tune_settings or (TuneSettings() if tune else None)
            out = project_and_tune(G, x.to(dev), ProjectorSettings(**settings), ts, names=names, distance=dist,
                                   device=dev, seed=seed, c=c)
        else:
            out = invert_overparam(G, x.to(dev), OverparamSettings(**settings), names=names, distance=dist,
                                   device=dev, seed=seed)
        return out.results

    return run


API_METHODS["optim"] = _optimization("optim")
API_METHODS["overparam"] = _optimization("overparam")


def _registered(name: str):
    """A registry method with the command line's options (``iters``, ``encoder``, … and method parameters as
    keyword arguments, e.g. ``initial_iters=2``): the same setup and batch callable as ``gantune invert --method``."""

    def run(images, *, weights=None, encoder=None, iters=None, device="auto", dtype="float32", noise="const",
            batch_size: int = 1, keep_intermediates: bool = False, class_index: int | None = None, **params):
        opts = InvertOptions(weights=weights, encoder=encoder, iters=iters, device=device, dtype=dtype, noise=noise,
                             batch_size=batch_size, save_intermediate=keep_intermediates,
                             params={k: str(v) for k, v in params.items()}, class_index=class_index)
        method = setup(name, opts)
        c = method.class_label(class_index)
        x, names = _to_batch(images, method.input_size)
        out: list[InversionResult] = []
        for i in range(0, x.shape[0], batch_size):
            for r in method.invert_batch(x[i : i + batch_size], names[i : i + batch_size]):
                r.meta = {**method.record_meta, **r.meta}
                r.c = c if c is not None else r.c
                out.append(r)
        return out

    return run


for _name in METHODS:
    API_METHODS.setdefault(_name, _registered(_name))


def invert(images, method: str = "hyperstyle", **kwargs) -> list[InversionResult]:
    """Invert images (paths, PIL images, or tensors in [-1, 1]) with ``method``. For hyperstyle: ``weights``,
    ``encoder``, ``iters`` (5), ``device``, ``dtype``, ``batch_size``, ``noise``, ``keep_intermediates``, or a ready
    ``inverter`` (:class:`gantune.methods.hyper.method.HyperStyle`) to skip loading. For optim with a class-conditional
    generator: ``class_index`` (each result carries its one-hot label ``c``)."""
    if method not in API_METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(API_METHODS))}")
    return API_METHODS[method](images, **kwargs)


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
