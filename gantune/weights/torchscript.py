"""Reading the parameters of a TorchScript archive (the OpenAI CLIP ``.pt`` files) without ``torch.jit.load``.

A TorchScript archive is a zip whose ``<name>/data.pkl`` pickles the module tree: TorchScript classes
(``__torch__.…``) whose state holds the tensors, the tensors rebuilt by ``torch._utils._rebuild_tensor_v2`` over
storages kept as raw files ``<name>/data/<key>``. :func:`read_jit_state_dict` reads that pickle with an allow-list
(:class:`~gantune.weights.safe_pickle.AllowListUnpickler`): the TorchScript classes become plain attribute holders,
tensors are rebuilt from the archive's storage records, and nothing else is resolved, so no code from the file is
compiled or run.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import WeightsError
from .safe_pickle import AllowListUnpickler


class _ScriptObject:
    """Stand-in for the TorchScript classes a JIT archive's data.pkl names: only their attribute dict is kept."""

    def __setstate__(self, state) -> None:
        self.state = state


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    t = torch.empty(0, dtype=storage.dtype)
    t.set_(storage.untyped(), offset, size, stride)
    return t


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The globals of a JIT archive's data.pkl besides its TorchScript classes: the tensor rebuild, module dicts and
    the storage types."""
    allowed: dict[tuple[str, str], object] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("collections", "OrderedDict"): OrderedDict,
    }
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(dtype)
    return allowed


class _JitArchiveUnpickler(AllowListUnpickler):
    """Reads the tensors of a TorchScript archive's ``data.pkl`` without loading or running any of its code:
    TorchScript classes become attribute dicts, tensors are rebuilt from the archive's storage records."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file, _allowed_globals(), source=source)
        self.zf, self.prefix = zf, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _ScriptObject
        obj = self.allowed.get((module, name))
        if obj is None:
            raise WeightsError(f"{self.source} refers to {module}.{name}, which gantune does not read from CLIP files",
                               "give the OpenAI ViT-B/32 file (registry clip-vit-b-32) or a plain state-dict file")
        return obj

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsError(f"{self.source}: unexpected persistent id {str(pid)[:60]}")
        stype, key, numel = pid[1], pid[2], int(pid[4])
        raw = self.zf.read(f"{self.prefix}/data/{key}")
        dtype = stype.dtype
        storage = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if storage.numel() < numel:
            raise WeightsError(f"{self.source}: storage {key} is truncated")
        return _TypedView(storage)


class _TypedView:
    """A tensor's storage with its dtype, for :func:`_rebuild_tensor`."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat
        self.dtype = flat.dtype

    def untyped(self):
        return self.flat.untyped_storage()


def _flatten_script_state(obj, prefix: str, out: dict) -> None:
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for k, v in state.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, _ScriptObject):
            _flatten_script_state(v, name + ".", out)


def read_jit_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The parameters of a TorchScript archive (the OpenAI CLIP ``.pt`` files) as a flat state dict, read without
    ``torch.jit.load``: no code from the file is compiled or run."""
    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except zipfile.BadZipFile:
        raise WeightsError(f"{p.name} is not a TorchScript archive (not a zip file)",
                           "give the OpenAI ViT-B/32 .pt file or a plain state-dict file") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise WeightsError(f"{p.name} has no data.pkl; it is not a TorchScript archive")
        prefix = pkl[0].split("/")[0]
        obj = _JitArchiveUnpickler(io.BytesIO(zf.read(pkl[0])), zf, prefix, p.name).load()
    out: dict[str, torch.Tensor] = {}
    _flatten_script_state(obj, "", out)
    if not out:
        raise WeightsError(f"{p.name}: the archive holds no tensors")
    return out


def is_torchscript(path: Path) -> bool:
    """Is ``path`` a TorchScript archive (a zip with ``constants.pkl`` and ``data.pkl``)?"""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any(n.endswith("/data.pkl") for n in names)
