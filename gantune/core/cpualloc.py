"""Keep freed memory in the process on Linux/glibc instead of handing it back to the kernel.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each
large activation map (128 MiB for 32 channels at 1024²) is page-faulted and zeroed by the kernel again on every
operation: on CPU that system time was about a third of a 1024 px render. Turning the ``mmap`` path off and raising
the trim threshold lets freed maps be reused as they are. Peak memory is unchanged (what is freed is reused, not
added); memory freed at the top of the heap above the trim threshold still goes back.

:func:`keep_freed_memory` is called by the synthesis network the first time it runs on CPU; set
``GANTUNE_KEEP_FREED_MEMORY=0`` to leave the process's allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes of free memory at the top of the heap kept before it is returned

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Applies the setting once per process; returns whether it is in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("GANTUNE_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        _done = False
    return _done
