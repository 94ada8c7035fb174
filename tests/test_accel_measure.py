"""Measured per-machine Winograd choices (gantune.accel.measure): chosen only where clearly faster, written under
GANTUNE_HOME keyed by the machine, read back by settings_for, and followed over the built-in rule."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from gantune.accel import measure, settings_for, winograd
from gantune.accel.machine import choices_path, load_tiles, machine_key

CL = torch.channels_last


def test_winograd_only_where_it_measured_clearly_faster(monkeypatch):
    times = {(512, 32): {0: 1.0, 2: 0.5, 4: 0.6}, (256, 64): {0: 1.0, 2: 0.97, 4: 0.99}, (64, 128): {0: 1.0}}
    monkeypatch.setattr(measure, "time_shape", lambda c, s, reps: times[c, s])
    rows = measure.measure(shapes=tuple(times), reps=1)["winograd"]
    assert [r["tile"] for r in rows] == [2, 0, 0]  # 3 % faster is within the margin: direct


def test_choices_round_trip_through_gantune_home_and_settings_for():
    table = ((256, 32, 0), (64, 64, 2))
    choices = {"machine": machine_key(), "winograd": [{"in_ch": c, "side": s, "tile": m} for c, s, m in table]}
    path = measure.save(choices)
    assert path == choices_path() and path.is_file()
    settings_for.cache_clear()
    try:
        assert settings_for("cpu").winograd_tiles == table
    finally:
        settings_for.cache_clear()
    other = dict(choices, machine="cpu-another")
    path.write_text(json.dumps(other))
    assert load_tiles() == ()  # another machine's table is not followed
    path.write_text("{not json")
    assert load_tiles() == ()


def test_the_measured_table_overrides_the_rule():
    cpu = replace(settings_for("cpu"), winograd_tiles=())
    x32 = torch.zeros(1, 256, 32, 32).contiguous(memory_format=CL)
    x64 = torch.zeros(1, 64, 64, 64).contiguous(memory_format=CL)
    assert winograd.tile_size(x32, 256, 3, cpu) == 4 and winograd.tile_size(x64, 64, 3, cpu) == 0  # the rule
    table = replace(cpu, winograd_tiles=((256, 32, 0), (64, 64, 2)))
    assert winograd.tile_size(x32, 256, 3, table) == 0 and winograd.tile_size(x64, 64, 3, table) == 2
    assert winograd.tile_size(x32, 256, 3, replace(table, winograd=False)) == 0  # off stays off
    assert winograd.tile_size(x32.double(), 256, 3, table) == 0  # float32 CPU only
