"""Shared test fixtures: tiny generator configs, the tiny generator, thread limits, an isolated GANTUNE_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = FIXTURES / "keys"


def read_keys(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """Rows of an official key listing: (key, shape, dtype). dtype is float32 where the listing omits it."""
    rows = []
    for line in (KEYS / name).read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        shape = tuple(int(v) for v in parts[1].strip("()").replace(" ", "").split(",") if v)
        rows.append((parts[0], shape, parts[2] if len(parts) > 2 else "float32"))
    return rows


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty weights cache; nothing touches the user's."""
    home = tmp_path_factory.mktemp("gantune_home")
    monkeypatch.setenv("GANTUNE_HOME", str(home))
    monkeypatch.setenv("GANTUNE_OFFLINE", "0")
    yield home


def tiny_config(**kw):
    from gantune.core import GeneratorConfig

    base = dict(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32)
    base.update(kw)
    return GeneratorConfig(**base)


@pytest.fixture
def tiny_G():
    """The tiny 32 px generator, with non-trivial values everywhere (w_avg too), so a wrong mapping shows up, computing
    with this machine's measured paths as every loaded generator does (``gantune.accel.accelerate``); other
    configurations and seeds: ``support.tiny_generator``."""
    from gantune.accel import accelerate
    from support import tiny_generator  # support imports this module

    G = tiny_generator(0, perturb=True)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return accelerate(G)
