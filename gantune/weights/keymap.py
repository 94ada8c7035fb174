"""The one mechanism every importer uses: a table of key rules that must account for every key of a foreign state dict.

A table is a list of :class:`KeyRule`, one per foreign key, in the foreign file's own order. Importing checks that the
foreign keys are exactly the table's keys (missing and unexpected keys are an error that names them), checks each
shape and dtype, and converts each tensor. Constant buffers of the foreign format (FIR kernels) map to no native key:
their value is checked and dropped. A key that the foreign format stores as a second name of another key (HyperStyle's
per-block aliases of the shared hypernetwork) must hold the same tensor, and is dropped. Exporting walks the same
table backwards, so import and export cannot disagree.

Tables of several parts (a HyperStyle file holds a ``hypernet.*`` and a ``decoder.*`` state dict) are joined with
:func:`prefixed`; :func:`strip_prefix` takes one part of a state dict back out.

Also here: fitting ``channel_base`` / ``channel_max`` to the channel counts read from a file's weight shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch

from ..accel import accelerate
from ..core import Generator, make_kernel
from ..errors import WeightsError


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class KeyRule:
    foreign: str  # key in the foreign state dict
    native: str | None  # key in gantune's Generator state dict; None = a constant that is checked, then dropped
    shape: tuple[int, ...]  # shape the foreign tensor must have
    to_native: Callable[[torch.Tensor], torch.Tensor] = _same  # foreign tensor -> native tensor (reshape only)
    to_foreign: Callable[[torch.Tensor], torch.Tensor] = _same  # native tensor -> foreign tensor (exact inverse)
    expect: torch.Tensor | None = None  # the value a dropped constant must have (native is None)
    dtype: torch.dtype = torch.float32  # native dtype; an integer dtype here means the foreign tensor must be integer
    alias_of: str | None = None  # foreign key this one must be the same tensor as (native is None)


def prefixed(rules: list[KeyRule], foreign: str, native: str = "") -> list[KeyRule]:
    """The same rules with ``foreign`` put before every foreign key (and ``alias_of``), ``native`` before every
    native key: one part of a file that holds several state dicts."""
    return [
        replace(r, foreign=foreign + r.foreign, native=None if r.native is None else native + r.native,
                alias_of=None if r.alias_of is None else foreign + r.alias_of)
        for r in rules
    ]


def dropped(rules: list[KeyRule]) -> list[KeyRule]:
    """The same keys, checked (shape, dtype, constants) and not imported: a part of a file that gantune ignores."""
    return [replace(r, native=None) for r in rules]


def strip_prefix(sd: Mapping, prefix: str) -> dict:
    """The entries of ``sd`` whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}


def module_rules(module: torch.nn.Module) -> list[KeyRule]:
    """Identity rules for a module whose state dict keys are the foreign format's own (same names, same shapes)."""
    return [KeyRule(k, k, tuple(v.shape), dtype=v.dtype) for k, v in module.state_dict().items()]


def _names(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" … and {len(keys) - limit} more" if len(keys) > limit else "")


def key_mismatch(want, have) -> str | None:
    """'N missing key(s): …; M unexpected key(s): …' for two key sets, or None when they are equal."""
    missing, unexpected = set(want) - set(have), set(have) - set(want)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    return "; ".join(parts) or None


def check_keys(sd: Mapping[str, torch.Tensor], rules: list[KeyRule], source: str, layout: str = "StyleGAN2") -> None:
    """Raise a WeightsError that names the missing and unexpected keys, if there are any."""
    mismatch = key_mismatch({r.foreign for r in rules}, sd)
    if mismatch:
        raise WeightsError(
            f"{source} state dict does not match the {layout} layout inferred from its keys: {mismatch}",
            hint="the file is damaged, or is a different architecture than its keys suggest",
        )


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_meta or b.is_meta:
        return a.is_meta and b.is_meta  # a layout without numbers: the shapes are all there is to check
    if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.storage_offset() == b.storage_offset() \
            and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def import_state(sd: Mapping[str, torch.Tensor], rules: list[KeyRule], source: str,
                 layout: str = "StyleGAN2") -> dict[str, torch.Tensor]:
    """Foreign state dict -> native state dict (each tensor in its rule's dtype, on the CPU; meta tensors stay meta).
    Every foreign key must be accounted for by ``rules``. Tensors that already have the native dtype, device and
    layout are not copied (memory-mapped files stay memory-mapped)."""
    check_keys(sd, rules, source, layout)
    out: dict[str, torch.Tensor] = {}
    for r in rules:
        t = sd[r.foreign]
        if not isinstance(t, torch.Tensor):
            raise WeightsError(f"{source} key {r.foreign} holds a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != tuple(r.shape):
            raise WeightsError(
                f"{source} key {r.foreign} has shape {tuple(t.shape)}, expected {tuple(r.shape)}",
                hint="the channel counts of this file are inconsistent with each other",
            )
        if t.is_floating_point() != r.dtype.is_floating_point or t.is_complex() or t.dtype == torch.bool:
            want = "a floating-point" if r.dtype.is_floating_point else "an integer"
            raise WeightsError(f"{source} key {r.foreign} has dtype {t.dtype}, expected {want} tensor")
        if r.alias_of is not None:
            if not _same_tensor(t, sd[r.alias_of]):
                raise WeightsError(
                    f"{source} key {r.foreign} differs from {r.alias_of}, which it must be a second name of",
                    hint="the file is damaged, or was not written by the code whose layout it claims",
                )
            continue
        t = t.detach().to("meta" if t.is_meta else "cpu", r.dtype)
        if r.native is None:
            if r.expect is not None and not t.is_meta and \
                    not torch.allclose(t, r.expect.to(t.dtype), atol=1e-6, rtol=1e-5):
                raise WeightsError(
                    f"{source} key {r.foreign} is {t.tolist()}, expected the StyleGAN2 [1,3,3,1] filter "
                    f"{r.expect.tolist()}",
                    hint="gantune implements only the standard StyleGAN2 resampling filter",
                )
            continue
        out[r.native] = r.to_native(t).contiguous()
    return out


def export_state(native: Mapping[str, torch.Tensor], rules: list[KeyRule], *,
                 copy: bool = True) -> dict[str, torch.Tensor]:
    """Native state dict -> foreign state dict, in the table's (the official) key order. An alias is the very tensor
    of the key it names (``torch.save`` stores it once). ``copy=False`` hands out the native tensors themselves
    wherever the rule does not reshape them."""
    out: dict[str, torch.Tensor] = {}
    for r in rules:
        if r.alias_of is not None:
            out[r.foreign] = out[r.alias_of]
        elif r.native is None:
            if r.expect is None:
                raise WeightsError(f"{r.foreign} cannot be exported: gantune does not keep that part of the file")
            out[r.foreign] = r.expect.clone()
        else:
            t = native[r.native].detach()
            t = r.to_foreign(t.to("meta" if t.is_meta else "cpu", r.dtype)).contiguous()
            out[r.foreign] = t.clone() if copy else t
    return out


def meta_generator(cfg):
    """A :class:`gantune.core.Generator` for ``cfg`` on the meta device: names and shapes, no numbers."""
    with torch.device("meta"):
        return Generator(cfg)


def generator_from_state(cfg, state: Mapping[str, torch.Tensor], *, skeleton=None):
    """A :class:`gantune.core.Generator` for ``cfg`` holding exactly the tensors of ``state`` (a full native state
    dict, checked strictly): the module is built on the meta device (or ``skeleton``, such a module already built)
    and the loaded tensors are assigned, so no weight is initialised only to be overwritten and no tensor is copied
    (memory-mapped tensors stay memory-mapped). The non-persistent buffers, constants of the architecture (the FIR
    kernel), are then made for real. The generator computes with :mod:`gantune.accel`'s measured paths."""
    G = skeleton if skeleton is not None else meta_generator(cfg)
    G.load_state_dict(dict(state), strict=True, assign=True)
    constants = {"resample_kernel": make_kernel}
    for name, buf in list(G.named_buffers()):
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            if attr not in constants:
                raise RuntimeError(f"generator buffer {name} is neither in the state dict nor a known constant")
            G.get_submodule(owner).register_buffer(attr, constants[attr](), persistent=False) if owner else \
                G.register_buffer(attr, constants[attr](), persistent=False)
    return accelerate(G).eval().requires_grad_(False)


def fit_channels(channels: Mapping[int, int], source: str) -> tuple[int, int]:
    """(channel_base, channel_max) such that min(base // res, max) == channels[res] for every resolution.

    Raises a WeightsError when no such pair exists (the core could not reproduce the file's layer widths).
    """
    cmax = max(channels.values())
    lower = 1
    for res, c in channels.items():
        lower = max(lower, c * res)  # base // res >= c  <=>  base >= c * res (for capped layers too)
    base = lower
    got = {res: max(1, min(base // res, cmax)) for res in channels}
    if got != dict(channels):
        table = ", ".join(f"{r}:{c}" for r, c in sorted(channels.items()))
        raise WeightsError(
            f"{source} layer widths {{{table}}} do not follow min(channel_base // res, channel_max)",
            hint="gantune's StyleGAN2 core supports only the standard channel schedule",
        )
    return base, cmax
