"""Loading torch checkpoints without executing code from them.

``safe_torch_load`` first tries ``torch.load(weights_only=True)``, which accepts tensors, containers and primitives
in both the zip and the legacy (torch < 1.6) serialization. rosinality *training* checkpoints also hold
``args`` (an ``argparse.Namespace``) and sometimes numpy scalars, which that refuses; for those it retries with
torch's same restricted unpickler and a short extra allow-list (``argparse.Namespace``, numpy scalars, dtypes and
arrays). Nothing else is ever resolved, so no code from a file runs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsError


def _numpy_globals() -> list:
    """numpy globals that plain data (scalars, dtypes, arrays) pickles through, under both module names:
    ``numpy._core`` (numpy 2) and ``numpy.core`` (files written with numpy 1)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    out: list = [np.dtype, np.ndarray]
    for fn in (multiarray.scalar, multiarray._reconstruct):
        out += [(fn, f"numpy.core.multiarray.{fn.__name__}"), (fn, f"numpy._core.multiarray.{fn.__name__}")]
    dtypes = getattr(np, "dtypes", None)  # the per-dtype classes numpy >= 1.25 pickles dtypes with
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    return out


def extra_safe_globals() -> list:
    """The globals allowed on top of torch's weights_only set: argparse.Namespace and numpy plain data."""
    return [argparse.Namespace, *_numpy_globals()]


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)


def safe_torch_load(path: str | os.PathLike):
    """Load a torch checkpoint (zip or legacy) onto the CPU without running code from it.

    Raises :class:`WeightsError` when the file is not a torch checkpoint, or when it refers to a global outside the
    allow-list (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such file: {path}")
    mmap = _is_zip(path)  # zip checkpoints are memory-mapped: tensors are read when used, never copied
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as first:
        first_msg = str(first)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/EOFError/ValueError for non-checkpoints
        raise _unreadable(path, e) from None
    if _unsafe_global_from_message(first_msg) is None:  # malformed, not merely a global outside the allow-list
        raise _unreadable(path, pickle.UnpicklingError(_last_line(first_msg)))
    try:
        with torch.serialization.safe_globals(extra_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        name = _unsafe_global_from_message(str(e))
        if name is None:
            raise _unreadable(path, e) from None
        raise WeightsError(
            f"{path.name} refers to {name}, which gantune does not load from checkpoints "
            "(only tensors, containers, argparse.Namespace and numpy scalars are allowed; nothing was run)",
            hint="if this is an NVIDIA stylegan2-ada .pkl use the ada-pkl format; otherwise convert it with its own code",
        ) from None
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e) from None


def _last_line(msg: str) -> str:
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Unsupported", "WeightsUnpickler error")) and ln != "WeightsUnpickler error:":
            return ln
    return lines[-1] if lines else ""


def _unreadable(path: Path, e: BaseException) -> WeightsError:
    detail = _last_line(str(e))
    return WeightsError(
        f"{path.name} is not a readable PyTorch checkpoint ({type(e).__name__}{': ' + detail[:160] if detail else ''})",
        hint="check that the download completed; delete the file to fetch it again",
    )


def _unsafe_global_from_message(msg: str) -> str | None:
    """The global named in torch's weights_only refusal message, e.g. 'GLOBAL os.system'."""
    for line in msg.splitlines():
        i = line.find("GLOBAL ")
        if i >= 0:
            rest = line[i + len("GLOBAL ") :].split()
            if rest:
                return rest[0].rstrip(".,")
    return None


class AllowListUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the globals in ``allowed`` ({(module, name): object}); anything else is a
    :class:`WeightsError` naming the global. Nothing is imported by name, so no module code runs."""

    def __init__(self, file, allowed: dict[tuple[str, str], object], *, source: str = "pickle") -> None:
        super().__init__(file)
        self.allowed = allowed
        self.source = source

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        obj = self.allowed.get((module, name))
        if obj is None:
            raise WeightsError(
                f"{self.source} refers to {module}.{name}, which gantune does not allow in a weights file",
                hint="the file is not a network pickle gantune understands, or it was tampered with; it was not run",
            )
        return obj

    def persistent_load(self, pid):
        raise WeightsError(f"{self.source} uses persistent ids ({str(pid)[:60]}); it is not a plain network pickle")
