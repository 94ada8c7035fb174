"""Recognise a weights file by its contents and load the generator it holds.

This module is the one classifier of checkpoint kinds: :func:`identify` (a loaded or skeleton top-level object),
:func:`identify_file` (a file) and :func:`hypernet_heads` (the refinement blocks of a HyperStyle hypernetwork). Their names are the ones used everywhere: the registry's ``format`` field, ``gantune weights
info``, error messages and the importers.

Detection reads as little as it can: the safetensors JSON header, the small ``data.pkl`` of a torch zip archive,
the main pickle of a legacy torch file (its tensor data follows the pickle and is never read), or the first opcodes
of a plain pickle. The pickles are parsed with :class:`_SkeletonUnpickler`, which resolves every global to an inert
placeholder: nothing is imported and nothing from the file runs.

=====================  ===================================================================================
format                 what it is
=====================  ===================================================================================
``native``             gantune safetensors (config in the header)
``rosinality``         rosinality ``.pt``: ``g_ema`` (+ ``latent_avg``), or a bare ``g_ema`` state dict
``rosinality-train``   rosinality training checkpoint: ``g_ema`` with ``g`` / ``d`` / ``args`` / optimizer states
``ada-pkl``            NVIDIA stylegan2-ada-pytorch network pickle
``hyperstyle``         HyperStyle checkpoint: ``state_dict`` with ``hypernet.*`` (+ ``decoder.*``)
``w-encoder``          HyperStyle W-encoder (e4e coach save): ``encoder.linear`` + ``encoder.body``, no styles
``e4e``                e4e / pSp encoder: ``encoder.styles.*``
``restyle-e4e``        ReStyle-e4e encoder: 6-channel ``encoder.input_layer.0.weight``
``unknown``            anything else
=====================  ===================================================================================

Hypernetwork refinement blocks (:data:`HEAD_KINDS`): ``shared`` (HyperRefinementBlock: ``linear`` and the aliased
``hypernet.*`` FCs), ``channel`` (RefinementBlock: ``output.1``), ``torgb`` (RefinementBlock of a toRGB layer:
``output.0``), ``separable`` (the paper's ablation, ``output.0.make_kernel_in``; recognised, not loadable).
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
from . import rosinality
from .ada import load_ada
from .keymap import strip_prefix
from .native import load_native
from .safe_pickle import safe_torch_load

DESCRIPTIONS = {  # format -> what it is, as said to users
    "native": "a gantune generator (safetensors with its architecture config)",
    "rosinality": "a rosinality StyleGAN2 generator file (g_ema)",
    "rosinality-train": "a rosinality StyleGAN2 training checkpoint (g, g_ema, d, …): a generator",
    "ada-pkl": "an NVIDIA stylegan2-ada-pytorch network pickle (a generator)",
    "hyperstyle": "a HyperStyle checkpoint (hypernetwork + generator)",
    "w-encoder": "a HyperStyle W-encoder checkpoint (IR-SE encoder into W)",
    "e4e": "an e4e/pSp feature-pyramid encoder checkpoint (style heads into W+)",
    "restyle-e4e": ("a ReStyle-e4e encoder checkpoint (6-channel input, style heads into W+), used by HyperStyle only "
                    "for domain adaptation"),
    "unknown": "not a checkpoint gantune recognizes",
}
FORMATS = tuple(DESCRIPTIONS)
GENERATOR_FORMATS = ("native", "rosinality", "rosinality-train", "ada-pkl")  # the whole file is one generator
WITH_DECODER = ("hyperstyle", "w-encoder")  # checkpoints that may carry a rosinality generator as decoder.*
HEAD_KINDS = ("shared", "channel", "torgb", "separable")
_TRAINING_KEYS = ("g", "d", "args", "g_optim", "d_optim")
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


def skeleton(path: str | os.PathLike):
    """The top-level object of a torch checkpoint (zip or legacy) with tensors as :class:`TensorInfo`: no tensor data
    is read and nothing from the file runs. None when the file is not a torch checkpoint."""
    path = Path(path)
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
def _shape(t) -> tuple[int, ...]:
    return tuple(getattr(t, "shape", ()) or ())


def _identify_state_dict(top: Mapping) -> tuple[str, str]:
    sd = top.get("state_dict")
    if not isinstance(sd, Mapping):
        return "unknown", f"a checkpoint whose state_dict is a {type(sd).__name__}"
    keys = [str(k) for k in sd]
    if any(k.startswith("hypernet.") for k in keys):
        return "hyperstyle", DESCRIPTIONS["hyperstyle"]
    if not any(k.startswith("encoder.") for k in keys):
        return "unknown", f"a checkpoint whose state_dict has no hypernet.* or encoder.* keys (first: {', '.join(keys[:4])})"
    opts = top.get("opts") if isinstance(top.get("opts"), Mapping) else {}
    etype = str(opts.get("encoder_type", "") or "")
    first = _shape(sd.get("encoder.input_layer.0.weight"))
    in_ch = first[1] if len(first) == 4 else None
    has_styles = any(k.startswith("encoder.styles.") for k in keys)
    if not has_styles and "encoder.linear.weight" in sd and any(k.startswith("encoder.body.") for k in keys):
        return "w-encoder", DESCRIPTIONS["w-encoder"]
    if in_ch == 6 or "restyle" in etype.lower() or "Progressive" in etype:
        return "restyle-e4e", DESCRIPTIONS["restyle-e4e"] + (f" [{etype}]" if etype else "")
    if has_styles:
        return "e4e", DESCRIPTIONS["e4e"] + f" [{etype or 'Encoder4Editing / GradualStyleEncoder'}]"
    return "unknown", "an encoder checkpoint of an unknown architecture"


def identify(top) -> tuple[str, str]:
    """(format, one-line description) of an already-parsed top-level checkpoint object (real or skeleton)."""
    if not isinstance(top, Mapping):
        return "unknown", f"a {type(top).__name__}, not a checkpoint dict"
    if "g_ema" in top:
        return ("rosinality-train", DESCRIPTIONS["rosinality-train"]) if any(k in top for k in _TRAINING_KEYS) \
            else ("rosinality", DESCRIPTIONS["rosinality"])
    if "style.1.weight" in top and "input.input" in top:
        return "rosinality", "a bare rosinality StyleGAN2 generator state dict (g_ema)"
    if "state_dict" in top:
        return _identify_state_dict(top)
    return "unknown", f"a checkpoint with top-level keys {', '.join(map(str, list(top)[:6]))}"


def identify_file(path: str | os.PathLike) -> tuple[str, str]:
    """(format, one-line description) of a file; the format is one of :data:`FORMATS`, decided from the file's
    contents (not its name) without reading tensor data."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such file: {path}")
    header = _safetensors_header(path)
    if header is not None:
        md = header.get("__metadata__") or {}
        return ("native", DESCRIPTIONS["native"]) if "gantune_config" in md else ("unknown", describe_unknown(path))
    container = "zip" if zipfile.is_zipfile(path) else _peek_plain_pickle(path)
    if container == "ada-pkl":
        return "ada-pkl", DESCRIPTIONS["ada-pkl"]
    if container in ("zip", "legacy-torch"):
        try:
            fmt, desc = identify(skeleton(path))
        except Exception:  # noqa: BLE001 - a zip or pickle that is not a readable torch checkpoint
            fmt, desc = "unknown", ""
        if fmt != "unknown":
            return fmt, desc
    return "unknown", describe_unknown(path)


def hypernet_heads(keys, prefix: str = "") -> dict[int, str]:
    """{official refinement-block index: one of :data:`HEAD_KINDS`, or "unknown"} from the keys of a HyperStyle
    hypernetwork (``prefix``: what precedes ``refinement_blocks.`` in them, e.g. ``"hypernet."``)."""
    blocks: dict[int, set[str]] = {}
    lead = prefix + "refinement_blocks."
    for k in keys:
        if not isinstance(k, str) or not k.startswith(lead):
            continue
        index, _, rest = k[len(lead):].partition(".")
        if index.isdigit():
            blocks.setdefault(int(index), set()).add(rest)
    kinds = {}
    for j in sorted(blocks):
        names = blocks[j]
        if any(n.startswith("output.0.make_kernel") for n in names):
            kinds[j] = "separable"
        elif "linear.weight" in names or "hypernet.w1" in names:
            kinds[j] = "shared"
        elif "output.1.weight" in names:
            kinds[j] = "channel"
        elif "output.0.weight" in names:
            kinds[j] = "torgb"
        else:
            kinds[j] = "unknown"
    return kinds


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
        return (f"{path.name} is a TensorFlow StyleGAN2 / StyleGAN2-ADA pickle (dnnlib.tflib), which gantune does not "
                "read; convert it with stylegan2-ada-pytorch's legacy.py (python legacy.py --source=FILE.pkl "
                "--dest=converted.pkl) and give gantune the converted file")
    if kind in ("zip", "legacy-torch"):
        try:
            top = skeleton(path)
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
    path = Path(path)
    fmt = identify_file(path)[0]
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
    elif fmt in WITH_DECODER:
        top = safe_torch_load(path)
        dec = strip_prefix(top["state_dict"], "decoder.")
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
