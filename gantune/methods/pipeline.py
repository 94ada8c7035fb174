"""The per-image batch pipeline shared by every ``invert`` method: inputs -> PNG + record + manifest line.

A method only supplies a per-batch callable::

    invert_batch(images: Tensor (B, 3, H, W) in [-1, 1], names: list[str]) -> list[InversionResult]

and :func:`run_pipeline` does everything else, identically for all methods:

* names: output stems are fixed from the *whole* input list before sharding (``photo.png`` -> ``photo``; a repeated
  stem gets ``_2``, ``_3``…), so a failed image never shifts the names of the others and shards agree;
* loading: :func:`gantune.io.load_image` (EXIF, any mode), optional face alignment (``aligner``), resize to
  ``input_size`` with :func:`gantune.io.pil_to_tensor`; a bad image is reported and skipped;
* batching: up to ``batch_size`` images per call; if a batch raises, its images are retried one by one so that only
  the bad one fails (the error, not a traceback, goes to the manifest; ``GANTUNE_DEBUG=1`` re-raises);
* outputs per image: ``<stem>.png`` (the reconstruction, optionally resized), ``<stem>.safetensors`` (the
  :class:`~gantune.io.InversionRecord`), ``intermediate/<t>/<stem>.png`` when asked (t = 0: the initial image), and
  one ``manifest.jsonl`` line (status, paths, timings, error) written as soon as the image is done;
* progress: ``progress(message)`` after every image (the CLI passes a rich bar / plain lines).

Method authors: a method plugs into ``gantune invert --method NAME`` through ``INVERT_METHODS`` in
:mod:`gantune.cli.invert_cmd` (NAME -> ``setup(InvertOptions) -> MethodRun``); :mod:`gantune.methods.hyper.method`
is the worked example.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io.images import ImageError, load_image, pil_to_tensor, save_image, tensor_to_pil
from ..io.manifest import Manifest
from .result import InversionResult

InvertBatch = Callable[[torch.Tensor, list[str]], list[InversionResult]]


@dataclass
class InvertOptions:
    """What the ``invert`` command hands to a method's setup function (see ``INVERT_METHODS``)."""

    weights: str | None = None  # generator / method checkpoint (registry name, path or URL); None = method default
    encoder: str | None = None  # encoder checkpoint for encoder-based methods; None = method default
    iters: int | None = None  # iterations / steps; None = method default
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # compute dtype
    noise: str = "const"  # generator noise mode
    batch_size: int = 1  # images per batch
    save_intermediate: bool = False  # keep every iteration's image
    params: dict = field(default_factory=dict)  # method-specific KEY=VALUE options (strings)


@dataclass
class MethodRun:
    """A method ready to run: what the pipeline needs from it."""

    invert_batch: InvertBatch  # (B,3,H,W) in [-1,1], names -> results
    input_size: int | tuple[int, int]  # images are resized to this before the call
    record_meta: dict = field(default_factory=dict)  # merged into every record (generator, method params, …)
    describe: str = ""  # one line for the console


@dataclass
class PipelineSummary:
    ok: int = 0
    failed: int = 0
    entries: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def output_stems(paths: Iterable[Path]) -> list[str]:
    """Unique output stems in input order: repeated stems get ``_2``, ``_3``, …"""
    used: set[str] = set()
    out = []
    for p in paths:
        stem = Path(p).stem or "image"
        name, k = stem, 1
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        out.append(name)
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _debug() -> bool:
    return os.environ.get("GANTUNE_DEBUG", "") not in ("", "0", "false", "no")


def _error_text(e: BaseException) -> str:
    from ..errors import GantuneError
    from ..io.record import RecordError

    if isinstance(e, GantuneError):
        return e.one_line()
    if isinstance(e, (ImageError, RecordError)):  # their messages are already one line with the path
        return str(e)
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()


@dataclass
class _Item:
    path: Path
    stem: str
    tensor: torch.Tensor | None = None
    sha256: str | None = None
    align: dict | None = None
    load_s: float = 0.0


def run_pipeline(
    inputs: list[Path],  # every input (already expanded); names are fixed over this list
    out_dir: Path,  # outputs folder
    method: MethodRun,  # the method's batch callable, input size and record metadata
    *,
    batch_size: int = 1,  # images per call of ``method.invert_batch``
    shard: tuple[int, int] = (0, 1),  # (i, n): process inputs i, i+n, i+2n, …
    resize: int | None = None,  # write the reconstruction PNG at this side (None = generator resolution)
    save_intermediate: bool = False,  # write intermediate/<t>/<stem>.png for every iteration the method returns
    delta_dtype: torch.dtype = torch.float32,  # dtype of stored offsets (float16 halves record size)
    aligner=None,  # a gantune.align.FaceAligner (first face only), or None when inputs are already aligned
    progress: Callable[[str], None] | None = None,  # called with one line per finished image
    manifest_name: str = "manifest.jsonl",
) -> PipelineSummary:
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir / manifest_name)
    summary = PipelineSummary()
    stems = output_stems(inputs)
    i, n = shard
    todo = [_Item(p, s) for k, (p, s) in enumerate(zip(inputs, stems)) if k % n == i]

    def report(item: _Item, entry: dict) -> None:
        entry = {"input": str(item.path), "name": item.stem, **entry}
        manifest.write(entry)
        summary.entries.append(entry)
        if entry["status"] == "ok":
            summary.ok += 1
            msg = f"{item.path} -> {entry['image']}"
        else:
            summary.failed += 1
            msg = f"{item.path}: FAILED {entry.get('error', '')}"
        if progress:
            progress(msg)

    def load(item: _Item) -> bool:
        t0 = time.perf_counter()
        try:
            img = load_image(item.path)
            item.sha256 = file_sha256(item.path)
            if aligner is not None:
                faces = aligner.align(img)
                img = faces[0].image
                item.align = faces[0].transform_dict()
            item.tensor = pil_to_tensor(img, method.input_size)
        except Exception as e:  # noqa: BLE001 - every per-image failure is reported, never fatal for the batch
            if _debug() and not isinstance(e, ImageError):
                raise
            report(item, {"status": "failed", "stage": "load", "error": _error_text(e)})
            return False
        item.load_s = time.perf_counter() - t0
        return True

    def write(item: _Item, res: InversionResult, batch_s: float, batch_n: int) -> None:
        png = out_dir / f"{item.stem}.png"
        rec_path = out_dir / f"{item.stem}.safetensors"
        img = tensor_to_pil(res.image)
        if resize:
            from PIL import Image

            img = img.resize((resize, resize), Image.LANCZOS)
        save_image(img, png)
        inter = []
        if save_intermediate:
            for t, y in enumerate(res.intermediates):
                p = out_dir / "intermediate" / str(t) / f"{item.stem}.png"
                save_image(y, p)
                inter.append(str(p))
        timings = {"load": round(item.load_s, 4), "batch": round(batch_s, 4), "per_image": round(batch_s / batch_n, 4),
                   **{k: round(v, 4) for k, v in res.timings.items()}}
        meta = {**method.record_meta, **res.meta, "source": {"path": str(item.path), "sha256": item.sha256},
                "timings": timings}
        if item.align is not None:
            from ..align import RECORD_META_KEY

            meta[RECORD_META_KEY] = item.align
        res.to_record(delta_dtype=delta_dtype, extra_meta=meta).save(rec_path)
        entry = {"status": "ok", "image": str(png), "record": str(rec_path), "timings": timings,
                 "source_sha256": item.sha256}
        if inter:
            entry["intermediate"] = inter
        if item.align is not None:
            entry["align"] = item.align
        if res.meta.get("metrics"):
            entry["metrics"] = res.meta["metrics"]
        report(item, entry)

    def run(batch: list[_Item]) -> None:
        x = torch.cat([it.tensor for it in batch])
        t0 = time.perf_counter()
        try:
            results = method.invert_batch(x, [it.stem for it in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the method returned {len(results)} results for {len(batch)} images")
        except Exception as e:  # noqa: BLE001
            if len(batch) > 1:  # isolate the bad image
                for it in batch:
                    run([it])
                return
            if _debug():
                raise
            report(batch[0], {"status": "failed", "stage": "invert", "error": _error_text(e)})
            return
        dt = time.perf_counter() - t0
        for it, res in zip(batch, results):
            try:
                write(it, res, dt, len(batch))
            except Exception as e:  # noqa: BLE001 - e.g. disk full for one file
                if _debug():
                    raise
                report(it, {"status": "failed", "stage": "write", "error": _error_text(e)})
        for it in batch:
            it.tensor = None

    pending: list[_Item] = []
    for item in todo:
        if load(item):
            pending.append(item)
        if len(pending) >= batch_size:
            run(pending)
            pending = []
    if pending:
        run(pending)
    summary.seconds = time.perf_counter() - t_start
    return summary
