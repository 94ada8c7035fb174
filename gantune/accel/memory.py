"""Pages of memory-mapped weights: which tensors are backed by a file mapping, and releasing their pages after use.

(The allocator setting that keeps freed memory in the process is :func:`gantune.process.keep_freed_memory`.)
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import os
import sys

_MADV_DONTNEED = 4
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _file_ranges() -> list[tuple[int, int]]:
    """Sorted (start, end) of every private mapping of a regular file in this process (checkpoints loaded with
    ``mmap=True``, libraries), read once from /proc/self/maps."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/") and parts[1][3] == "p":
                    lo, hi = (int(v, 16) for v in parts[0].split("-"))
                    out.append((lo, hi))
    except (OSError, ValueError, IndexError):
        return []
    return sorted(out)


def _in_file_mapping(ranges: list[tuple[int, int]], addr: int, nbytes: int) -> bool:
    i = bisect.bisect_right([lo for lo, _ in ranges], addr) - 1
    return i >= 0 and addr + nbytes <= ranges[i][1]


@functools.lru_cache(maxsize=None)
def _madvise():
    """libc's madvise, loaded once (None where there is no glibc)."""
    try:
        fn = ctypes.CDLL("libc.so.6", use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return fn


def _dontneed(addr: int, nbytes: int) -> int:
    """madvise(DONTNEED) on the whole pages inside ``[addr, addr + nbytes)``; the bytes dropped (0 on failure)."""
    start, end = -(-addr // _PAGE) * _PAGE, (addr + nbytes) // _PAGE * _PAGE
    madvise = _madvise()
    if end <= start or madvise is None:
        return 0
    return end - start if madvise(start, end - start, _MADV_DONTNEED) == 0 else 0


def release_file_pages(addr: int, nbytes: int) -> int:
    """Drops the resident pages wholly inside ``[addr, addr + nbytes)`` of a private file mapping that is no longer
    read (e.g. a memory-mapped weight that was copied into another layout); the kernel reads them from the file again
    if they are ever touched. Does nothing elsewhere (anonymous memory would be zeroed, so it is never touched).
    Returns the bytes released."""
    if not sys.platform.startswith("linux") or nbytes <= 0 or not _in_file_mapping(_file_ranges(), addr, nbytes):
        return 0
    return _dontneed(addr, nbytes)


def _pages_unmodified(addr: int, nbytes: int) -> bool:
    """True when no resident whole page of ``[addr, addr + nbytes)`` is a private copy (a page of a private file mapping
    that was written to becomes anonymous; dropping it would lose the write). Read from /proc/self/pagemap: bit 63
    present, bit 61 file-backed page."""
    first, last = -(-addr // _PAGE), (addr + nbytes) // _PAGE - 1  # the whole pages inside: the ones ever dropped
    if last < first:
        return True
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(first * 8)
            raw = f.read((last - first + 1) * 8)
    except OSError:
        return False
    import numpy as np

    entries = np.frombuffer(raw, dtype=np.uint64)
    present = (entries >> np.uint64(63)) & np.uint64(1)
    file_page = (entries >> np.uint64(61)) & np.uint64(1)
    return len(entries) == last - first + 1 and not bool(np.any(present & (file_page ^ np.uint64(1))))


def file_mapped_tensors(module) -> list:
    """The parameters and buffers of ``module`` whose storage lies in a private file mapping (weights loaded from a
    checkpoint with ``mmap=True`` and never copied or written to): their pages can be dropped after use and are read
    again from the file (in practice from the page cache) when next used. Tensors with a written page are left out."""
    return file_mapped([*module.parameters(), *module.buffers()])


def file_mapped(tensors) -> list:
    """Those of ``tensors`` that :func:`file_mapped_tensors` would return."""
    if not sys.platform.startswith("linux"):
        return []
    ranges = _file_ranges()
    found = []
    for t in tensors:
        n = t.numel() * t.element_size()
        if t.device.type != "cpu" or not t.is_contiguous() or n < _PAGE:
            continue
        if _in_file_mapping(ranges, t.data_ptr(), n) and _pages_unmodified(t.data_ptr(), n):
            found.append(t)
    return found


def release_tensor_pages(tensors) -> int:
    """Drops the resident pages of tensors that :func:`file_mapped_tensors` returned (values are unchanged: the kernel
    reads them from the file, usually from its page cache, when they are used again). Returns the bytes released."""
    return sum(_dontneed(t.data_ptr(), t.numel() * t.element_size()) for t in tensors)


def replace_data(param, new) -> None:
    """Puts ``new`` (the same values in another layout) into ``param`` in place of its tensor, and releases the pages
    of the old one where it was memory-mapped from a checkpoint, so memory does not hold both."""
    import torch

    old = param.detach()
    with torch.no_grad():
        param.data = new
    if old.is_contiguous():
        release_file_pages(old.data_ptr(), old.numel() * old.element_size())
