"""Writes that overlap the next batch (``Batch.run(write_workers=…)``, used by invert and generate on CUDA): the
same files and manifest as writing in turn, a failed write fails its item only, and a batch's writes really run
while the next batch is processed."""

from __future__ import annotations

import json
import threading

from gantune.io.atomic import atomic_write
from gantune.io.runner import Batch, Item


def _items(n: int) -> list[Item]:
    return [Item(name=f"s{i}", data=i) for i in range(n)]


def _run(out, workers: int, *, process=None, write=None, n: int = 7, batch_size: int = 3):
    def _write(it, result, outs):
        if result == "boom":
            with atomic_write(outs.path("a", f"{it.name}.txt")) as f:
                f.write(b"half")
            raise ValueError("disk full")
        with atomic_write(outs.path("a", f"{it.name}.txt")) as f:
            f.write(f"{result}".encode())
        it.metrics["value"] = result

    batch = Batch("t", _items(n), out, params={"k": 1}, planned=lambda it: [f"{it.name}.txt"])
    batch.prepare()
    summary = batch.run(load=lambda it: it.data, process=process or (lambda b: [it.data * 10 for it in b]),
                        write=write or _write, batch_size=batch_size, write_workers=workers)
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    return summary, lines


def test_overlapped_writes_give_the_same_files_and_manifest(tmp_path):
    s0, m0 = _run(tmp_path / "a", 0)
    s2, m2 = _run(tmp_path / "b", 2)
    assert (s0.ok, s0.failed) == (s2.ok, s2.failed) == (7, 0)
    strip = lambda m: [{k: v for k, v in e.items() if k != "timings"} for e in m]  # noqa: E731
    assert strip(m0) == strip(m2) and [e["name"] for e in m2] == [f"s{i}" for i in range(7)]
    for i in range(7):
        assert (tmp_path / "b" / f"s{i}.txt").read_text() == str(10 * i)
    assert all("write" in e["timings"] and "process" in e["timings"] for e in m2)


def test_a_failed_overlapped_write_fails_its_item_only(tmp_path):
    summary, lines = _run(tmp_path, 2, process=lambda b: ["boom" if it.data == 4 else it.data for it in b])
    assert (summary.ok, summary.failed) == (6, 1)
    [bad] = [e for e in lines if e["status"] == "failed"]
    assert bad["name"] == "s4" and "disk full" in bad["error"]
    assert not (tmp_path / "s4.txt").exists() and not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "s5.txt").read_text() == "5"


def test_writes_run_while_the_next_batch_is_processed(tmp_path):
    """Batch 1's writes wait for batch 2's processing to start: in turn they would time out (and fail)."""
    started = {}
    processing = threading.Event()

    def process(b):
        if b[0].data == 3:
            processing.set()
        return [it.data for it in b]

    def write(it, result, outs):
        if result < 3 and not processing.wait(timeout=5):
            raise TimeoutError("the next batch did not start while this one was written")
        started[it.name] = threading.current_thread().name
        with atomic_write(outs.path("a", f"{it.name}.txt")) as f:
            f.write(b"x")

    summary, _ = _run(tmp_path, 1, process=process, write=write, n=6)
    assert (summary.ok, summary.failed) == (6, 0)
    assert all(name.startswith("gantune-write") for name in started.values())


def test_pngs_are_written_lossless_at_a_middle_zlib_level(tmp_path):
    """save_image writes PNGs at PNG_COMPRESS_LEVEL (faster than Pillow's default): the pixels round-trip exactly,
    the file is compressed (smaller than level 0) and an explicit level still wins."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from gantune.io.images import PNG_COMPRESS_LEVEL, save_image

    assert 1 <= PNG_COMPRESS_LEVEL < 6
    img = Image.fromarray(data.astronaut())
    save_image(img, tmp_path / "d.png")
    save_image(img, tmp_path / "z0.png", compress_level=0)
    save_image(img, tmp_path / "z9.png", compress_level=9)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "d.png")), data.astronaut())
    sizes = {n: (tmp_path / f"{n}.png").stat().st_size for n in ("d", "z0", "z9")}
    assert sizes["z9"] <= sizes["d"] < 0.8 * sizes["z0"]


def test_cpu_invert_runs_write_in_turn(tmp_path, monkeypatch, capsys):
    """The invert commands overlap writing only on CUDA: a CPU run asks the runner for no writer threads (they cost
    memory there and measured no faster)."""
    import numpy as np
    import pytest
    from PIL import Image

    from gantune.cli.app import main
    from gantune.io import runner

    seen = []
    real = runner.Batch.run
    monkeypatch.setattr(runner.Batch, "run", lambda self, **kw: seen.append(kw["write_workers"]) or real(self, **kw))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as e:
        main(["invert", str(tmp_path / "a.png"), "--method", "hyperstyle", "--weights", "demo-faces-hypernet",
              "--encoder", "demo-faces-w-encoder", "--device", "cpu", "-o", str(tmp_path / "out")])
    assert (e.value.code or 0) == 0, capsys.readouterr().err
    assert seen == [0] and (tmp_path / "out" / "a.png").exists()


def _cli(args, capsys) -> None:
    """Run the gantune CLI in this process; it must exit 0."""
    import pytest

    from gantune.cli.app import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert (e.value.code or 0) == 0, capsys.readouterr().err


def _same_files(a, b) -> list[str]:
    """The output files of two runs (manifest aside) are the same names with the same bytes; returns the names."""
    names = sorted(p.name for p in a.iterdir() if p.name != "manifest.jsonl")
    assert names == sorted(p.name for p in b.iterdir() if p.name != "manifest.jsonl")
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    return names


def _saver_threads(monkeypatch) -> list[int]:
    """The thread counts of the ImageSavers the commands make, in order."""
    from gantune.io import runner

    made = []
    real_init = runner.ImageSaver.__init__
    monkeypatch.setattr(runner.ImageSaver, "__init__", lambda self, w: made.append(w) or real_init(self, w))
    return made


def _records(tmp_path, capsys):
    gen = tmp_path / "gen"
    _cli(["generate", "--weights", "demo-faces", "--seeds", "1-2", "-o", gen, "--no-grid", "--device", "cpu"], capsys)
    return [gen / "seed0001.safetensors", gen / "seed0002.safetensors"]


def test_generate_with_writer_threads_writes_the_same_files_and_grid(tmp_path, monkeypatch, capsys):
    """generate overlaps its writes on CUDA (forced here on CPU): every file, record and the grid (in seed order,
    though the threads finish in any order) are those of a run that writes in turn; on CPU it asks for none."""
    import time

    from gantune import io as gio  # the command imports tensor_to_pil from here when it runs
    from gantune.cli import generate_cmd
    from gantune.io import runner

    seen = []
    real = runner.Batch.run
    monkeypatch.setattr(runner.Batch, "run", lambda self, **kw: seen.append(kw["write_workers"]) or real(self, **kw))
    args = ["generate", "--weights", "demo-faces", "--seeds", "0-6", "--batch-size", "3", "--device", "cpu", "-o"]
    _cli(args + [tmp_path / "turn"], capsys)
    to_pil = gio.tensor_to_pil

    def slow_first(t):  # the first image of each batch finishes last
        img = to_pil(t)
        if threading.current_thread() is not threading.main_thread() and slow_first.calls % 3 == 0:
            time.sleep(0.2)
        slow_first.calls += 1
        return img

    slow_first.calls = 0
    monkeypatch.setattr(gio, "tensor_to_pil", slow_first)
    monkeypatch.setattr(generate_cmd, "writers_for", lambda dev: 3)
    _cli(args + [tmp_path / "threads"], capsys)
    assert seen == [0, 3]
    names = _same_files(tmp_path / "turn", tmp_path / "threads")
    assert "grid.png" in names and len(names) == 15


def test_image_saver_keeps_the_order_of_outputs_and_reports_a_failed_save(tmp_path, monkeypatch):
    """ImageSaver (edit's PNGs on CUDA): paths are claimed in call order, every save is joined by wait(), and a
    failed save raises there (or not, when the item already failed), after the other saves have finished."""
    import time

    import numpy as np
    import pytest
    from PIL import Image

    from gantune.io import images
    from gantune.io.runner import ImageSaver, Outputs

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    real = images.save_image

    def save(im, path, **kw):
        if path.name == "a.png":
            time.sleep(0.2)  # the first save finishes last
        if path.name == "bad.png":
            raise OSError("disk full")
        return real(im, path, **kw)

    monkeypatch.setattr(images, "save_image", save)
    saver = ImageSaver(3)
    outs = Outputs(tmp_path, set())
    for role in ("a", "b", "c"):
        saver.image(outs, role, f"{role}.png", img)
    saver.wait()
    assert list(outs.written) == ["a", "b", "c"]
    assert all((tmp_path / f"{r}.png").is_file() for r in "abc")  # wait() returned after the slow one too
    saver.image(outs, "bad", "bad.png", img)
    saver.image(outs, "d", "d.png", img)
    with pytest.raises(OSError, match="disk full"):
        saver.wait()
    assert (tmp_path / "d.png").is_file()
    saver.image(outs, "bad2", "bad.png", img)
    saver.wait(raise_errors=False)
    saver.close()


def test_edit_with_saver_threads_writes_the_same_files(tmp_path, monkeypatch, capsys):
    """edit saves its PNGs in threads on CUDA (forced here on CPU): the same files, bit for bit, and the same
    manifest outputs as saving in turn; on CPU it asks for no threads."""
    import numpy as np

    from gantune.cli import edit_cmd

    made = _saver_threads(monkeypatch)
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(128).astype(np.float32))
    args = ["edit", *_records(tmp_path, capsys), "-d", tmp_path / "d.npy", "-s", "-2:2:5", "--no-identity",
            "--device", "cpu", "-o"]
    _cli(args + [tmp_path / "turn"], capsys)
    monkeypatch.setattr(edit_cmd, "writers_for", lambda dev: 3)
    _cli(args + [tmp_path / "threads"], capsys)
    assert made == [0, 3]
    assert len(_same_files(tmp_path / "turn", tmp_path / "threads")) == 12
    outs = [[json.loads(ln)["outputs"] for ln in (tmp_path / d / "manifest.jsonl").read_text().splitlines()]
            for d in ("turn", "threads")]
    assert outs[0] == outs[1]


def test_adapt_with_saver_threads_writes_the_same_files(tmp_path, monkeypatch, capsys):
    """adapt saves its image and comparison in threads on CUDA (forced here on CPU): the same files as in turn; on
    CPU it asks for no threads."""
    from gantune.cli import adapt_cmd

    made = _saver_threads(monkeypatch)
    args = ["adapt", *_records(tmp_path, capsys), "--target", "demo-faces", "--compare", "--no-identity",
            "--device", "cpu", "-o"]
    _cli(args + [tmp_path / "turn"], capsys)
    monkeypatch.setattr(adapt_cmd, "writers_for", lambda dev: 3)
    _cli(args + [tmp_path / "threads"], capsys)
    assert made == [0, 3]
    assert _same_files(tmp_path / "turn", tmp_path / "threads") == [
        "seed0001.png", "seed0001_compare.png", "seed0002.png", "seed0002_compare.png"]
