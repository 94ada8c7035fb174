"""Recognise a weights file by its contents and load the generator it holds.

Detection reads as little as it can: the safetensors JSON header, the small ``data.pkl`` of a torch zip archive,
the main pickle of a legacy torch file (its tensor data follows the pickle and is never read), or the first opcodes
of a plain pickle. The pickles are parsed with :class:`_SkeletonUnpickler`, which resolves every global to an inert
placeholder: nothing is imported and nothing from the file runs.

=====================  ===================================================================================
format                 what it is
=====================  ===================================================================================
``native``             gantune safetensors (config in the header)
``rosinality``         rosinality ``.pt``: ``g_ema`` (+ ``latent_avg``), or a bare ``g_ema`` state dict
``rosinality-train``   rosinality training checkpoint: ``g_ema`` with ``g`` / ``d`` / ``args``
``ada-pkl``            NVIDIA stylegan2-ada-pytorch network pickle
``hyperstyle``         HyperStyle checkpoint: ``state_dict`` with ``hypernet.*`` (+ ``decoder.*``)
``w-encoder``          HyperStyle W-encoder (e4e coach save): ``encoder.linear`` + ``encoder.body``, no styles
``e4e``                e4e / pSp encoder: ``encoder.styles.*``
``restyle-e4e``        ReStyle-e4e encoder: 6-channel ``encoder.input_layer.0.weight``
``unknown``            anything else
=====================  ===================================================================================
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import WeightsError
from ..io.hashing import sha256_file

FORMATS = (
    "native", "rosinality", "rosinality-train", "ada-pkl", "hyperstyle", "w-encoder", "e4e", "restyle-e4e", "unknown",
)
ACCEPTED = ("gantune reads gantune .safetensors generators, rosinality StyleGAN2 .pt (g_ema or training "
            "checkpoints), stylegan2-ada-pytorch .pkl, HyperStyle and W-encoder .pt")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a legacy (non-zip) torch.save file
_PEEK_OPCODES = 20_000  # opcodes scanned at the start of a plain pickle


# --------------------------------------------------------------------------------------------------------------------
# inert pickle parsing
# --------------------------------------------------------------------------------------------------------------------
class _Opaque:
    """Placeholder for any global of a pickle: accepts whatever the pickle does to it and runs nothing."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key, value) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value) -> None:
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values) -> None:
        self.__dict__.setdefault("list", []).extend(values)

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


class TensorInfo:
    """What a tensor looks like in a skeleton parse: its shape only."""

    def __init__(self, shape) -> None:
        self.shape = tuple(int(s) for s in shape) if isinstance(shape, (tuple, list)) else ()

    def __repr__(self) -> str:
        return f"TensorInfo{self.shape}"


def _rebuild_tensor(storage, offset, size, *rest):
    return TensorInfo(size)


def _rebuild_parameter(data, *rest):
    return data


class _SkeletonUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name.startswith("_rebuild_parameter"):
            return _rebuild_parameter
        return type(name, (_Opaque,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid):
        return None  # storages are not read


def _skeleton_torch(path: Path):
    """The top-level object of a torch checkpoint with tensors as :class:`TensorInfo` (no tensor data read)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                return None
            return _SkeletonUnpickler(io.BytesIO(z.read(pkl))).load()
    with open(path, "rb") as f:
        magic = _SkeletonUnpickler(f).load()
        if magic != _LEGACY_MAGIC:
            return None
        _SkeletonUnpickler(f).load()  # protocol version
        _SkeletonUnpickler(f).load()  # sys info
        return _SkeletonUnpickler(f).load()


def _peek_plain_pickle(path: Path) -> str:
    """'legacy-torch', 'ada-pkl', 'tf-pkl' or 'unknown' from the first opcodes of a plain pickle."""
    with open(path, "rb") as f:
        try:
            for i, (op, arg, _pos) in enumerate(pickletools.genops(f)):
                if i > _PEEK_OPCODES:
                    break
                if i < 4 and op.name in ("LONG1", "LONG4") and arg == _LEGACY_MAGIC:
                    return "legacy-torch"
                if isinstance(arg, str):
                    if "torch_utils.persistence" in arg or arg == "_reconstruct_persistent_obj":
                        return "ada-pkl"
                    if "dnnlib.tflib" in arg:
                        return "tf-pkl"
                if op.name == "STOP":
                    break
        except Exception:  # noqa: BLE001 - not a pickle (or truncated)
            return "unknown"
    return "unknown"


def _safetensors_header(path: Path) -> dict | None:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > 100_000_000 or n > path.stat().st_size - 8:
            return None
        raw = f.read(n)
    if not raw.startswith(b"{"):
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------------------------
def _classify_state_dict_container(top: Mapping) -> str:
    sd = top.get("state_dict")
    if not isinstance(sd, Mapping):
        return "unknown"
    keys = [str(k) for k in sd]
    if any(k.startswith("hypernet.") for k in keys):
        return "hyperstyle"
    first = sd.get("encoder.input_layer.0.weight")
    in_ch = first.shape[1] if first is not None and len(getattr(first, "shape", ())) == 4 else None
    has_styles = any(k.startswith("encoder.styles.") for k in keys)
    if in_ch == 6 and has_styles:
        return "restyle-e4e"
    if has_styles:
        return "e4e"
    if "encoder.linear.weight" in sd and any(k.startswith("encoder.body.") for k in keys):
        return "w-encoder"
    return "unknown"


def classify(top) -> str:
    """Format name of an already-parsed top-level checkpoint object (real or skeleton)."""
    if not isinstance(top, Mapping):
        return "unknown"
    if "g_ema" in top:
        return "rosinality-train" if any(k in top for k in ("g", "d", "args")) else "rosinality"
    if "style.1.weight" in top and "input.input" in top:
        return "rosinality"  # a bare g_ema state dict
    if "state_dict" in top:
        return _classify_state_dict_container(top)
    return "unknown"


def detect_format(path: str | os.PathLike) -> str:
    """One of :data:`FORMATS`, decided from the file's contents (not its name)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such file: {path}")
    header = _safetensors_header(path)
    if header is not None:
        md = header.get("__metadata__") or {}
        return "native" if "gantune_config" in md else "unknown"
    if zipfile.is_zipfile(path):
        try:
            return classify(_skeleton_torch(path))
        except Exception:  # noqa: BLE001 - a zip that is not a torch checkpoint
            return "unknown"
    kind = _peek_plain_pickle(path)
    if kind == "ada-pkl":
        return "ada-pkl"
    if kind == "legacy-torch":
        try:
            return classify(_skeleton_torch(path))
        except Exception:  # noqa: BLE001
            return "unknown"
    return "unknown"


def describe_unknown(path: Path) -> str:
    """One line saying what an unsupported file seems to be."""
    header = _safetensors_header(path)
    if header is not None:
        return f"{path.name} is a safetensors file without a gantune generator config"
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not is_zip and head == b"PK\x03\x04":
        return f"{path.name} is a damaged or truncated zip file (a PyTorch checkpoint whose end is missing?)"
    kind = _peek_plain_pickle(path) if not is_zip else "zip"
    if kind == "tf-pkl":
        return f"{path.name} is an old TensorFlow StyleGAN2 pickle (dnnlib.tflib), which needs TensorFlow to read"
    if kind in ("zip", "legacy-torch"):
        try:
            top = _skeleton_torch(path)
        except Exception:  # noqa: BLE001
            top = None
        if isinstance(top, Mapping):
            keys = ", ".join(map(str, list(top)[:6]))
            return f"{path.name} is a PyTorch checkpoint whose top level ({keys}) is not a layout gantune recognizes"
        if top is None:
            return f"{path.name} is a damaged or truncated PyTorch checkpoint (it cannot be read to its end)"
        return f"{path.name} is a PyTorch checkpoint holding a {type(top).__name__}, not a layout gantune recognizes"
    return f"{path.name} is not a checkpoint gantune recognizes (not a PyTorch checkpoint, network pickle or gantune file)"


# --------------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------------
def _strip_prefix(sd: Mapping, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}


def load_generator_file(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    w_avg_samples: int | None = None,  # z samples when w_avg must be computed (None = rosinality default, 100k)
    w_avg_seed: int | None = None,  # seed of those samples (None = default 0)
    hash_file: bool = True,  # put the file's sha256 into info (remembered for big files)
):
    """(Generator on ``device``, info) from any supported file. ``info`` holds ``format``, ``part`` (which part of
    the file was taken), ``architecture``, ``config``, ``sha256``, ``w_avg_computed`` and format-specific details."""
    from . import rosinality
    from .ada import load_ada
    from .native import load_native

    path = Path(path)
    fmt = detect_format(path)
    kw = {}
    if w_avg_samples is not None:
        kw["w_avg_samples"] = w_avg_samples
    if w_avg_seed is not None:
        kw["w_avg_seed"] = w_avg_seed
    if fmt == "native":
        G, meta = load_native(path, device=device)
        info = rosinality.import_info(G, "native", part="generator")
        info["w_avg_computed"] = bool(meta.get("w_avg_computed", info["w_avg_computed"]))
        info["w_avg_source"] = meta.get("w_avg_source") or info["w_avg_source"]
        info["meta"] = meta
    elif fmt in ("rosinality", "rosinality-train"):
        G, info = rosinality.load_rosinality(path, device=device, **kw)
    elif fmt == "ada-pkl":
        G, info = load_ada(path, device=device)
    elif fmt in ("hyperstyle", "w-encoder"):
        from .safe_pickle import safe_torch_load

        top = safe_torch_load(path)
        dec = _strip_prefix(top["state_dict"], "decoder.")
        if not dec:
            raise WeightsError(
                f"{path.name} is a {fmt} checkpoint without the decoder.* generator weights",
                hint="load the generator from its own file (e.g. the registry's ffhq generator)",
            )
        latent_avg = top.get("latent_avg")
        G = rosinality.from_rosinality_state_dict(dec, latent_avg=latent_avg, source=fmt, **kw)
        info = rosinality.import_info(G, fmt, part="state_dict['decoder.*'] (rosinality generator)")
        G = G.to(device)
    elif fmt in ("e4e", "restyle-e4e"):
        raise WeightsError(
            f"{path.name} is an {fmt} encoder checkpoint, not a generator",
            hint="use it as an encoder; take the generator from its own file (the registry's generator entries)",
        )
    else:
        raise WeightsError(
            describe_unknown(path),
            hint=ACCEPTED,
        )
    info["format"] = fmt
    info["path"] = str(path)
    if hash_file:
        info["sha256"] = sha256_file(path)
    return G, info
