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


_MADV_DONTNEED = 4
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _file_mapping_of(addr: int) -> tuple[int, int] | None:
    """The address range of the private mapping of a regular file (a checkpoint loaded with ``mmap=True``) that
    holds ``addr``, or None where ``addr`` is in any other kind of memory."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                if lo <= addr < hi:
                    is_file = len(parts) == 6 and parts[5].startswith("/") and parts[1][3] == "p"
                    return (lo, hi) if is_file else None
    except (OSError, ValueError, IndexError):
        pass
    return None


def release_file_pages(addr: int, nbytes: int) -> int:
    """Drops the resident pages wholly inside ``[addr, addr + nbytes)`` of a private file mapping that is no longer
    read (e.g. a memory-mapped weight that was copied into another layout); the kernel reads them from the file again
    if they are ever touched. Does nothing elsewhere (anonymous memory would be zeroed, so it is never touched).
    Returns the bytes released."""
    span = _file_mapping_of(addr) if sys.platform.startswith("linux") and nbytes > 0 else None
    start = -(-addr // _PAGE) * _PAGE
    end = (addr + nbytes) // _PAGE * _PAGE
    if span is None or end <= start or end > span[1]:
        return 0
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        return end - start if libc.madvise(start, end - start, _MADV_DONTNEED) == 0 else 0
    except (OSError, AttributeError):
        return 0


def replace_data(param, new) -> None:
    """Puts ``new`` (the same values in another layout) into ``param`` in place of its tensor, and releases the pages
    of the old one where it was memory-mapped from a checkpoint, so memory does not hold both."""
    import torch

    old = param.detach()
    with torch.no_grad():
        param.data = new
    if old.is_contiguous():
        release_file_pages(old.data_ptr(), old.numel() * old.element_size())
