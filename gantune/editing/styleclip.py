"""StyleCLIP global directions (Patashnik et al. 2021, §6) in the style space S of any gantune generator.

A text pair (neutral, target) becomes a direction in CLIP's joint space, Δt: the normalised difference of the two
prompt-ensembled text embeddings. The generator's **channel relevance** matrix R (one row per style channel of the
conv layers, in layer order; StyleCLIP's ``fs3.npy``) says how the CLIP *image* embedding moves when that channel is
perturbed. The edit is

    r = R · Δt;  r_c = 0 where |r_c| < β;  r /= max |r|;  Δs = r ⊙ σ_S;  s' = s + α · Δs

with σ_S the per-channel standard deviation of the styles (StyleCLIP's ``S_mean_std``); toRGB styles and channels
the relevance matrix does not cover are left alone.

:class:`StyleStats` holds R, the style means and standard deviations per layer name, and where they came from. It is
either imported from the published FFHQ files (:func:`import_styleclip_stats`) or computed for any generator
(:func:`compute_style_stats`): every channel of every covered conv layer is set to its mean ± 5 σ on the same base
images, both renders are embedded with CLIP, and R's row is the normalised mean of the normalised embedding
differences (StyleCLIP's ``SingleChannel.py``). The computation is batched, runs on any device and writes its
progress to a partial file after each chunk, from which a later run continues.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import InputError, WeightsError
from ..sampling import random_c
from ..weights import resolve, safe_torch_load
from ..io.atomic import atomic_write
from ..weights.safe_pickle import AllowListUnpickler, _numpy_globals

STATS_FORMAT = "gantune-styleclip-stats"
STATS_VERSION = 1
PERTURB_SIGMAS = 5.0  # StyleCLIP perturbs each channel to mean ± 5 σ
CLIP_MODEL = "ViT-B-32"  # the OpenAI CLIP the published statistics were made with
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --- statistics ---------------------------------------------------------------------------------------------------
@dataclass
class StyleStats:
    """Channel relevance and style statistics of one generator."""

    layers: list[str]  # conv layers covered by ``relevance``, in generator order
    relevance: torch.Tensor  # (Σ in_ch of ``layers``, clip_dim): unit rows
    s_mean: dict[str, torch.Tensor]  # layer name -> (in,) mean style, every modulated layer
    s_std: dict[str, torch.Tensor]  # layer name -> (in,) style standard deviation
    meta: dict = field(default_factory=dict)

    def check(self, G) -> None:
        """One-line errors when these statistics do not fit generator ``G``."""
        specs = {s.name: s for s in G.specs}
        for name in self.layers:
            if name not in specs:
                raise InputError(f"the StyleCLIP statistics cover layer {name}, which this generator does not have",
                                 "compute them for this generator: gantune directions styleclip-stats --weights G")
        need = sum(specs[n].in_ch for n in self.layers)
        if self.relevance.shape[0] != need:
            raise InputError(f"the StyleCLIP relevance matrix has {self.relevance.shape[0]} rows; the generator's "
                             f"layers {self.layers[0]}…{self.layers[-1]} have {need} channels",
                             "compute the statistics for this generator: gantune directions styleclip-stats")
        for name in self.layers:
            std = self.s_std.get(name)
            if std is None or std.shape != (specs[name].in_ch,):
                raise InputError(f"the StyleCLIP statistics have no style std of {specs[name].in_ch} channels for "
                                 f"{name}", "compute them for this generator: gantune directions styleclip-stats")

    def to_state(self) -> dict:
        state = {"relevance": self.relevance.float().contiguous()}
        for n, t in self.s_mean.items():
            state[f"s_mean.{n}"] = t.float().contiguous()
        for n, t in self.s_std.items():
            state[f"s_std.{n}"] = t.float().contiguous()
        head = {"format": STATS_FORMAT, "version": STATS_VERSION, "layers": self.layers, "meta": self.meta}
        return {"header": json.dumps(head), "tensors": state}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_write(path) as f:
            torch.save(self.to_state(), f)


def _stats_from_state(obj, source: str) -> StyleStats:
    if not isinstance(obj, dict) or "header" not in obj or "tensors" not in obj:
        raise InputError(f"{source}: not a gantune StyleCLIP statistics file",
                         "make one with gantune directions styleclip-stats, or give fs3.npy with S_mean_std")
    try:
        head = json.loads(obj["header"])
    except (TypeError, ValueError):
        raise InputError(f"{source}: the statistics header is not valid JSON") from None
    if head.get("format") != STATS_FORMAT:
        raise InputError(f"{source}: not a gantune StyleCLIP statistics file (format {head.get('format')!r})")
    t = obj["tensors"]
    rel = t.get("relevance")
    if not isinstance(rel, torch.Tensor) or rel.ndim != 2:
        raise InputError(f"{source}: the statistics have no 2-D relevance matrix")
    s_mean = {k[len("s_mean."):]: v.float() for k, v in t.items() if k.startswith("s_mean.")}
    s_std = {k[len("s_std."):]: v.float() for k, v in t.items() if k.startswith("s_std.")}
    for name, v in [("relevance", rel), *s_std.items()]:
        if not torch.isfinite(v).all():
            raise InputError(f"{source}: {name} contains NaN or infinite values", "compute the statistics again")
    return StyleStats(list(head.get("layers") or []), rel.float(), s_mean, s_std, dict(head.get("meta") or {}))


def load_style_stats(path: str | os.PathLike) -> StyleStats:
    """A statistics file written by :meth:`StyleStats.save` (read with ``torch.load(weights_only=True)``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such StyleCLIP statistics file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file that is not a checkpoint
        raise InputError(f"{p}: not a readable statistics file ({type(e).__name__})",
                         "make one with gantune directions styleclip-stats") from None
    return _stats_from_state(obj, str(p))


# --- the published StyleCLIP files ----------------------------------------------------------------------------------
def _numpy_unpickler_globals() -> dict:
    allowed = {}
    for g in _numpy_globals():
        obj, name = g if isinstance(g, tuple) else (g, f"{g.__module__}.{g.__name__}")
        mod, _, attr = name.rpartition(".")
        allowed[(mod, attr)] = obj
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    try:  # protocol 5 pickles of arrays (numpy >= 1.16): an array from bytes, dtype, shape and order
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    allowed[("numpy._core.numeric", "_frombuffer")] = allowed[("numpy.core.numeric", "_frombuffer")] = _frombuffer
    return allowed


def read_s_mean_std(path: str | os.PathLike) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """StyleCLIP's ``S_mean_std``: a pickle of ``(means, stds)``, lists with one array per style layer in generator
    order (conv and toRGB); a ``(_, means, stds)`` triple is read as well. Only numpy data is resolved."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            obj = AllowListUnpickler(f, _numpy_unpickler_globals(), source=p.name).load()
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or foreign pickle raises many types
        raise InputError(f"{p}: not a StyleCLIP S_mean_std pickle ({type(e).__name__})",
                         "download it again (gantune weights fetch styleclip-ffhq-s-mean-std)") from None
    if not isinstance(obj, (list, tuple)) or len(obj) not in (2, 3):
        raise InputError(f"{p}: expected a pickled (means, stds) pair, got {type(obj).__name__}")
    means, stds = obj[-2], obj[-1]
    if not (isinstance(means, (list, tuple)) and isinstance(stds, (list, tuple)) and len(means) == len(stds)):
        raise InputError(f"{p}: means and stds must be two lists of the same length")
    means = [np.asarray(m, dtype=np.float32).reshape(-1) for m in means]
    stds = [np.asarray(s, dtype=np.float32).reshape(-1) for s in stds]
    return means, stds


def read_fs3(path: str | os.PathLike) -> np.ndarray:
    """StyleCLIP's ``fs3.npy``: (channels, clip_dim) relevance of the conv-layer style channels, in layer order."""
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{p}: not a plain numeric .npy array ({e})") from None
    if arr.ndim != 2:
        raise InputError(f"{p}: fs3 must be 2-D (channels, clip_dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{p}: fs3 contains NaN or infinite values")
    return arr.astype(np.float32)


def import_styleclip_stats(G, fs3: str | os.PathLike, s_mean_std: str | os.PathLike, *,
                           meta: dict | None = None) -> StyleStats:
    """The published statistics (``fs3.npy`` and ``S_mean_std``) mapped onto generator ``G``'s layer names.

    ``S_mean_std`` has one array per modulated layer in generator order (26 at 1024 px: conv1, toRGB, then conv0,
    conv1, toRGB per block); ``fs3`` has the conv channels of the first K conv layers, concatenated (6048 rows at
    1024 px cover all 17; StyleCLIP's PyTorch port stops at 128 px)."""
    means, stds = read_s_mean_std(s_mean_std)
    rel = read_fs3(fs3)
    specs = G.specs
    if len(means) != len(specs):
        raise InputError(f"{Path(s_mean_std).name} has {len(means)} style layers; this generator has {len(specs)}",
                         "the published FFHQ statistics are for the 1024 px FFHQ generator (ffhq-1024)")
    for s, m, sd in zip(specs, means, stds):
        if m.shape != (s.in_ch,) or sd.shape != (s.in_ch,):
            raise InputError(f"{Path(s_mean_std).name}: layer {s.name} has {m.shape[0]} channels in the file, "
                             f"{s.in_ch} in the generator", "use statistics made for this generator")
    layers, total = [], 0
    for s in specs:
        if s.kind != "conv" or total >= rel.shape[0]:
            continue
        layers.append(s.name)
        total += s.in_ch
    if total != rel.shape[0]:
        raise InputError(f"{Path(fs3).name} has {rel.shape[0]} rows, which do not end at a conv layer of this "
                         "generator",
                         "use statistics made for this generator")
    return StyleStats(layers, torch.from_numpy(rel), {s.name: torch.from_numpy(m) for s, m in zip(specs, means)},
                      {s.name: torch.from_numpy(sd) for s, sd in zip(specs, stds)},
                      dict(meta or {}, source="styleclip", fs3=str(fs3), s_mean_std=str(s_mean_std)))


# --- CLIP -----------------------------------------------------------------------------------------------------------
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


class _JitArchiveUnpickler(pickle.Unpickler):
    """Reads the tensors of a TorchScript archive's ``data.pkl`` without loading or running any of its code:
    TorchScript classes become attribute dicts, tensors are rebuilt from the archive's storage records."""

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self.zf, self.prefix, self.source = zf, prefix, source

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _ScriptObject
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise WeightsError(f"{self.source} refers to {module}.{name}, which gantune does not read from CLIP files",
                           "give the OpenAI ViT-B/32 file (registry clip-vit-b-32) or a plain state-dict file")

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


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any(n.endswith("/data.pkl") for n in names)


def clip_from_state_dict(state: dict[str, torch.Tensor]):
    """An open_clip CLIP model built from an OpenAI-layout state dict (the architecture is read from the keys)."""
    from open_clip.model import build_model_from_openai_state_dict

    keep = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
    try:
        model = build_model_from_openai_state_dict(keep)
        model.float().load_state_dict(keep)  # the builder rounds to float16 on the way; keep the file's values
    except (KeyError, RuntimeError, IndexError) as e:
        raise WeightsError(f"the CLIP weights do not have the OpenAI CLIP layout ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120]})", "give the OpenAI ViT-B/32 file (clip-vit-b-32)") from None
    return model.float().eval()


def load_clip(spec: str | os.PathLike = "clip-vit-b-32", device="cpu"):
    """(CLIP model, tokenizer) from a registry name or a file: the OpenAI TorchScript archive or a plain state dict
    (``.pt`` / ``.safetensors``) with OpenAI's key names."""
    try:
        import open_clip
    except ImportError:
        raise InputError("text editing needs the open_clip package", "pip install open-clip-torch") from None
    given = Path(spec).is_file()  # the user's own file, not one gantune downloaded into its cache
    p = Path(resolve(spec))
    try:
        model = clip_from_state_dict(_clip_state(p)).to(device)
    except WeightsError as e:
        if not given:
            raise
        # the cache's hint (delete the file to download it again) is wrong for a file of the user's
        raise WeightsError(str(e), f"--clip {spec}: give the OpenAI CLIP ViT-B/32 .pt file, or a state dict (.pt, "
                           ".safetensors) with OpenAI's key names") from None
    return model, open_clip.get_tokenizer(CLIP_MODEL)


def _clip_state(p: Path) -> dict:
    """The state dict of a CLIP file: safetensors, the OpenAI TorchScript archive, or a pickled state dict."""
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{p.name} is not a readable safetensors file ({str(e)[:120]})") from None
    if _is_torchscript(p):
        return read_jit_state_dict(p)
    state = safe_torch_load(p)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{p.name} holds a {type(state).__name__}, not a CLIP state dict")
    return state


def imagenet_templates() -> list[str]:
    """The prompt templates of StyleCLIP's text ensembling: OpenAI's ImageNet templates ("a bad photo of a {}." …),
    without "a photo of many {}.", which StyleCLIP leaves out (79 templates)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    out = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [t for t in out if t != "a photo of many {}."]


@torch.no_grad()
def text_embedding(model, tokenizer, text: str, templates: list[str] | None = None) -> torch.Tensor:
    """The unit CLIP embedding of ``text``: each template filled in, embedded, normalised, averaged, normalised."""
    templates = imagenet_templates() if templates is None else templates
    device = next(model.parameters()).device
    tokens = tokenizer([t.format(text) for t in templates]).to(device)
    e = model.encode_text(tokens).float()
    e = e / e.norm(dim=-1, keepdim=True)
    m = e.mean(0)
    return m / m.norm()


def text_direction(model, tokenizer, target: str, neutral: str, templates: list[str] | None = None) -> torch.Tensor:
    """Δt: the unit difference of the target and neutral text embeddings."""
    d = text_embedding(model, tokenizer, target, templates) - text_embedding(model, tokenizer, neutral, templates)
    n = d.norm()
    if not torch.isfinite(n) or n < 1e-8:
        raise InputError(f"--text {target!r} and --neutral {neutral!r} have the same CLIP embedding",
                         "give a target text that differs from the neutral one")
    return d / n


def clip_image_input(img: torch.Tensor, size: int) -> torch.Tensor:
    """Generator images (B, 3, H, W) in [-1, 1] -> CLIP's input: bicubic resize to ``size`` (antialiased), scaled to
    [0, 1] and normalised with CLIP's mean and std."""
    x = (img.float().clamp(-1, 1) + 1) / 2
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


def clip_image_size(model) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


# --- the edit -------------------------------------------------------------------------------------------------------
@dataclass
class GlobalDirection:
    """Δs per layer (only the covered conv layers) and how many channels it moves."""

    offsets: dict[str, torch.Tensor]  # layer name -> (in,) Δs (to be scaled by α)
    channels: int  # channels with |r| ≥ β
    top: list[tuple[str, int, float]]  # the most relevant channels (layer, channel, r/max|r|)


def global_direction(stats: StyleStats, delta_t: torch.Tensor, beta: float) -> GlobalDirection:
    """StyleCLIP's Δs for text direction Δt and disentanglement threshold β."""
    rel = stats.relevance.to(delta_t.device, torch.float32)
    if rel.shape[1] != delta_t.shape[0]:
        raise InputError(f"the relevance matrix has CLIP size {rel.shape[1]}, the CLIP model gives {delta_t.shape[0]}",
                         "use the CLIP model the statistics were computed with (ViT-B/32)")
    r = rel @ delta_t.float()
    r = torch.where(r.abs() < beta, torch.zeros_like(r), r)
    kept = int((r != 0).sum())
    if kept == 0:
        top = float(rel.matmul(delta_t.float()).abs().max())
        raise InputError(f"no style channel reaches --beta {beta:g} for this text (the largest relevance is {top:.3f})",
                         f"lower --beta below {top:.3f}")
    r = r / r.abs().max()
    offsets, top, start = {}, [], 0
    for name in stats.layers:
        std = stats.s_std[name].to(r.device)
        n = std.shape[0]
        rl = r[start:start + n]
        offsets[name] = (rl * std).cpu()
        top += [(name, int(c), float(rl[c])) for c in torch.nonzero(rl).flatten().tolist()]
        start += n
    top.sort(key=lambda t: -abs(t[2]))
    return GlobalDirection(offsets, kept, top[:10])


# --- computing the statistics -------------------------------------------------------------------------------------
def _latents(G, z: torch.Tensor, truncation: float, cutoff: int | None, c: torch.Tensor | None = None):
    if G.cfg.overparam:
        return {"wmat": G.map(z, truncation=truncation)}
    cut = None if cutoff is None or cutoff >= G.num_ws else cutoff
    c = None if c is None else c.to(z.device)
    return {"ws": G.map(z, c=c, truncation=truncation, truncation_cutoff=cut if truncation != 1.0 else None)}


def _sample_z(G, n: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` latents and, for a class-conditional generator, uniformly drawn class labels (else None)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = G.sample_z(n, generator=g, device="cpu").to(device)
    return z, random_c(G, n, g)


@torch.no_grad()
def style_mean_std(G, *, samples: int, seed: int, truncation: float, cutoff: int | None, batch_size: int,
                   device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-channel mean and std of every layer's styles over ``samples`` mapped random latents (float64 sums); for a
    latent matrix over its rows too."""
    acc = {s.name: [torch.zeros(s.in_ch, dtype=torch.float64), torch.zeros(s.in_ch, dtype=torch.float64), 0]
           for s in G.specs}
    g = torch.Generator(device="cpu").manual_seed(seed)
    done = 0
    while done < samples:
        b = min(batch_size, samples - done)
        z = G.sample_z(b, generator=g, device="cpu").to(device)
        S = G.synthesis.styles(**_latents(G, z, truncation, cutoff, random_c(G, b, g)))
        for name, s in S.items():
            s = s.double().reshape(-1, s.shape[-1]).cpu()
            a = acc[name]
            a[0] += s.sum(0)
            a[1] += s.square().sum(0)
            a[2] += s.shape[0]
        done += b
    mean, std = {}, {}
    for name, (s1, s2, n) in acc.items():
        m = s1 / n
        var = (s2 / n - m.square()).clamp_min(0) * (n / max(n - 1, 1))
        mean[name], std[name] = m.float(), var.sqrt().float()
    return mean, std


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _load_partial(path: Path, key: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable partial file is recomputed
        return None
    if not isinstance(obj, dict) or obj.get("key") != json.dumps(key, sort_keys=True):
        return None
    return obj


def _save_partial(path: Path, state: dict) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


@torch.no_grad()
def compute_style_stats(
    G,
    clip_model,
    *,
    out: str | os.PathLike,  # the final file; progress goes to OUT.partial and is continued from there
    images: int = 100,  # base images each channel is perturbed on (StyleCLIP: 100)
    stat_samples: int = 100_000,  # latents for the style mean / std (StyleCLIP: 100 000)
    seed: int = 5,  # StyleCLIP's seed for its style codes
    truncation: float = 0.7,  # StyleCLIP's Manipulator: ψ 0.7 on the first 8 W+ rows
    truncation_cutoff: int | None = 8,
    max_res: int | None = None,  # cover conv layers up to this resolution (default all; StyleCLIP's port: 128)
    batch_size: int = 32,  # renders per forward pass
    device=None,
    progress: Callable[[int, int, str], None] | None = None,  # (channels done, total channels, layer)
    meta: dict | None = None,
) -> StyleStats:
    """The channel relevance matrix and style statistics of ``G`` (see the module doc)."""
    device = device or G.w_avg.device
    clip_model = clip_model.to(device).eval()
    size = clip_image_size(clip_model)
    layers = [s for s in G.specs if s.kind == "conv" and (max_res is None or s.res <= max_res)]
    if not layers:
        raise InputError(f"no conv layer at or below --max-res {max_res}", "raise --max-res")
    total = sum(s.in_ch for s in layers)
    key = {"images": images, "stat_samples": stat_samples, "seed": seed, "truncation": truncation,
           "cutoff": truncation_cutoff, "layers": [s.name for s in layers],
           "clip_dim": int(clip_model.text_projection.shape[-1]) if hasattr(clip_model, "text_projection") else None}
    out = Path(out)
    part_path = _partial_path(out)
    part = _load_partial(part_path, key)
    if part is None:
        mean, std = style_mean_std(G, samples=stat_samples, seed=seed, truncation=truncation,
                                   cutoff=truncation_cutoff, batch_size=max(batch_size, 256), device=device)
        part = {"key": json.dumps(key, sort_keys=True), "layer": 0, "chunk": 0,
                "rows": torch.zeros(0), "acc": torch.zeros(0),
                **{f"s_mean.{n}": t for n, t in mean.items()}, **{f"s_std.{n}": t for n, t in std.items()}}
        _save_partial(part_path, part)
    mean = {s.name: part[f"s_mean.{s.name}"] for s in G.specs}
    std = {s.name: part[f"s_std.{s.name}"] for s in G.specs}

    z, c = _sample_z(G, images, seed + 1, device)
    lat_all = _latents(G, z, truncation, truncation_cutoff, c)
    lkey = next(iter(lat_all))
    per_chunk = max(1, batch_size // 2)  # base images per pass: each is rendered at -5 σ and +5 σ
    chunks = [(i, min(i + per_chunk, images)) for i in range(0, images, per_chunk)]
    rows = [part["rows"]] if part["rows"].numel() else []
    done = sum(s.in_ch for s in layers[: part["layer"]])
    for li in range(part["layer"], len(layers)):
        spec = layers[li]
        start_chunk = part["chunk"] if li == part["layer"] else 0
        acc = part["acc"] if li == part["layer"] and start_chunk > 0 else None
        for ci in range(start_chunk, len(chunks)):
            a, b = chunks[ci]
            lat = lat_all[lkey][a:b]
            n = b - a
            lat2 = torch.cat([lat, lat])  # first half at mean - 5σ, second half at mean + 5σ
            s_base = G.synthesis.styles(**{lkey: lat2})[spec.name]
            if s_base.ndim == 3:  # latent matrix: one offset for all rows, relative to the row mean
                s_base = s_base.mean(1)
            pre = G.synthesis.prefix(**{lkey: lat2}, until=spec.name) if spec.name != G.specs[0].name else None
            m, sd = mean[spec.name].to(device), std[spec.name].to(device)
            sign = torch.cat([torch.full((n,), -PERTURB_SIGMAS), torch.full((n,), PERTURB_SIGMAS)]).to(device)
            emb_rows = []
            for c in range(spec.in_ch):
                off = torch.zeros(2 * n, spec.in_ch, device=device)
                off[:, c] = m[c] + sign * sd[c] - s_base[:, c]
                img = G.synthesis(**{lkey: lat2}, style_offsets={spec.name: off}, prefix=pre)
                f = clip_model.encode_image(clip_image_input(img, size)).float()
                f = f / f.norm(dim=-1, keepdim=True)
                d = f[n:] - f[:n]
                d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                emb_rows.append(d.sum(0))
                if progress is not None:
                    progress(done + c, total, f"{spec.name} images {a}-{b}")
            chunk_acc = torch.stack(emb_rows).cpu()
            acc = chunk_acc if acc is None else acc + chunk_acc
            if ci + 1 < len(chunks):
                part.update(layer=li, chunk=ci + 1, acc=acc)
                _save_partial(part_path, part)
        layer_rows = acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        rows.append(layer_rows)
        done += spec.in_ch
        part.update(layer=li + 1, chunk=0, acc=torch.zeros(0), rows=torch.cat(rows))
        _save_partial(part_path, part)
        if progress is not None:
            progress(done, total, spec.name)
    info = dict(meta or {}, clip=CLIP_MODEL, **{k: v for k, v in key.items() if k != "layers"}, source="gantune",
                max_res=max_res, perturbation_sigmas=PERTURB_SIGMAS)
    stats = StyleStats([s.name for s in layers], torch.cat(rows), mean, std, info)
    stats.save(out)
    part_path.unlink(missing_ok=True)
    return stats

