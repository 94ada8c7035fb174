"""rosinality/stylegan2-pytorch generators (``.pt``; also the decoders inside HyperStyle and e4e checkpoints).

The architecture is inferred from the ``g_ema`` keys alone: the number of ``to_rgbs.*``
gives the resolution, ``style.N`` the mapping depth, the weight shapes the channels per resolution. One table, built
from the core's layer specs, maps every key:

=====================================  ===============================  ==========================================
rosinality                             gantune                          conversion
=====================================  ===============================  ==========================================
``style.{i}.weight`` / ``.bias``       ``mapping.fcs.{i-1}.*``          same convention (randn / lr_mul)
``input.input`` (1, C, 4, 4)           ``synthesis.const`` (C, 4, 4)    drop the leading 1
``{L}.conv.weight`` (1, o, i, k, k)    ``…{layer}.weight`` (o, i, k, k) drop the leading 1, no flip
``{L}.conv.modulation.*``              ``…{layer}.affine.*``            bias already includes the +1
``{L}.noise.weight`` (1,)              ``…{layer}.noise_strength`` ()
``{L}.activate.bias``                  ``…{layer}.bias``
``to_rgb*.bias`` (1, 3, 1, 1)          ``…torgb.bias`` (3,)
``noises.noise_{j}`` (1, 1, r, r)      ``noise_const`` (r, r) of the conv with noise_index j
``*.blur.kernel``, ``*.upsample.kernel``  —                             checked == outer([1,3,3,1])/64·4, dropped
top-level ``latent_avg``               ``mapping.w_avg``                (512,), (1, 512) or (N, 512) equal rows
=====================================  ===============================  ==========================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..core import GeneratorConfig, layer_specs, make_kernel
from ..errors import WeightsError
from ..io.atomic import atomic_path
from .keymap import KeyRule, export_state, fit_channels, generator_from_state, import_state
from .safe_pickle import safe_torch_load

SOURCE = "rosinality"
DEFAULT_W_AVG_SAMPLES = 100_000  # HyperStyle's coach uses mean_latent(1e5) when the file has no latent_avg
DEFAULT_W_AVG_SEED = 0

_STYLE = re.compile(r"^style\.(\d+)\.weight$")
_TO_RGBS = re.compile(r"^to_rgbs\.(\d+)\.")


def _fir4() -> torch.Tensor:
    """The blur / upsample kernel rosinality stores: outer([1,3,3,1]) / 64 · 4."""
    return make_kernel() * 4


def _unsqueeze0(t: torch.Tensor) -> torch.Tensor:
    return t[None]


def _squeeze0(t: torch.Tensor) -> torch.Tensor:
    return t[0]


def _scalar_to_vec(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1)


def _vec_to_scalar(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(())


def _bias_to_4d(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, 1, 1)


def _bias_from_4d(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _noise_to_4d(t: torch.Tensor) -> torch.Tensor:
    return t[None, None]


def _noise_from_4d(t: torch.Tensor) -> torch.Tensor:
    return t[0, 0]


# --------------------------------------------------------------------------------------------------------------------
# architecture from keys
# --------------------------------------------------------------------------------------------------------------------
def infer_config(sd: Mapping[str, torch.Tensor], *, mapping_lr_mul: float = 0.01, extra: dict | None = None):
    """A :class:`GeneratorConfig` whose layers have exactly the shapes of this ``g_ema`` state dict."""
    styles = sorted(int(m.group(1)) for k in sd if (m := _STYLE.match(k)))
    rgbs = {int(m.group(1)) for k in sd if (m := _TO_RGBS.match(k))}
    if not styles or not rgbs or "style.1.weight" not in sd:
        raise WeightsError(
            "not a rosinality StyleGAN2 generator: no style.N.weight / to_rgbs.N keys "
            f"(first keys: {', '.join(list(sd)[:5])})",
            hint="pass the 'g_ema' dict of a rosinality checkpoint",
        )
    n_mlp = styles[-1]
    resolution = 2 ** (max(rgbs) + 3)
    log2 = max(rgbs) + 3

    def first_shape(cands: list[tuple[str, int]], what: str) -> int:
        for key, dim in cands:
            if key in sd:
                return int(sd[key].shape[dim])
        raise WeightsError(
            f"rosinality state dict lacks every key that gives {what}: missing {', '.join(k for k, _ in cands)}",
            hint="the file is damaged or not a StyleGAN2 generator",
        )

    channels = {4: first_shape([("input.input", 1), ("conv1.conv.weight", 1), ("conv1.activate.bias", 0)], "C(4)")}
    for i in range(log2 - 2):
        res = 2 ** (i + 3)
        channels[res] = first_shape(
            [
                (f"convs.{2 * i}.conv.weight", 1),
                (f"convs.{2 * i + 1}.conv.weight", 1),
                (f"convs.{2 * i}.activate.bias", 0),
                (f"to_rgbs.{i}.conv.weight", 2),
            ],
            f"the channels at {res} px",
        )
    base, cmax = fit_channels(channels, SOURCE)
    w = sd["style.1.weight"]
    return GeneratorConfig(
        resolution=resolution,
        z_dim=int(w.shape[1]),
        w_dim=int(sd[f"style.{n_mlp}.weight"].shape[0]) if f"style.{n_mlp}.weight" in sd else int(w.shape[0]),
        mapping_layers=n_mlp,
        mapping_lr_mul=mapping_lr_mul,
        channel_base=base,
        channel_max=cmax,
        use_noise=True,
        img_channels=first_shape([("to_rgb1.conv.weight", 1), ("to_rgb1.bias", 1)], "the image channels"),
        extra=dict(extra or {}),
    )


# --------------------------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------------------------
def rosinality_rules(cfg) -> list[KeyRule]:
    """Every key of a rosinality ``g_ema`` for this config, in the official state_dict order."""
    specs = layer_specs(cfg)
    fir = _fir4()
    rules: list[KeyRule] = []
    dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
    for i in range(cfg.mapping_layers):
        rules.append(KeyRule(f"style.{i + 1}.weight", f"mapping.fcs.{i}.weight", (dims[i + 1], dims[i])))
        rules.append(KeyRule(f"style.{i + 1}.bias", f"mapping.fcs.{i}.bias", (dims[i + 1],)))
    rules.append(KeyRule("input.input", "synthesis.const", (1, cfg.channels(4), 4, 4), _squeeze0, _unsqueeze0))

    def modulated(s, R: str, n: str) -> list[KeyRule]:
        k = s.kernel
        out = [KeyRule(f"{R}.conv.weight", f"{n}.weight", (1, s.out_ch, s.in_ch, k, k), _squeeze0, _unsqueeze0)]
        if s.up == 2:
            out.append(KeyRule(f"{R}.conv.blur.kernel", None, (4, 4), expect=fir))
        out.append(KeyRule(f"{R}.conv.modulation.weight", f"{n}.affine.weight", (s.in_ch, cfg.w_dim)))
        out.append(KeyRule(f"{R}.conv.modulation.bias", f"{n}.affine.bias", (s.in_ch,)))
        return out

    convs = [s for s in specs if s.kind == "conv"]
    rgbs = [s for s in specs if s.kind == "torgb"]
    for s in convs[:1] + rgbs[:1] + convs[1:] + rgbs[1:]:  # conv1, to_rgb1, convs.*, to_rgbs.*
        R, n = s.rosinality, f"synthesis.layers.{s.name}"
        if s.kind == "conv":
            rules += modulated(s, R, n)
            rules.append(KeyRule(f"{R}.noise.weight", f"{n}.noise_strength", (1,), _vec_to_scalar, _scalar_to_vec))
            rules.append(KeyRule(f"{R}.activate.bias", f"{n}.bias", (s.out_ch,)))
        else:
            rules.append(KeyRule(f"{R}.bias", f"{n}.bias", (1, s.out_ch, 1, 1), _bias_from_4d, _bias_to_4d))
            if R != "to_rgb1":
                rules.append(KeyRule(f"{R}.upsample.kernel", None, (4, 4), expect=fir))
            rules += modulated(s, R, n)
    for s in sorted(convs, key=lambda s: s.noise_index):
        rules.append(
            KeyRule(
                f"noises.noise_{s.noise_index}",
                f"synthesis.layers.{s.name}.noise_const",
                (1, 1, s.res, s.res),
                _noise_from_4d,
                _noise_to_4d,
            )
        )
    return rules


# --------------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------------
def latent_avg_to_w_avg(latent_avg: torch.Tensor, w_dim: int) -> torch.Tensor:
    """(w_dim,), (1, w_dim) or (N, w_dim) with equal rows (HyperStyle repeats it per layer) -> (w_dim,)."""
    if not isinstance(latent_avg, torch.Tensor):
        raise WeightsError(f"latent_avg is a {type(latent_avg).__name__}, expected a tensor")
    t = latent_avg.detach().to("cpu", torch.float32)
    if t.ndim == 1 and t.shape[0] == w_dim:
        return t.clone()
    if t.ndim == 2 and t.shape[1] == w_dim and t.shape[0] >= 1:
        if not torch.allclose(t, t[:1].expand_as(t), atol=1e-6, rtol=0):
            raise WeightsError(
                f"latent_avg has {t.shape[0]} different rows; a generator has one average w",
                hint="this is a W+ average, not the generator's w_avg",
            )
        return t[0].clone()
    raise WeightsError(f"latent_avg has shape {tuple(t.shape)}, expected ({w_dim},), (1, {w_dim}) or (N, {w_dim})")


def from_rosinality_state_dict(
    sd: Mapping[str, torch.Tensor],  # a rosinality g_ema state dict (prefix already stripped)
    *,
    latent_avg: torch.Tensor | None = None,  # the file's latent_avg; None = compute w_avg from the mapping
    w_avg_samples: int = DEFAULT_W_AVG_SAMPLES,  # z samples for the computed w_avg
    w_avg_seed: int = DEFAULT_W_AVG_SEED,  # seed of those samples
    mapping_lr_mul: float = 0.01,  # rosinality lr_mlp (not recorded in the file; 0.01 in every official model)
    source: str = SOURCE,  # format name recorded in cfg.extra
):
    """Build a gantune :class:`Generator` (eval mode, CPU) from a rosinality ``g_ema`` state dict.

    ``G.cfg.extra`` records where ``w_avg`` came from: ``{"w_avg": "file"}`` or
    ``{"w_avg": "computed", "w_avg_samples": n, "w_avg_seed": s}``.
    """
    if latent_avg is None:
        extra = {"source_format": source, "w_avg": "computed", "w_avg_samples": int(w_avg_samples),
                 "w_avg_seed": int(w_avg_seed)}
    else:
        extra = {"source_format": source, "w_avg": "file"}
    cfg = infer_config(sd, mapping_lr_mul=mapping_lr_mul, extra=extra)
    native = import_state(sd, rosinality_rules(cfg), SOURCE)
    native["mapping.w_avg"] = (
        latent_avg_to_w_avg(latent_avg, cfg.w_dim) if latent_avg is not None else torch.zeros(cfg.w_dim)
    )
    G = generator_from_state(cfg, native)
    if latent_avg is None:
        G.mapping.w_avg.copy_(G.compute_w_avg(w_avg_samples, seed=w_avg_seed))
    return G


def to_rosinality_state_dict(G) -> dict[str, torch.Tensor]:
    """The exact inverse of :func:`from_rosinality_state_dict`: a rosinality ``g_ema`` dict in the official order
    (``w_avg`` goes to the checkpoint's top-level ``latent_avg``, see :func:`save_rosinality`). rosinality's layers
    do not clamp: a ``conv_clamp`` is dropped, as in the published ADA-to-rosinality conversions."""
    if not G.cfg.use_noise:
        raise WeightsError("a generator without noise inputs has no rosinality equivalent (rosinality always has noise)")
    if G.cfg.conditional:
        raise WeightsError(f"a class-conditional generator ({G.cfg.c_dim} classes) has no rosinality equivalent",
                           hint="keep it as a gantune .safetensors file or the original .pkl")
    return export_state(G.state_dict(), rosinality_rules(G.cfg))


def save_rosinality(G, path: str | os.PathLike) -> Path:
    """Write ``{"g_ema": ..., "latent_avg": w_avg}`` (the layout of rosinality's convert_weight.py), atomically."""
    ckpt = {"g_ema": to_rosinality_state_dict(G), "latent_avg": G.mapping.w_avg.detach().cpu().clone()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_rosinality_file(path: str | os.PathLike) -> dict:
    """The top-level dict of a rosinality ``.pt`` (``g_ema``, optional ``latent_avg``, ``g``, ``d``, ``args``, …),
    read without executing code. A bare ``g_ema`` state dict is returned as ``{"g_ema": sd}``."""
    path = Path(path)
    obj = safe_torch_load(path)
    if isinstance(obj, Mapping) and "g_ema" in obj:
        if not isinstance(obj["g_ema"], Mapping):
            raise WeightsError(f"{path.name}: 'g_ema' is a {type(obj['g_ema']).__name__}, expected a state dict")
        return dict(obj)
    if isinstance(obj, Mapping) and "style.1.weight" in obj and "input.input" in obj:
        return {"g_ema": obj}
    keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(
        f"{path.name} is not a rosinality generator checkpoint (top level: {keys})",
        hint="use gantune.weights.formats.load_generator_file, which recognises the other formats",
    )


def load_rosinality(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    w_avg_samples: int = DEFAULT_W_AVG_SAMPLES,  # used only when the file has no latent_avg
    w_avg_seed: int = DEFAULT_W_AVG_SEED,
):
    """(Generator on ``device``, info dict) from a rosinality ``.pt`` (converted, training or bare g_ema file)."""
    path = Path(path)
    top = read_rosinality_file(path)
    training = any(k in top for k in ("g", "d", "args"))
    fmt = "rosinality-train" if training else "rosinality"
    G = from_rosinality_state_dict(
        top["g_ema"], latent_avg=top.get("latent_avg"), w_avg_samples=w_avg_samples, w_avg_seed=w_avg_seed, source=fmt
    )
    info = import_info(G, fmt, part="g_ema")
    info["top_level_keys"] = sorted(map(str, top))
    if top.get("args") is not None and hasattr(top["args"], "__dict__"):
        info["training_args"] = {k: _jsonable(v) for k, v in vars(top["args"]).items()}
    return G.to(device), info


def import_info(G, fmt: str, *, part: str) -> dict:
    """The provenance every importer reports (JSON-serialisable; usable as native ``meta``)."""
    extra = dict(G.cfg.extra)
    return {
        "source_format": fmt,
        "part": part,
        "architecture": G.cfg.describe(),
        "config": G.cfg.to_dict(),
        "w_avg_computed": extra.get("w_avg") == "computed",
        "w_avg_source": (
            f"computed: mean of mapping(z) over {extra.get('w_avg_samples')} z, seed {extra.get('w_avg_seed')}"
            if extra.get("w_avg") == "computed"
            else "file"
        ),
    }


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return repr(v)
