"""Inversion through the item runner with a stub method: names, shards, batching, per-image failures, records,
alignment, non-square inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gantune.io import InversionRecord
from gantune.io.runner import Batch, Item, output_stems
from gantune.methods.pipeline import InvertJob, MethodRun
from gantune.io.render import record_deltas
from gantune.methods.result import InversionResult


def make_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


class StubMethod:
    """Returns the input (resized) as the 'reconstruction'; fails whole batches containing ``poison``."""

    def __init__(self, poison=None):
        self.calls, self.poison = [], poison

    def __call__(self, x, names):
        self.calls.append(list(names))
        if self.poison in names:
            raise RuntimeError(f"cannot invert {self.poison}")
        return [InversionResult(name=n, image=x[i], latent=torch.full((4, 8), float(i)), latent_kind="w+", method="stub",
                                deltas={"b8.conv0": torch.full((2, 3, 3, 3), 0.5), "b8.conv1": torch.ones(2, 2)},
                                intermediates=[x[i], x[i]], meta={"params": {"k": 1}}, timings={"invert": 0.1})
                for i, n in enumerate(names)]


def run_pipeline(paths, out, run, *, batch_size=1, shard=(0, 1), progress=None, **job_kw):
    """What ``gantune invert`` does, with a given method."""
    job = InvertJob(**job_kw)
    job.method = run
    items = [Item(name=s, input=p) for p, s in zip(paths, output_stems(paths))]
    batch = Batch("invert", items, out, params={"m": 1}, planned=job.planned, shard=shard)
    batch.prepare()
    return batch.run(load=job.load, process=job.process, write=job.write, batch_size=batch_size, progress=progress)


class Lines:
    def __init__(self):
        self.lines = []

    def begin(self, label):
        pass

    def step(self, done, total, what):
        pass

    def advance(self, message=""):
        self.lines.append(message)


def test_output_stems_are_unique_and_stable():
    # an input keeps its own stem; a repeated stem gets the first _N no input has
    assert output_stems(["a/x.png", "b/x.jpg", "x_2.png", "c/x.png"]) == ["x", "x_3", "x_2", "x_4"]
    assert output_stems(["x.jpg", "x.png", "x_2.jpg"]) == ["x", "x_3", "x_2"]


def test_pipeline_batches_isolates_failures_and_writes_records(tmp_path):
    paths = make_images(tmp_path / "in", ["p0.png", "p1.png", "p2.png", "sub/p0.png", "p4.png"])
    (tmp_path / "in" / "bad.png").write_text("nope")
    inputs = paths[:2] + [tmp_path / "in" / "bad.png"] + paths[2:]
    stub = StubMethod(poison="p2")
    run = MethodRun(invert_batch=stub, input_size=16, record_meta={"generator": {"spec": "tiny"}})
    lines = Lines()
    s = run_pipeline(inputs, tmp_path / "out", run, batch_size=2, resize=24, save_intermediate=True, progress=lines)
    assert (s.ok, s.failed, s.exit_code) == (4, 2, 1)
    assert stub.calls == [["p0", "p1"], ["p2", "p0_2"], ["p2"], ["p0_2"], ["p4"]]  # bad batch retried one by one
    man = [json.loads(ln) for ln in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [e["name"] for e in man] == ["p0", "p1", "bad", "p2", "p0_2", "p4"]  # input order, one line each
    status = {e["name"]: (e["status"], (e["info"] or {}).get("stage")) for e in man}
    assert status == {"p0": ("ok", None), "p1": ("ok", None), "bad": ("failed", "load"), "p2": ("failed", "process"),
                      "p0_2": ("ok", None), "p4": ("ok", None)}
    assert "cannot invert p2" in next(e["error"] for e in man if e["name"] == "p2")
    p0 = next(e for e in man if e["name"] == "p0_2")
    assert p0["input"]["path"] == "../in/sub/p0.png" and p0["outputs"]["record"] == "p0_2.safetensors"
    assert not any((tmp_path / "out" / f).exists() for f in ("p2.png", "bad.png", "p2.safetensors"))
    assert len(lines.lines) == 6 and sum("failed" in ln for ln in lines.lines) == 2
    assert Image.open(tmp_path / "out" / "p0.png").size == (24, 24)
    assert (tmp_path / "out" / "intermediate" / "1" / "p4.png").is_file()
    rec = InversionRecord.load(tmp_path / "out" / "p0_2.safetensors")
    assert rec.meta["generator"] == {"spec": "tiny"} and rec.meta["params"] == {"k": 1}
    assert rec.meta["source"]["path"].endswith("sub/p0.png") and len(rec.meta["source"]["sha256"]) == 64
    assert rec.meta["timings"]["invert"] == 0.1 and rec.deltas["b8.conv0"].shape == (2, 3, 3, 3)
    d = record_deltas(rec)
    assert d["b8.conv0"].shape == (2, 3, 3, 3) and torch.all(d["b8.conv0"] == 0.5) and d["b8.conv1"].shape == (2, 2)


def test_pipeline_shards_keep_names_and_align_goes_into_record(tmp_path):
    paths = make_images(tmp_path / "in", ["a.png", "b/a.png", "c.png"])

    class Face:
        def __init__(self, img):
            self.image = img.resize((20, 20))

        def transform_dict(self):
            return {"kind": "ffhq", "quad": [[0, 0], [0, 1], [1, 1], [1, 0]], "size": 20}

    class FakeAligner:
        def align(self, img):
            return [Face(img)]

    run = MethodRun(invert_batch=StubMethod(), input_size=16)
    s = run_pipeline(paths, tmp_path / "out", run, shard=(1, 2), aligner=FakeAligner())
    assert [e["name"] for e in s.entries] == ["a_2"]  # the second input keeps its name in shard 1/2
    rec = InversionRecord.load(tmp_path / "out" / "a_2.safetensors")
    assert rec.meta["align"]["kind"] == "ffhq" and s.entries[0]["info"]["align"]["size"] == 20
    assert (tmp_path / "out" / "manifest.shard1of2.jsonl").is_file()


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_non_square_inputs_are_cropped_or_padded_and_the_manifest_says_which(tmp_path, fit):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white left quarter: cropped away by crop, kept (and extended) by pad
    Image.fromarray(arr).save(tmp_path / "wide.png")
    seen = []

    class Keep(StubMethod):
        def __call__(self, x, names):
            seen.append(x.clone())
            return super().__call__(x, names)

    s = run_pipeline([tmp_path / "wide.png"], tmp_path / "out", MethodRun(invert_batch=Keep(), input_size=16), fit=fit)
    info = s.entries[0]["info"]["fit"]
    assert info["mode"] == fit and info["from"] == [40, 20]
    x = seen[0][0]
    if fit == "crop":
        assert info["box"] == [10, 0, 30, 20] and x.max() < -0.9  # only the black middle is left
    else:
        assert info["offset"] == [0, 10] and x[:, :, 0].min() > 0.9 and x[:, :, -1].max() < -0.9
    assert InversionRecord.load(tmp_path / "out" / "wide.safetensors").meta["fit"]["mode"] == fit


def test_record_deltas_checks_generator(tiny_G):
    from gantune.io.record import RecordError

    res = InversionResult(name="x", image=torch.zeros(3, 32, 32), latent=torch.zeros(tiny_G.num_ws, 32),
                          latent_kind="w+", method="hyperstyle", deltas={"b16.conv0": torch.zeros(5, 5)})
    with pytest.raises(RecordError, match="does not fit layer b16.conv0"):
        record_deltas(res.to_record(), tiny_G.specs)
    res.deltas = {"b999.conv0": torch.zeros(2, 2)}
    with pytest.raises(RecordError, match="no layer of that name"):
        record_deltas(res.to_record(), tiny_G.specs)


def test_tf32_for_the_shared_offset_gemm_only_in_half_precision_cuda_runs():
    """The shared heads' offset expansion runs with TF32 GEMMs in bf16/fp16 CUDA inversions (a float32 SIMT GEMM, 7 %
    of an H200 batch-32 inversion, before), never in float32 or on CPU, and the global flag comes back as it was."""
    from gantune.methods.hyper.inference import _tf32_matmul

    flags = torch.backends.cuda.matmul
    before = flags.allow_tf32
    try:
        flags.allow_tf32 = False
        for dev, dtype, on in (("cuda", torch.bfloat16, True), ("cuda", torch.float16, True),
                               ("cuda", torch.float32, False), ("cpu", torch.bfloat16, False)):
            with _tf32_matmul(torch.device(dev), dtype):
                assert flags.allow_tf32 is on, (dev, dtype)
            assert flags.allow_tf32 is False
    finally:
        flags.allow_tf32 = before
