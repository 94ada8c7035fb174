"""Process-wide settings for CPU work, made only when the process's owner asks: the ``gantune`` command calls
:func:`configure_process` for its own process, and so does ``make bench``; a Python user who wants the same calls it
once, before importing torch. The library itself never changes its host process.

What it sets, each only where the user has not set it already:

* ``OMP_NUM_THREADS``: the CPUs this process may actually use: its affinity mask (``os.sched_getaffinity``), cut to
  the cgroup CPU quota of a container (``cpu.max`` / ``cpu.cfs_quota_us``), at least 1;
* ``GOMP_SPINCOUNT`` (libgomp, the OpenMP of torch's Linux wheels): how long an OpenMP thread spins at a barrier
  before it sleeps. OpenMP's default spin costs a job that shares the machine with another one a multiple of its
  time, because the spinning threads compete with the other job for the cores; 10,000 spins keep a quiet machine
  as fast and a busy one within 2.1x of its quiet time (measured on a 2-core AMX Xeon: docs/performance.md,
  "Beside other work"). Not set when the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``;
* glibc's allocator keeps freed memory in the process (:func:`keep_freed_memory`), which spares
  the kernel zeroing every large activation map again.

It also reads the one setting over ``gantune.accel``'s measured path choices, ``GANTUNE_CHOICES``
(:func:`choices_setting`): "rule", or a choices file to follow.

OpenMP reads its variables once, when torch loads it: set them before ``import torch``. Afterwards only the thread
count can still change (``torch.set_num_threads``), and this function does that instead.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import sys
from pathlib import Path

from .errors import InputError

# the one setting over gantune.accel's measured choices: "rule" (the built-in rules), or a choices file to follow
# instead of this machine's own (one measured on an identical machine, or edited by hand); unset: the file
# `make bench` wrote for this machine under $GANTUNE_HOME/accel/
CHOICES_ENV = "GANTUNE_CHOICES"

SPIN_COUNT = 10_000  # see docs/performance.md: "Beside other work"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes of free memory at the top of the heap kept before it is returned
_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Keep freed memory in the process (Linux, glibc) instead of handing it back to the kernel; once per process.
    Returns whether it is in effect.

    glibc serves every allocation above 32 MiB with a fresh ``mmap`` and returns it with ``munmap`` when freed, so
    each large activation map (128 MiB for 32 channels at 1024²) is page-faulted and zeroed by the kernel again on
    every operation: on CPU that system time was about a third of a 1024 px render. Turning the ``mmap`` path off and
    raising the trim threshold lets freed maps be reused as they are. Peak memory is unchanged (what is freed is
    reused); memory freed at the top of the heap above the trim threshold still goes back."""
    global _kept
    if _kept is None:
        _kept = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                _kept = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):  # not glibc
                _kept = False
    return _kept


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None without a quota."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process can use: its affinity mask, cut to the cgroup quota (rounded up), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def wait_settings() -> str:
    """OpenMP's waiting as set in this process's environment, in words."""
    got = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ]
    return ", ".join(got) or "OpenMP default"


def configure_process(*, threads: int | None = None, spin_count: int | None = SPIN_COUNT,
                      keep_memory: bool = True) -> dict:
    """Apply the settings above to this process (see the module docstring); returns what is in effect. ``threads``
    overrides the CPU count; ``spin_count=None`` leaves OpenMP's waiting alone; ``keep_memory=False`` leaves the
    allocator alone."""
    applied = {}
    n = threads or available_cpus()
    torch_loaded = "torch" in sys.modules
    if not torch_loaded:
        if "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(n)
        if spin_count is not None and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
            os.environ["GOMP_SPINCOUNT"] = str(spin_count)
        applied.update(omp_num_threads=os.environ["OMP_NUM_THREADS"],
                       waiting=wait_settings())
    elif threads is not None:
        sys.modules["torch"].set_num_threads(threads)
        applied["threads"] = threads
    if keep_memory:
        applied["keep_freed_memory"] = keep_freed_memory()
    return applied


def choices_setting() -> dict | str | None:
    """``GANTUNE_CHOICES``: None (unset), "rule", or the content of the choices file it names. A file that cannot
    be read is an :class:`InputError` that says what to set (the command checks it before any work)."""
    value = os.environ.get(CHOICES_ENV, "").strip()
    if not value:
        return None
    if value.lower() == "rule":
        return "rule"
    hint = f"set {CHOICES_ENV} to 'rule', to a choices file that `make bench` wrote, or unset it"
    try:
        data = json.loads(Path(value).expanduser().read_text())
    except OSError as e:
        raise InputError(f"{CHOICES_ENV}={value}: {e.strerror or e}", hint) from e
    except ValueError as e:
        raise InputError(f"{CHOICES_ENV}={value}: not a JSON choices file", hint) from e
    if not isinstance(data, dict):
        raise InputError(f"{CHOICES_ENV}={value}: not a choices file", hint)
    return data
