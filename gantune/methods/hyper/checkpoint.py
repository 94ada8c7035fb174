"""Import of the official HyperStyle files: ``hyperstyle_*.pt`` (hypernetwork + generator + latent_avg) and
``faces_w_encoder.pt`` (W-encoder + a generator that is ignored), and recognition of the files users download by
mistake (e4e / pSp / ReStyle encoders, rosinality training checkpoints and generators).

Everything is read with ``torch.load(weights_only=True)`` (through :func:`gantune.weights.safe_torch_load`), the architecture is inferred from the keys (never from the stored ``opts``), and every key is mapped by
a table that must account for all of them: unknown or missing keys are an error that names them.

Official hypernetwork keys (prefix ``hypernet.`` in the file) -> gantune :class:`HyperNetwork`:

====================================================  =================================================
``conv1.* bn1.* relu.weight body.{0..15}.*``           ``backbone.*`` (same names below)
``shared_weight_hypernet.{w1,b1,w2,b2}``               ``shared_fc.*``
``refinement_blocks.{j}.hypernet.{w1,b1,w2,b2}``       aliases of the shared FCs (checked identical, dropped)
``refinement_blocks.{j}.{convs.*,linear.*}``           ``heads.<layer>.*`` (shared head)
``refinement_blocks.{j}.{convs.*,output.1.*}``         ``heads.<layer>.*`` (per-channel head)
``refinement_blocks.{j}.{convs.*,output.0.*}``         ``heads.<layer>.*`` (toRGB head)
====================================================  =================================================

``j`` is the official delta-list index; ``<layer>`` is the gantune layer whose spec has ``hyperstyle_index == j``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...core import Generator
from ...core.specs import LayerSpec
from ...errors import WeightsError
from ...weights.download import file_sha256, resolve
from ...weights.rosinality import from_rosinality_state_dict
from ...weights.safe_pickle import safe_torch_load
from .hypernet import INPUT_SIZE, HyperNetwork, TunedLayer, head_key
from .wencoder import WEncoder, stage_depths

DEFAULT_HYPERSTYLE = "hyperstyle-ffhq"  # registry names (weights.toml)
DEFAULT_W_ENCODER = "w-encoder-ffhq"

_BACKBONE = re.compile(r"^(conv1\.|bn1\.|relu\.|body\.)")
_BLOCK = re.compile(r"^refinement_blocks\.(\d+)\.(.+)$")


# --- reading files -----------------------------------------------------------------------------------------------------
def resolve_path(spec: str | os.PathLike) -> Path:
    """A registry name, URL or path -> local file."""
    p = Path(spec)
    return p if p.is_file() else Path(resolve(str(spec)))


def read_checkpoint(path: str | os.PathLike) -> object:
    """Load a ``.pt`` file without executing code from it."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such file")
    try:
        return safe_torch_load(p)
    except WeightsError:
        raise
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, … for foreign or broken files
        raise WeightsError(
            f"{p}: cannot be read as a PyTorch checkpoint without running code from it ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]})",
            "is it a complete download of a .pt file?",
        ) from None


def _state(obj) -> dict:
    return obj.get("state_dict", {}) if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else {}


def identify_checkpoint(obj) -> tuple[str, str]:
    """(kind, description) of a loaded checkpoint. Kinds: hyperstyle, w-encoder, e4e (e4e or pSp), restyle,
    rosinality-training, rosinality-generator, unknown."""
    if not isinstance(obj, dict):
        return "unknown", f"a {type(obj).__name__}, not a checkpoint dict"
    sd = _state(obj)
    opts = obj.get("opts") if isinstance(obj.get("opts"), dict) else {}
    if any(k.startswith("hypernet.") for k in sd):
        return "hyperstyle", "a HyperStyle checkpoint (hypernetwork + generator)"
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if enc:
        in_ch = enc["input_layer.0.weight"].shape[1] if "input_layer.0.weight" in enc else None
        has_styles = any(k.startswith("styles.") for k in enc)
        etype = str(opts.get("encoder_type", ""))
        if not has_styles and "linear.weight" in enc and in_ch == 3:
            return "w-encoder", "a W-encoder checkpoint (IR-SE-50 into W)"
        if in_ch == 6 or "restyle" in etype.lower() or "Progressive" in etype:
            return "restyle", (f"a ReStyle encoder checkpoint ({etype or 'ProgressiveBackboneEncoder'}, 6-channel input, "
                               "18 style heads), used by HyperStyle only for domain adaptation")
        if has_styles:
            name = etype or "Encoder4Editing / GradualStyleEncoder"
            return "e4e", f"an e4e/pSp feature-pyramid encoder checkpoint ({name}: 18 style heads into W+)"
        return "unknown", "an encoder checkpoint of an unknown architecture"
    if "g_ema" in obj and ("g" in obj or "d" in obj or "g_optim" in obj):
        return "rosinality-training", "a rosinality StyleGAN2 training checkpoint (g, g_ema, d, …): a generator"
    if "g_ema" in obj:
        return "rosinality-generator", "a rosinality StyleGAN2 generator file (g_ema)"
    if any(k.startswith("style.1.") for k in obj):
        return "rosinality-generator", "a bare rosinality StyleGAN2 generator state dict"
    keys = ", ".join(list(obj)[:6])
    return "unknown", f"a checkpoint with top-level keys {keys}"


def _wrong_kind(path, kind: str, desc: str, wanted: str, hint: str) -> WeightsError:
    return WeightsError(f"{path}: this is {desc}, not {wanted}", hint)


# --- hypernetwork ----------------------------------------------------------------------------------------------------
def _split_prefix(sd: dict, prefix: str) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix + ".")}


def hypernet_layout(sd: dict, specs: list[LayerSpec]) -> tuple[list[TunedLayer], int]:
    """Tuned layers and head kinds from the official keys (``hypernet.`` prefix stripped), and the shared size."""
    by_index = {s.hyperstyle_index: s for s in specs}
    blocks: dict[int, set[str]] = {}
    for k in sd:
        m = _BLOCK.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
    layers = []
    for j in sorted(blocks):
        keys = blocks[j]
        if j not in by_index:
            raise WeightsError(f"hypernetwork refinement block {j} has no layer in a {specs[-1].res}px generator",
                               "the hypernetwork was trained for a generator of another resolution")
        s = by_index[j]
        if "output.0.make_kernel_in.weight" in keys:
            raise WeightsError(f"refinement block {j} ({s.name}) is a separable block (SharedWeightsHyperNetResNetSeparable, "
                               "the paper's ablation)", "only the published SharedWeightsHyperNetResNet layout is supported")
        if "linear.weight" in keys or "hypernet.w1" in keys:
            head = "shared"
        elif "output.1.weight" in keys:
            head = "channel"
        elif "output.0.weight" in keys:
            head = "torgb"
        else:
            raise WeightsError(f"refinement block {j} ({s.name}): unrecognised keys {sorted(keys)[:4]}")
        want_rgb = s.kind == "torgb"
        if (head == "torgb") != want_rgb:
            raise WeightsError(f"refinement block {j}: a {head} head for layer {s.name} ({s.kind})")
        layers.append(TunedLayer.from_spec(s, head))
    if not layers:
        raise WeightsError("the hypernetwork has no refinement blocks")
    shared_size = 512
    if "shared_weight_hypernet.w2" in sd:
        w2 = sd["shared_weight_hypernet.w2"]
        shared_size = w2.shape[1] // w2.shape[0]
    return layers, shared_size


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b or a.shape != b.shape:
        return a is b
    if a.device.type == "meta" or b.device.type == "meta":
        return True  # layout-only check
    try:
        if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.storage_offset() == b.storage_offset():
            return True
    except (RuntimeError, NotImplementedError):
        pass
    return torch.equal(a, b)


def _opts_input_size(opts: dict | None) -> int:
    """Input side of the encoders: gantune's compact models write ``opts['input_size']``; official files are 256."""
    v = (opts or {}).get("input_size", INPUT_SIZE)
    try:
        v = int(v)
    except (TypeError, ValueError):
        raise WeightsError(f"opts.input_size is {v!r}; expected an integer") from None
    if v < 64 or v % 16:
        raise WeightsError(f"opts.input_size is {v}; expected a multiple of 16, at least 64")
    return v


def hypernet_from_official(sd: dict, specs: list[LayerSpec], *, device="cpu", opts: dict | None = None):
    """Build a :class:`HyperNetwork` from an official hypernetwork state dict (prefix ``hypernet.`` stripped) and load
    it strictly. Returns (hypernet, warnings). Tensors are assigned, not copied (no random init of 330 M numbers)."""
    layers, shared_size = hypernet_layout(sd, specs)
    by_index = {lyr.hyperstyle_index: lyr for lyr in layers}
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in sd.items():
        if _BACKBONE.match(k):
            mapped["backbone." + k] = v
        elif k.startswith("shared_weight_hypernet."):
            mapped["shared_fc." + k[len("shared_weight_hypernet."):]] = v
        elif m := _BLOCK.match(k):
            j, rest = int(m.group(1)), m.group(2)
            if rest.startswith("hypernet."):
                ref = sd.get("shared_weight_hypernet." + rest[len("hypernet."):])
                if ref is None or not _same(v, ref):
                    raise WeightsError(f"hypernet key refinement_blocks.{j}.{rest} differs from shared_weight_hypernet",
                                       "the shared weights must be one tensor (the file is corrupt or not HyperStyle's)")
                continue
            mapped[f"heads.{head_key(by_index[j].name)}.{rest}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise WeightsError(f"unknown hypernetwork key(s): {', '.join(sorted(unknown)[:8])}"
                           + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""))
    input_size = _opts_input_size(opts)
    with torch.device("meta"):
        hn = HyperNetwork(layers, shared_size=shared_size, width=sd["conv1.weight"].shape[0], input_size=input_size)
    _load_strict(hn, mapped, "hypernetwork")
    if device is not None and str(device) != "meta":
        hn = hn.to(device=device, dtype=torch.float32)
    warnings = []
    if opts and opts.get("layers_to_tune") not in (None, ""):
        try:
            claimed = sorted(int(v) for v in str(opts["layers_to_tune"]).split(",") if v.strip())
        except ValueError:
            claimed = None
        have = sorted(by_index)
        if claimed is not None and claimed != have:
            warnings.append(f"opts.layers_to_tune says {claimed} but the weights tune {have}; using the weights")
    return hn.eval(), warnings


def hypernet_to_official(hn: HyperNetwork) -> dict[str, torch.Tensor]:
    """The official state dict layout (without the ``hypernet.`` prefix), aliases included (same tensors)."""
    sd = hn.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            out[k[len("backbone."):]] = v
        elif k.startswith("shared_fc."):
            out["shared_weight_hypernet." + k[len("shared_fc."):]] = v
    for lyr in hn.layers:
        pre = f"heads.{head_key(lyr.name)}."
        for k, v in sd.items():
            if k.startswith(pre):
                out[f"refinement_blocks.{lyr.hyperstyle_index}.{k[len(pre):]}"] = v
        if lyr.head == "shared":
            for n in ("w1", "b1", "w2", "b2"):
                out[f"refinement_blocks.{lyr.hyperstyle_index}.hypernet.{n}"] = sd["shared_fc." + n]
    return out


def _load_strict(module: torch.nn.Module, sd: dict, what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}" + (f" (+{len(missing) - 6})" if len(missing) > 6 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}" + (f" (+{len(unexpected) - 6})" if len(unexpected) > 6 else ""))
        if bad:
            parts.append(f"wrong shape {', '.join(bad[:4])}")
        raise WeightsError(f"{what} weights do not fit: {'; '.join(parts)}")
    module.load_state_dict(sd, strict=True, assign=True)


# --- W-encoder -------------------------------------------------------------------------------------------------------
def w_encoder_units(sd: dict) -> tuple[int, ...]:
    """Units per stage from the ``body.{i}`` keys: a stage starts where the residual conv width changes."""
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    depths = [sd[f"body.{i}.res_layer.1.weight"].shape[0] for i in range(n)]
    stages = stage_depths(sd["input_layer.0.weight"].shape[0])
    units = []
    for d in stages:
        units.append(depths.count(d))
    if sum(units) != n:
        raise WeightsError(f"W-encoder body widths {sorted(set(depths))} are not IR-SE stages {stages}")
    return tuple(units)


def w_encoder_from_official(sd: dict, *, num_ws: int, device="cpu", input_size: int = INPUT_SIZE) -> WEncoder:
    """A :class:`WEncoder` from the official encoder state dict (prefix ``encoder.`` stripped), loaded strictly.
    The width comes from the weights; the input size (not visible in them) from the file's opts (256 official)."""
    if "linear.weight" not in sd or "input_layer.0.weight" not in sd:
        raise WeightsError("not a W-encoder state dict (no input_layer / linear weights)")
    units = w_encoder_units(sd)
    with torch.device("meta"):
        enc = WEncoder(num_ws=num_ws, w_dim=sd["linear.weight"].shape[0], units=units,
                       in_channels=sd["input_layer.0.weight"].shape[1], width=sd["input_layer.0.weight"].shape[0],
                       input_size=input_size)
    _load_strict(enc, dict(sd), "W-encoder")
    if device is not None and str(device) != "meta":
        enc = enc.to(device=device, dtype=torch.float32)
    return enc.eval()


# --- whole files -----------------------------------------------------------------------------------------------------
@dataclass
class HyperStyleModel:
    """Everything HyperStyle inference needs from ``hyperstyle_*.pt``."""

    G: Generator  # the generator the hypernetwork was trained with (the file's ``decoder``)
    hypernet: HyperNetwork
    latent_avg: torch.Tensor  # (num_ws, w_dim), added to the W-encoder output
    info: dict = field(default_factory=dict)  # path, sha256, tuned layers, opts cross-check warnings, load seconds


def _latent_avg(la, num_ws: int, w_dim: int) -> torch.Tensor:
    if la is None:
        raise WeightsError("the HyperStyle checkpoint has no latent_avg")
    la = la.detach().float().cpu()
    if la.shape == (w_dim,) or la.shape == (1, w_dim):
        return la.reshape(1, w_dim).expand(num_ws, w_dim).clone()
    if la.shape == (num_ws, w_dim):
        return la.clone()
    raise WeightsError(f"latent_avg has shape {tuple(la.shape)}; expected ({w_dim},), (1, {w_dim}) or ({num_ws}, {w_dim})")


def _generator_from_decoder(dec: dict, latent_avg) -> Generator:
    w_avg = None
    if latent_avg is not None:
        w_avg = latent_avg.detach().float().cpu().reshape(-1, latent_avg.shape[-1])[0]
    return from_rosinality_state_dict(dec, latent_avg=w_avg)


def hyperstyle_from_checkpoint(obj: dict, *, device="cpu", source: str = "checkpoint") -> HyperStyleModel:
    """Build the model from an already loaded ``hyperstyle_*.pt`` dict."""
    kind, desc = identify_checkpoint(obj)
    if kind != "hyperstyle":
        raise _wrong_kind(source, kind, desc, "a HyperStyle checkpoint",
                          "--weights takes hyperstyle_ffhq.pt (hypernetwork + generator); the W-encoder goes to --encoder")
    sd = obj["state_dict"]
    opts = obj.get("opts") if isinstance(obj.get("opts"), dict) else {}
    dec = _split_prefix(sd, "decoder")
    hyp = _split_prefix(sd, "hypernet")
    other = sorted(k for k in sd if not k.startswith(("decoder.", "hypernet.")))
    if other:
        raise WeightsError(f"{source}: unexpected key(s) {', '.join(other[:6])}")
    if not dec:
        raise WeightsError(f"{source}: the HyperStyle checkpoint has no decoder.* keys (generator)")
    G = _generator_from_decoder(dec, obj.get("latent_avg"))
    G = G.to(device).eval()
    hn, warnings = hypernet_from_official(hyp, G.specs, device=device, opts=opts)
    la = _latent_avg(obj.get("latent_avg"), G.num_ws, G.cfg.w_dim).to(device)
    et = opts.get("encoder_type")
    if et and et != "SharedWeightsHyperNetResNet":
        warnings.append(f"opts.encoder_type is {et!r}; the keys say SharedWeightsHyperNetResNet")
    info = {"tuned_layers": hn.names, "warnings": warnings,
            "hyperstyle_indices": {lyr.name: lyr.hyperstyle_index for lyr in hn.layers}}
    return HyperStyleModel(G=G, hypernet=hn, latent_avg=la, info=info)


def load_hyperstyle(spec: str | os.PathLike = DEFAULT_HYPERSTYLE, *, device="cpu", hash_file: bool = True) -> HyperStyleModel:
    """``hyperstyle_*.pt`` by registry name, URL or path."""
    import time

    t0 = time.perf_counter()
    path = resolve_path(spec)
    model = hyperstyle_from_checkpoint(read_checkpoint(path), device=device, source=str(path))
    model.info.update(spec=str(spec), path=str(path), load_s=round(time.perf_counter() - t0, 3))
    if hash_file:
        model.info["sha256"] = file_sha256(path)
    return model


def w_encoder_from_checkpoint(obj, *, num_ws: int, device="cpu", source: str = "checkpoint") -> WEncoder:
    kind, desc = identify_checkpoint(obj)
    if kind != "w-encoder":
        hints = {
            "e4e": "HyperStyle needs the W-encoder faces_w_encoder.pt, not an e4e FPN encoder",
            "restyle": "HyperStyle needs the W-encoder faces_w_encoder.pt; ReStyle files are for domain adaptation",
            "rosinality-training": "that file is a StyleGAN2 generator; the W-encoder is faces_w_encoder.pt (w-encoder-ffhq)",
            "rosinality-generator": "that file is a StyleGAN2 generator; the W-encoder is faces_w_encoder.pt (w-encoder-ffhq)",
            "hyperstyle": "that is the hypernetwork: pass it to --weights and the W-encoder to --encoder",
        }
        raise _wrong_kind(source, kind, desc, "a W-encoder", hints.get(kind, "use faces_w_encoder.pt (w-encoder-ffhq)"))
    enc_sd = _split_prefix(obj["state_dict"], "encoder")
    other = sorted(k for k in obj["state_dict"] if not k.startswith(("encoder.", "decoder.")))
    if other:
        raise WeightsError(f"{source}: unexpected key(s) {', '.join(other[:6])}")
    opts = obj.get("opts") if isinstance(obj.get("opts"), dict) else {}
    return w_encoder_from_official(enc_sd, num_ws=num_ws, device=device, input_size=_opts_input_size(opts))


def load_w_encoder(spec: str | os.PathLike = DEFAULT_W_ENCODER, *, num_ws: int, device="cpu",
                   hash_file: bool = True) -> tuple[WEncoder, dict]:
    import time

    t0 = time.perf_counter()
    path = resolve_path(spec)
    enc = w_encoder_from_checkpoint(read_checkpoint(path), num_ws=num_ws, device=device, source=str(path))
    info = {"spec": str(spec), "path": str(path), "load_s": round(time.perf_counter() - t0, 3)}
    if hash_file:
        info["sha256"] = file_sha256(path)
    return enc, info


def describe_file(path: str | os.PathLike) -> str:
    """One line saying what a checkpoint file is (for error messages and ``gantune weights`` tools)."""
    return identify_checkpoint(read_checkpoint(path))[1]
