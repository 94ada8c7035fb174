"""gantune.process: the settings the command makes for its own process (threads from the CPUs actually free, OpenMP
waiting, allocator), never over what the user set, and only when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gantune import process

CHILD = """
import os, sys
os.sched_setaffinity(0, {0})
from gantune.process import configure_process
applied = configure_process()
import torch
print(torch.get_num_threads(), os.environ.get("GOMP_SPINCOUNT", "-"), os.environ.get("OMP_WAIT_POLICY", "-"),
      applied["keep_freed_memory"])
"""


def _child(env_extra: dict) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_threads_follow_the_cpus_the_process_may_use_and_spinning_is_short():
    assert _child({}) == ["1", "10000", "-", "True"]  # affinity cut to one CPU: one thread


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_the_users_own_settings_are_kept():
    assert _child({"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "active"})[:3] == ["2", "-", "active"]
    assert _child({"GOMP_SPINCOUNT": "5"})[:3] == ["1", "5", "-"]


def test_a_cgroup_quota_cuts_the_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(process, "_cgroup_quota", lambda: 1.5)
    assert process.available_cpus() == 2
    monkeypatch.setattr(process, "_cgroup_quota", lambda: 0.2)
    assert process.available_cpus() == 1
    monkeypatch.setattr(process, "_cgroup_quota", lambda: None)
    assert process.available_cpus() == 4


def test_importing_gantune_changes_nothing_in_the_process():
    code = ("import os, gantune, gantune.api, gantune.core; from gantune.core import Generator, GeneratorConfig; "
            "import torch; Generator(GeneratorConfig(resolution=8, z_dim=8, w_dim=8, channel_base=64, channel_max=8))"
            "(torch.randn(1, 8)); from gantune import process; "
            "print(os.environ.get('GOMP_SPINCOUNT'), process._kept)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None"]  # no OpenMP setting, allocator untouched
