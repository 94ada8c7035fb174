"""The shared batch pipeline with a stub method: names, shards, batching, per-image failures, records, alignment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gantune.io import InversionRecord
from gantune.methods.pipeline import MethodRun, output_stems, run_pipeline
from gantune.methods.result import InversionResult, record_deltas


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


def test_output_stems_are_unique_and_stable():
    assert output_stems(["a/x.png", "b/x.jpg", "x_2.png", "c/x.png"]) == ["x", "x_2", "x_2_2", "x_3"]


def test_pipeline_batches_isolates_failures_and_writes_records(tmp_path):
    paths = make_images(tmp_path / "in", ["p0.png", "p1.png", "p2.png", "sub/p0.png", "p4.png"])
    (tmp_path / "in" / "bad.png").write_text("nope")
    inputs = paths[:2] + [tmp_path / "in" / "bad.png"] + paths[2:]
    stub = StubMethod(poison="p2")
    run = MethodRun(invert_batch=stub, input_size=16, record_meta={"generator": {"spec": "tiny"}})
    lines = []
    s = run_pipeline(inputs, tmp_path / "out", run, batch_size=2, resize=24, save_intermediate=True,
                     progress=lines.append)
    assert (s.ok, s.failed, s.exit_code) == (4, 2, 1)
    assert stub.calls == [["p0", "p1"], ["p2", "p0_2"], ["p2"], ["p0_2"], ["p4"]]  # bad batch retried one by one
    man = [json.loads(ln) for ln in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    status = {e["name"]: (e["status"], e.get("stage")) for e in man}
    assert status == {"p0": ("ok", None), "p1": ("ok", None), "bad": ("failed", "load"), "p2": ("failed", "invert"),
                      "p0_2": ("ok", None), "p4": ("ok", None)}
    assert "cannot invert p2" in next(e["error"] for e in man if e["name"] == "p2")
    assert len(lines) == 6 and any("FAILED" in ln for ln in lines)
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
    assert rec.meta["align"]["kind"] == "ffhq" and s.entries[0]["align"]["size"] == 20


def test_record_deltas_checks_generator(tiny_G):
    from gantune.io.record import RecordError

    res = InversionResult(name="x", image=torch.zeros(3, 32, 32), latent=torch.zeros(tiny_G.num_ws, 32),
                          latent_kind="w+", method="hyperstyle", deltas={"b16.conv0": torch.zeros(5, 5)})
    with pytest.raises(RecordError, match="does not fit layer b16.conv0"):
        record_deltas(res.to_record(), tiny_G.specs)
    res.deltas = {"b999.conv0": torch.zeros(2, 2)}
    with pytest.raises(RecordError, match="no layer of that name"):
        record_deltas(res.to_record(), tiny_G.specs)
