"""Inversion of in-memory images by method name: what ``gantune.invert`` runs (the command line's ``gantune invert``
reads and writes files around the same methods). Typed keyword arguments for hyperstyle, optim and overparam; every
other method of the registry (:mod:`gantune.methods.registry`) through its InvertOptions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..io.images import load_image, pil_to_tensor
from ..io.record import class_label
from ..metrics.lpips import get_lpips
from ..runtime import resolve_device, resolve_dtype
from ..weights import load_generator
from .hyper.hypernet import INPUT_SIZE
from .hyper.method import HyperStyle
from .optim import ProjectorSettings, TuneSettings, project_and_tune
from .overparam import OverparamSettings, invert_overparam
from .pipeline import InvertOptions, fit_aspect
from .registry import METHODS, setup
from .result import InversionResult

# method name -> function(images, **kwargs) -> list[InversionResult]: typed keyword arguments for hyperstyle, optim
# and overparam; every other method of the registry (gantune.methods.registry) through its InvertOptions
API_METHODS: dict = {}


def _to_batch(images, size: int | tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
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
