"""The one item runner behind every batch command (align, invert, edit, adapt, generate, paste).

A command says what an item is and how to compute it; the runner does the rest, the same way everywhere:

* names: each item's output stem is fixed from the *whole* input list before sharding (:func:`output_stems`), so a
  failed item never shifts another's name and shards agree;
* checks before any model loads (:meth:`Batch.prepare`): ``-o`` must be a folder that can be created and written, no
  planned output may be one of the inputs, items whose outputs exist with the same input hash and parameters are
  skipped (``overwrite`` redoes them); inputs that are missing or not regular files (a FIFO would hang the read) fail
  alone, as items;
* running (:meth:`Batch.run`): ``load`` per item, ``process`` per batch (a failed batch is retried item by item),
  ``write`` per item through :class:`Outputs` (atomic writes, never onto an input; a failed item leaves no file);
* the manifest (:mod:`gantune.io.manifest`): one line per input with status, input path and sha256, outputs, error,
  params, timings, metrics, appended as items finish and compacted when the run ends;
* errors: :func:`gantune.errors.known_error_message` gives each failed item its one line; anything else is a bug,
  recorded as such (``GANTUNE_DEBUG=1`` re-raises it). A full disk stops the batch with one line ("no space left
  on <folder>"); items are reported (console and manifest) in input order.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import progress as _progress
from ..errors import GantuneError, InputError, debug_enabled, is_disk_full, known_error_message
from . import images
from .atomic import check_folder, kind_of, make_folder, temp_name
from .hashing import sha256_file
from .manifest import Manifest, normalize


OUT_HINT = "give a folder for the outputs that can be written; it is created if missing"
FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".safetensors", ".jsonl", ".json",
                 ".pt", ".pkl")


def output_stems(paths: Iterable[Path | str]) -> list[str]:
    """Unique output stems in input order: ``a/x.jpg, b/x.png, x_2.jpg`` -> ``x, x_3, x_2`` (a repeated stem gets
    the first free ``_N``; stems that inputs already have are never handed to another input)."""
    paths = [Path(p) for p in paths]
    taken = {p.stem or "image" for p in paths}
    used: set[str] = set()
    out = []
    for p in paths:
        stem = p.stem or "image"
        name, k = stem, 1
        while name in used or (k > 1 and name in taken):
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        taken.add(name)
        out.append(name)
    return out


def error_line(e: BaseException) -> str:
    """The one line a failed item gets in the manifest and on the console."""
    msg = known_error_message(e)
    if msg is not None:
        return msg
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"internal error {type(e).__name__}: {text} (GANTUNE_DEBUG=1 shows the traceback)"


@dataclass
class Item:
    """One unit of work: an input file (or a seed), its output stem, and what the runner learns about it."""

    name: str  # output stem, unique in the output folder
    input: Path | None = None  # the input file (None for generated items)
    label: str = ""  # what the console calls it (default: the input path or the name)
    sha256: str | None = None  # of the input file, set by prepare()
    info: dict = field(default_factory=dict)  # command-specific facts for the manifest ("faces_found", "fit", …)
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    data: Any = None  # what load() returned

    def __post_init__(self) -> None:
        self.label = self.label or (str(self.input) if self.input is not None else self.name)


class Outputs:
    """Where one item's files go: names inside the output folder, never an input, tracked for the manifest."""

    def __init__(self, out_dir: Path, forbidden: set[Path]) -> None:
        self.out_dir, self._forbidden = out_dir, forbidden
        self.written: dict[str, str] = {}  # role -> path relative to the output folder
        self._paths: list[Path] = []

    def path(self, role: str, filename: str) -> Path:
        """The path to write ``filename`` at (the caller writes it atomically), recorded under ``role``."""
        p = self.out_dir / filename
        if _real(p) in self._forbidden:
            raise InputError(f"{p} is one of the inputs; gantune never writes over an input",
                             "choose another -o folder")
        if role in self.written:
            raise RuntimeError(f"output role {role!r} written twice")
        self.written[role] = filename
        self._paths.append(p)
        return p

    def image(self, role: str, filename: str, img, **save_kw) -> Path:
        return images.save_image(img, self.path(role, filename), **save_kw)

    def discard(self) -> None:
        """Remove what this item wrote (it failed part way)."""
        for p in self._paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self.written.clear()
        self._paths.clear()


class ImageSaver:
    """Saves the images of one item in threads (PNG encoding releases Python's lock) for commands that render
    several images inside their write, on GPUs where a render takes milliseconds and a 1024 px PNG 0.2 s. Paths are
    claimed from the item's :class:`Outputs` in call order, in the calling thread; :meth:`wait` joins every save of
    the item and raises the first error (the runner then discards the item's files, none still being written).
    ``workers=0`` saves in the calling thread."""

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="gantune-save") if workers > 0 else None
        self._pending: list = []

    def image(self, outs: Outputs, role: str, filename: str, img) -> None:
        path = outs.path(role, filename)
        if self._pool is None:
            images.save_image(img, path)
        else:
            self._pending.append(self._pool.submit(images.save_image, img, path))

    def wait(self, raise_errors: bool = True) -> None:
        """Join the item's saves; ``raise_errors=False`` when the item already failed (its files are discarded)."""
        pending, self._pending = self._pending, []
        errors = [e for e in (f.exception() for f in pending) if e is not None]  # waits for each
        if errors and raise_errors:
            raise errors[0]

    def wrap(self, write: Callable) -> Callable:
        """A runner ``write`` that calls ``write`` (which saves through this saver) and returns once the item's saves
        are on disk."""
        def joined(item, data, outs) -> None:
            done = False
            try:
                write(item, data, outs)
                done = True
            finally:
                self.wait(raise_errors=done)

        return joined

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "ImageSaver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    entries: list[dict] = field(default_factory=list)  # this run's manifest entries (not the skipped ones)
    seconds: float = 0.0
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class Batch:
    """A batch command's run over its items. ``prepare()`` before loading any model, then ``run(...)``."""

    def __init__(self, command: str, items: list[Item], out_dir: str | os.PathLike, *, params: dict,
                 planned: Callable[[Item], list[str]] | None = None, shard: tuple[int, int] = (0, 1),
                 overwrite: bool = False, extra_inputs: Iterable[Path] = ()) -> None:
        self.command, self.items, self.out_dir = command, items, Path(out_dir)
        self.params = normalize(params)
        self.planned = planned or (lambda it: [])
        self.shard, self.overwrite = shard, overwrite
        # every input of the command (all shards, and files such as --onto photos): never written over
        self.forbidden = {_real(it.input) for it in items if it.input is not None}
        self.forbidden |= {_real(Path(p)) for p in extra_inputs}
        i, n = shard
        self.manifest_path = self.out_dir / ("manifest.jsonl" if n == 1 else f"manifest.shard{i}of{n}.jsonl")
        self.todo: list[Item] = []
        self.skipped: list[Item] = []
        self.missing: list[Item] = []  # inputs that do not exist or are not regular files
        self._refused: dict[str, Exception] = {}  # why each of those fails
        self.manifest: Manifest | None = None

    # --- before any model loads ---------------------------------------------------------------------------------
    def prepare(self) -> list[Item]:
        """Check the output folder and planned names, read the manifest, hash inputs, skip finished items.
        Returns the items left to do (inputs that do not exist are not among them: run() reports them).
        Raises InputError (one line) before anything is written."""
        out = self.out_dir
        check_folder(out, f"-o {out}", OUT_HINT)
        if not out.exists() and out.suffix.lower() in FILE_SUFFIXES:
            raise InputError(f"-o {out} looks like a file name; -o takes a folder",
                             f"e.g. -o {out.with_suffix('')}/; file names come from the inputs")
        names = [it.name for it in self.items]
        if len(set(names)) != len(names):
            raise RuntimeError("output names are not unique")
        i, n = self.shard
        mine = [it for k, it in enumerate(self.items) if k % n == i]
        for it in mine:
            for f in self.planned(it) + [self.manifest_path.name]:
                if _real(out / f) in self.forbidden:
                    raise InputError(f"{out / f} would overwrite the input {it.label if f != self.manifest_path.name else out / f}",
                                     "choose another -o folder; gantune never writes over its inputs")
        self.manifest = Manifest(self.manifest_path)
        for it in mine:
            bad = _unreadable(it.input) if it.input is not None else None
            if bad is not None:
                self.missing.append(it)  # reported as failed by run(); no model is loaded for it
                self._refused[it.name] = bad
                continue
            if it.input is not None:
                try:
                    it.sha256 = sha256_file(it.input)
                except OSError:
                    it.sha256 = None  # reported when the item loads
            if not self.overwrite and self._done(it):
                self.skipped.append(it)
            else:
                self.todo.append(it)
        return self.todo

    def _done(self, it: Item) -> bool:
        e = self.manifest.entries.get(it.name) if self.manifest else None
        if not e or e.get("status") != "ok" or e.get("params") != self.params:
            return False
        if it.input is not None and (e.get("input") or {}).get("sha256") != it.sha256:
            return False
        outs = e.get("outputs") or {}
        return bool(outs) and all((self.out_dir / p).is_file() for p in _flat(outs))

    # --- the run ------------------------------------------------------------------------------------------------
    def run(
        self,
        *,
        write: Callable[[Item, Any, Outputs], None],  # write one item's outputs (result from process, or its data)
        load: Callable[[Item], Any] | None = None,  # per item, before batching (default: nothing to load)
        process: Callable[[list[Item]], list[Any]] | None = None,  # per batch; a result may be an Exception
        batch_size: int = 1,
        progress=None,  # an object with advance(message), begin(label) and step(done, total, what)
        write_workers: int = 0,  # > 0 (with process): a batch's writes run in these threads during the next batch
    ) -> Summary:
        if self.manifest is None:
            self.prepare()
        t_start = time.perf_counter()
        summary = Summary(skipped=len(self.skipped), manifest=self.manifest_path)
        make_folder(self.out_dir, f"-o {self.out_dir}", OUT_HINT)
        self._clean_temp_files()
        steps = _RunSteps(self, summary, write=write, load=load, process=process, progress=progress,
                          write_workers=write_workers)
        try:
            steps.run_items(self._in_order(), batch_size, self._refused)
        except Exception as e:
            if is_disk_full(e) and not debug_enabled():
                raise GantuneError(f"no space left on {self.out_dir}", "free some space or choose another -o "
                                   "folder; a re-run skips the items already done") from None
            raise
        finally:
            steps.close()  # interrupted: what is being written still lands whole (atomic files)
            self._compact()
            summary.seconds = time.perf_counter() - t_start
        return summary

    def entry(self, it: Item, outputs: dict | None, error: str | None) -> dict:
        """The manifest line of a finished item (``error``: its one line, or None)."""
        return {
            "status": "failed" if error else "ok",
            "name": it.name,
            "input": None if it.input is None else {"path": _rel(it.input, self.out_dir), "sha256": it.sha256},
            "outputs": outputs or {},
            "error": error,
            "params": self.params,
            "timings": {k: round(v, 4) for k, v in it.timings.items()},
            "metrics": it.metrics or None,
            "info": it.info or None,
        }

    def _in_order(self) -> list[Item]:
        """The items to do and the missing ones, in input order."""
        todo = {id(it) for it in self.todo} | {id(it) for it in self.missing}
        return [it for it in self.items if id(it) in todo]

    def _compact(self) -> None:
        """The manifest's final rewrite; on a full disk the appended lines stay as they are (whole lines)."""
        try:
            self.manifest.compact([it.name for it in self.items])
        except OSError as e:
            if not is_disk_full(e):
                raise

    def _clean_temp_files(self) -> None:
        """Temporary files a killed run left for this run's outputs."""
        for it in self.todo:
            for f in self.planned(it):
                for tmp in self.out_dir.glob(temp_name(Path(f)) + "*.tmp"):
                    tmp.unlink(missing_ok=True)


class _RunSteps:
    """The steps of one :meth:`Batch.run`: load each item, process a batch (a failed batch is retried item by item),
    write each item and report it (manifest line, summary, progress) in input order.

    Writing (PNG encoding above all: 0.2 s for a 1024 px image) overlaps the next batch's loading and processing
    when ``write_workers`` > 0: each batch's writes go to a thread pool and are reported (manifest, progress) from
    the calling thread, in order, once the next batch has been processed. At most two batches' results are held."""

    def __init__(self, batch: Batch, summary: Summary, *, write, load, process, progress, write_workers: int) -> None:
        self.batch, self.summary = batch, summary
        self.write, self.load, self.process, self.progress = write, load, process, progress
        self.writer = None
        if write_workers > 0 and process is not None:
            from concurrent.futures import ThreadPoolExecutor

            self.writer = ThreadPoolExecutor(write_workers, thread_name_prefix="gantune-write")
        self.inflight: list[tuple[Item, Any]] = []  # (item, future of write_one) in input order

    def run_items(self, items: list[Item], batch_size: int, refused: dict[str, Exception]) -> None:
        """Every item in order: ``refused`` inputs (name -> why) fail where they stand, the others are loaded and
        batched."""
        pending: list[Item] = []
        for it in items:
            if it.name in refused:  # the items before it go first: reports keep the input order
                if pending:
                    self.run_batch(pending)
                    pending = []
                self.drain()
                self.fail(it, refused[it.name], "load")
                continue
            if self.load_item(it):
                pending.append(it)
            if len(pending) >= batch_size:
                self.run_batch(pending)
                pending = []
        if pending:
            self.run_batch(pending)
        self.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.shutdown(wait=True)

    # --- the steps of an item -----------------------------------------------------------------------------------
    def load_item(self, it: Item) -> bool:
        t0 = time.perf_counter()
        try:
            it.data = self.load(it) if self.load is not None else None
        except Exception as e:  # noqa: BLE001 - a bad input fails its item, never the batch
            self.fail(it, e, "load")
            return False
        it.timings["load"] = time.perf_counter() - t0
        return True

    def run_batch(self, batch: list[Item]) -> None:
        if self.process is None:
            for it in batch:
                self._begin(it.label)
                with self._listening():
                    self.write_item(it, it.data)
            return
        self._begin(", ".join(it.label for it in batch))
        t0 = time.perf_counter()
        try:
            with self._listening():
                results = self.process(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as e:  # noqa: BLE001
            self.drain()
            if len(batch) > 1:  # isolate the bad item
                for it in batch:
                    self.run_batch([it])
                return
            self.fail(batch[0], e, "process")
            return
        dt = time.perf_counter() - t0
        self.drain()  # the previous batch's writes, which ran during this batch
        for it, res in zip(batch, results):
            it.timings["process"] = dt / len(batch)
            self.write_item(it, res)

    def write_item(self, it: Item, result) -> None:
        if isinstance(result, BaseException):  # process() reported this item's failure
            self.fail(it, result, "process")
        elif self.writer is None:
            self.finish(it, *self.write_one(it, result))
        else:
            self.inflight.append((it, self.writer.submit(self.write_one, it, result)))

    def write_one(self, it: Item, result) -> tuple[dict | None, Exception | None]:
        """Write one item's files (in a writer thread when there are some); a failed write leaves none."""
        outs = Outputs(self.batch.out_dir, self.batch.forbidden)
        t0 = time.perf_counter()
        try:
            self.write(it, result, outs)
        except Exception as e:  # noqa: BLE001
            outs.discard()
            return None, e
        it.timings["write"] = time.perf_counter() - t0
        return dict(outs.written), None

    def drain(self) -> None:
        """Report the writes in flight, in order, once each has finished."""
        while self.inflight:
            it, future = self.inflight.pop(0)
            self.finish(it, *future.result())

    def finish(self, it: Item, written: dict | None, error: Exception | None) -> None:
        if error is not None:
            self.fail(it, error, "write")
        else:
            self.report(it, written, None)

    def fail(self, it: Item, e: BaseException, stage: str) -> None:
        if debug_enabled() or is_disk_full(e):
            raise e  # a full disk stops the batch (Batch.run): every further item would fail the same way
        it.info["stage"] = stage
        self.report(it, None, error_line(e))

    def report(self, it: Item, outputs: dict | None, error: str | None) -> None:
        """The item's manifest line, its count in the summary and its console line."""
        entry = self.batch.entry(it, outputs, error)
        self.batch.manifest.write(entry)
        self.summary.entries.append(entry)
        if error:
            self.summary.failed += 1
        else:
            self.summary.ok += 1
        it.data = None
        if self.progress is not None:
            self.progress.advance(self._line(it, outputs, error))

    def _line(self, it: Item, outputs: dict | None, error: str | None) -> str:
        if error:
            return f"[red]failed[/]: {it.label}: {error.removeprefix(it.label + ': ')}"
        main = next(iter(outputs.values()), "") if outputs else ""
        more = f" (+{len(outputs) - 1} more)" if outputs and len(outputs) > 1 else ""
        return f"{it.label} -> {self.batch.out_dir / main}{more}" if main else it.label

    def _begin(self, label: str) -> None:
        if self.progress is not None:
            self.progress.begin(label)

    def _listening(self):
        """Progress inside the item(s) (steps, iterations) goes to the progress display."""
        return _progress.listen(self.progress.step if self.progress is not None else None)


def _unreadable(path: Path) -> Exception | None:
    """Why an input cannot be read as a file (missing, a FIFO, a device, a socket, a folder), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if any(c in str(path) for c in "*?["):
            return InputError(f"{path}: no such file, and the pattern matches no file")
        return FileNotFoundError(2, "no such file", str(path))
    except OSError as e:
        return e
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return IsADirectoryError(21, "is a folder", str(path))
    return InputError(f"{path}: {kind_of(mode)}, not a regular file; only regular files are inputs")


def _flat(outputs) -> list[str]:
    if isinstance(outputs, dict):
        return [p for v in outputs.values() for p in _flat(v)]
    if isinstance(outputs, (list, tuple)):
        return [p for v in outputs for p in _flat(v)]
    return [str(outputs)]


def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(p), os.path.abspath(base))
    except ValueError:  # another drive (Windows)
        return str(Path(p).absolute())
