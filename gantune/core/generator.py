"""StyleGAN2 generator: mapping network, synthesis network, and the overparameterized latent variant.

Latent forms accepted by :meth:`SynthesisNetwork.forward`:

=============================  ==========================================================================
``ws`` (B, w_dim)              one w for every layer (the W space)
``ws`` (B, num_ws, w_dim)      one w per layer (W+)
``wmat`` (B, rows, w_dim)      overparameterized latent matrix, shared by every layer (paper's W)
``wmat`` (B, num_ws, rows, w)  one matrix per layer (paper's W+ extension)
=============================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import GeneratorConfig
from .layers import FullyConnected, ModulatedLayer, init_normal
from .ops import REFERENCE_OPS, Ops
from .resample import make_kernel
from .specs import LayerSpec, layer_specs

NOISE_MODES = ("const", "random", "none")


def normalize_2nd_moment(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """PixelNorm: x / sqrt(mean(x²) + eps)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and, for a class-conditional generator, the label c) -> w: PixelNorm, then ``mapping_layers``
    equalized-lr FC layers with leaky ReLU. Tracks ``w_avg``.

    Conditional (stylegan2-ada ``c_dim > 0``): ``embed`` maps c (B, c_dim) linearly to ``embed_dim`` features; z and
    the embedding are each normalised (2nd moment) and concatenated, so the first FC layer takes z_dim + embed_dim.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = cfg.z_dim, cfg.w_dim, cfg.c_dim
        if cfg.c_dim:
            self.embed = FullyConnected(cfg.c_dim, cfg.embed_dim)  # lr_mul 1, linear, bias 0 (as NVIDIA's)
        dims = [cfg.z_dim + cfg.embed_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.fcs = nn.ModuleList(
            FullyConnected(a, b, lr_mul=cfg.mapping_lr_mul, activation=True) for a, b in zip(dims[:-1], dims[1:])
        )
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Maps any (..., z_dim) tensor row by row to (..., w_dim); the overparameterized matrix is just more rows.
        ``c`` (B, c_dim): the class labels of a conditional generator (required there, refused elsewhere)."""
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z must end in {self.z_dim}, got {tuple(z.shape)}")
        x = normalize_2nd_moment(z.float())
        if self.c_dim:
            if c is None:
                raise ValueError(f"this generator is class-conditional ({self.c_dim} classes): give a class label c")
            if c.ndim != 2 or c.shape[1] != self.c_dim or c.shape[0] not in (1, z.shape[0]) or z.ndim != 2:
                raise ValueError(f"c must be (B, {self.c_dim}) for z (B, {self.z_dim}); got {tuple(c.shape)} "
                                 f"and {tuple(z.shape)}")
            y = normalize_2nd_moment(self.embed(c.float().to(z.device)))
            x = torch.cat([x, y.expand(x.shape[0], -1)], dim=1)
        elif c is not None:
            raise ValueError("this generator is not class-conditional; give no class label")
        for fc in self.fcs:
            x = fc(x)
        return x


class SynthesisNetwork(nn.Module):
    """Constant input, modulated convs with noise, skip toRGB outputs with FIR upsampling."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.specs: list[LayerSpec] = layer_specs(cfg)
        self.const = nn.Parameter(init_normal(cfg.channels(4), 4, 4))
        self.layers = nn.ModuleDict()
        for s in self.specs:
            block = self.layers[s.block] if s.block in self.layers else None
            if block is None:
                block = nn.ModuleDict()
                self.layers[s.block] = block
            block[s.attr] = ModulatedLayer(s, cfg.w_dim, use_noise=cfg.use_noise, conv_clamp=cfg.conv_clamp)
        self.register_buffer("resample_kernel", make_kernel(), persistent=False)
        self.compute_dtype = torch.float32
        self.channels_last: bool | None = None  # None: the ops' choice (ops.channels_last) unless differentiated
        # the convolutions and fused forms every layer computes with: the reference, or gantune.accel's
        self.ops: Ops = REFERENCE_OPS

    def layer(self, name: str) -> ModulatedLayer:
        block, attr = name.split(".")
        return self.layers[block][attr]

    def spec(self, name: str) -> LayerSpec:
        return self.layer(name).spec

    def _layer_latents(self, ws: torch.Tensor | None, wmat: torch.Tensor | None) -> tuple[list[torch.Tensor], int]:
        """Returns one latent per ws index ((B, w_dim) or (B, rows, w_dim)) and the batch size."""
        n = self.cfg.num_ws
        if (ws is None) == (wmat is None):
            raise ValueError("give exactly one of ws or wmat")
        if ws is not None:
            if ws.ndim == 2:
                return [ws] * n, ws.shape[0]
            if ws.ndim == 3 and ws.shape[1] == n:
                return list(ws.unbind(1)), ws.shape[0]
            raise ValueError(f"ws must be (B, {self.cfg.w_dim}) or (B, {n}, {self.cfg.w_dim}); got {tuple(ws.shape)}")
        if wmat.ndim == 3:
            return [wmat] * n, wmat.shape[0]
        if wmat.ndim == 4 and wmat.shape[1] == n:
            return list(wmat.unbind(1)), wmat.shape[0]
        raise ValueError(f"wmat must be (B, rows, w_dim) or (B, {n}, rows, w_dim); got {tuple(wmat.shape)}")

    def forward(
        self,
        ws: torch.Tensor | None = None,
        *,
        wmat: torch.Tensor | None = None,
        deltas: Mapping[str, torch.Tensor] | None = None,  # layer name -> (B or 1, out, in) offsets, θ ⊙ (1+Δ)
        noise_mode: str = "const",  # const (stored buffers), random, none
        fused: bool | None = None,  # force the grouped path (True) or the rank-1 path (False); None = automatic
        prefix: "SynthesisPrefix | None" = None,  # start from these activations (see :meth:`prefix`)
        style_offsets: Mapping[str, torch.Tensor] | None = None,  # layer name -> (B or 1, in) added to its styles
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        latents, batch = self._layer_latents(ws, wmat)
        # (out, in[, k, k]) offsets are one set for the whole batch: given their batch axis here, before any split
        deltas = {k: v[None] if v.ndim in (2, 4) else v for k, v in (deltas or {}).items()}
        unknown = set(deltas) - {s.name for s in self.specs}
        if unknown:
            raise ValueError(f"deltas for unknown layers: {sorted(unknown)}")
        wrong = {k: v.shape[0] for k, v in deltas.items() if v.shape[0] not in (1, batch)}
        if wrong:
            raise ValueError(f"deltas with a batch of {sorted(set(wrong.values()))} for {sorted(wrong)}: "
                             f"each must have a batch of 1 or {batch}")
        offsets = self._check_style_offsets(style_offsets, batch)
        if prefix is not None and prefix.x.shape[0] != batch:
            raise ValueError(f"prefix is for a batch of {prefix.x.shape[0]}, latents for {batch}")
        if step := self._pass_size(ws, wmat, batch):  # the same images, in passes of `step` (CPU: one)
            with self.ops.batch_in_passes():
                return torch.cat([self.forward(_rows(ws, a, step), wmat=_rows(wmat, a, step),
                                               deltas={k: _rows(v, a, step) for k, v in deltas.items()},
                                               noise_mode=noise_mode, fused=fused, prefix=_prefix_rows(prefix, a, step),
                                               style_offsets={k: _rows(v, a, step) for k, v in offsets.items()})
                                  for a in range(0, batch, step)])
        if prefix is not None:
            early = [s.name for s in self.specs[: prefix.index] if s.name in deltas or s.name in offsets]
            if early:
                raise ValueError(f"offsets for layers inside the cached prefix: {early}")
            return self._run(latents, deltas, noise_mode, fused, prefix.index, prefix.x, prefix.img, offsets=offsets)[0]
        return self._run(latents, deltas, noise_mode, fused, 0, None, None, offsets=offsets)[0]

    def _pass_size(self, ws: torch.Tensor | None, wmat: torch.Tensor | None, batch: int) -> int:
        """Images per synthesis pass where the ops render this batch in several passes (no gradients, and the ops'
        ``images_per_pass`` below the batch), else 0: the whole batch in one."""
        step = 0 if torch.is_grad_enabled() else self.ops.images_per_pass(ws if ws is not None else wmat)
        return step if 0 < step < batch else 0

    def _check_style_offsets(self, style_offsets, batch: int) -> dict[str, torch.Tensor]:
        """Validates the S-space offsets: known layer names, (B or 1, in) each."""
        offsets = dict(style_offsets or {})
        unknown = set(offsets) - {s.name for s in self.specs}
        if unknown:
            raise ValueError(f"style offsets for unknown layers: {sorted(unknown)}")
        for name, t in offsets.items():
            in_ch = self.spec(name).in_ch
            if t.ndim != 2 or t.shape[0] not in (1, batch) or t.shape[1] != in_ch:
                raise ValueError(f"style offset for {name} must be (1 or {batch}, {in_ch}), got {tuple(t.shape)}")
        return offsets

    def styles(self, ws: torch.Tensor | None = None, *, wmat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The S space of a latent: each layer's affine output, layer name -> (B, in) for ws, (B, out, in) for the
        rows of a latent matrix (the rows a layer uses)."""
        latents, _ = self._layer_latents(ws, wmat)
        out = {}
        for s in self.specs:
            mod = self.layer(s.name).modulation_inputs(latents[s.ws_index])
            out[s.name] = mod.get("styles", mod.get("modulation"))
        return out

    @torch.no_grad()
    def prefix(
        self,
        ws: torch.Tensor | None = None,
        *,
        wmat: torch.Tensor | None = None,
        until: str,  # name of the first layer not to run
        noise_mode: str = "const",
    ) -> "SynthesisPrefix":
        """Activations just before layer ``until``, for renders of the same latent that change only that layer and
        later ones (HyperStyle's passes tune medium and fine layers only): ``forward(..., prefix=p)`` then runs the
        rest and gives the same result as a full render (noise_mode const or none)."""
        if noise_mode == "random":
            raise ValueError("a prefix with random noise would fix that noise; use const or none")
        index = next((i for i, s in enumerate(self.specs) if s.name == until), None)
        if index is None:
            raise ValueError(f"unknown layer {until!r}")
        latents, batch = self._layer_latents(ws, wmat)
        if step := self._pass_size(ws, wmat, batch):  # in forward's passes, so that it gives a full render's bits
            with self.ops.batch_in_passes():
                parts = [self.prefix(_rows(ws, a, step), wmat=_rows(wmat, a, step), until=until,
                                     noise_mode=noise_mode) for a in range(0, batch, step)]
            img = None if parts[0].img is None else torch.cat([p.img for p in parts])
            return SynthesisPrefix(index=index, x=torch.cat([p.x for p in parts]), img=img)
        _, x, img = self._run(latents, {}, noise_mode, None, 0, None, None, stop=index)
        return SynthesisPrefix(index=index, x=x, img=img)

    def _grad_mode(self, latents, deltas, offsets) -> str | None:
        """What this pass differentiates, for the ops' choice of layout (:meth:`Ops.channels_last`): None; "x" for
        maps differentiated through per-layer w vectors or style offsets alone (the projectors); "w" where a
        convolution's weight takes a gradient (PTI, training, offsets, and the weight folded from a per-row
        modulation)."""
        if not torch.is_grad_enabled():
            return None
        weights = [*(deltas or {}).values(), *(t for t in latents if getattr(t, "ndim", 0) == 3)]
        if (any(getattr(t, "requires_grad", False) for t in weights)
                or any(self.layer(s.name).weight.requires_grad for s in self.specs)):
            return "w"
        styles = [*latents, *(offsets or {}).values()]
        return "x" if any(getattr(t, "requires_grad", False) for t in styles) else None

    def _run(self, latents, deltas, noise_mode, fused, start, x, img, stop=None, offsets=None):
        batch = latents[0].shape[0]
        dtype = self.compute_dtype
        if start == 0:
            x = self.const.to(dtype)[None].expand(batch, -1, -1, -1)
            if self.channels_last or (self.channels_last is None
                                      and self.ops.channels_last(x.device, self._grad_mode(latents, deltas, offsets))):
                x = x.contiguous(memory_format=torch.channels_last)
            img = None
        k = self.resample_kernel
        for s in self.specs[start:stop]:
            layer = self.layer(s.name)
            lat = latents[s.ws_index]
            so = offsets.get(s.name) if offsets else None
            if s.kind == "conv":
                x = layer(x, lat, kernel=k, delta=deltas.get(s.name), noise_mode=noise_mode, fused=fused,
                          style_offset=so, ops=self.ops)
            else:
                skip = None if img is None else self.ops.upsample2x(img, k)
                img = layer(x, lat, delta=deltas.get(s.name), fused=fused, skip=skip, style_offset=so,
                            ops=self.ops).float()
        return img, x, img


@dataclass(frozen=True)
class SynthesisPrefix:
    """The synthesis state before layer ``index`` for one latent batch (from :meth:`SynthesisNetwork.prefix`)."""

    index: int  # position in the layer specs of the first layer still to run
    x: torch.Tensor  # activations entering that layer
    img: torch.Tensor | None  # the toRGB sum so far


def _rows(t: torch.Tensor | None, a: int, step: int) -> torch.Tensor | None:
    """Rows a … a+step of a per-image tensor; a tensor shared by the batch (1, …) as it is."""
    return t if t is None or t.shape[0] == 1 else t[a : a + step]


def _prefix_rows(prefix: SynthesisPrefix | None, a: int, step: int) -> SynthesisPrefix | None:
    return None if prefix is None else SynthesisPrefix(prefix.index, _rows(prefix.x, a, step),
                                                       _rows(prefix.img, a, step))


class Generator(nn.Module):
    """The StyleGAN2 generator every gantune method uses.

    ``G(z)`` samples images; methods call ``G.mapping`` and ``G.synthesis`` directly.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    @property
    def specs(self) -> list[LayerSpec]:
        return self.synthesis.specs

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def set_precision(self, dtype: torch.dtype = torch.float32, *, channels_last: bool | None = None) -> "Generator":
        """Compute dtype and memory layout of the synthesis activations (``channels_last=None``: the layout the ops
        choose — NCHW for the reference; gantune.accel: channels-last on CPU, where it measured 1.25x faster, and on
        CUDA under ``torch.compile`` — except in passes that record gradients (projectors, PTI, training), whose
        weight gradients run twice as fast NCHW). Parameters stay float32."""
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        self.synthesis.compute_dtype = dtype
        self.synthesis.channels_last = channels_last
        return self

    # --- latents ------------------------------------------------------------------------------------------------
    def truncate(self, w: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """w_avg + psi·(w - w_avg) over the last dim; with ``cutoff``, w is W+ (B, num_ws, w_dim) and only the first
        ``cutoff`` layers are truncated."""
        if psi == 1.0:
            return w
        avg = self.w_avg.to(w.dtype)
        if cutoff is None:
            return avg + psi * (w - avg)
        if w.ndim != 3 or w.shape[1] != self.num_ws:
            raise ValueError("truncation_cutoff needs W+ latents (B, num_ws, w_dim)")
        out = w.clone()
        out[:, :cutoff] = avg + psi * (w[:, :cutoff] - avg)
        return out

    def map(
        self,
        z: torch.Tensor,  # (B, z_dim), or (B, rows, z_dim) for the overparameterized latent
        *,
        c: torch.Tensor | None = None,  # (B or 1, c_dim) class labels of a conditional generator (see class_label)
        truncation: float = 1.0,  # psi
        truncation_cutoff: int | None = None,  # truncate only the first layers (standard latent only)
        mix_z: torch.Tensor | None = None,  # second latent for style mixing
        mix_index: int | None = None,  # layers >= mix_index take mix_z's w (random index when None)
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z -> W+ (B, num_ws, w_dim) for the standard latent, or W (B, rows, w_dim) for the matrix latent."""
        if z.ndim == 3:
            if mix_z is not None or truncation_cutoff is not None:
                raise ValueError("style mixing and truncation cutoff are defined for the standard latent only")
            return self.truncate(self.mapping(z, c), truncation)
        ws = self.mapping(z, c)[:, None].repeat(1, self.num_ws, 1)
        if mix_z is not None:
            if mix_index is None:
                mix_index = int(torch.randint(1, self.num_ws, (1,), generator=generator))
            ws[:, mix_index:] = self.mapping(mix_z, c)[:, None]
        return self.truncate(ws, truncation, truncation_cutoff)

    def class_label(self, index: int, batch: int = 1, *, device=None) -> torch.Tensor:
        """The one-hot label (batch, c_dim) of class ``index``, as NVIDIA's generate.py builds it."""
        if not self.cfg.conditional:
            raise ValueError("this generator is not class-conditional; it takes no class")
        if not 0 <= int(index) < self.cfg.c_dim:
            raise ValueError(f"class {index} is out of range: this generator has classes 0 to {self.cfg.c_dim - 1}")
        c = torch.zeros(batch, self.cfg.c_dim, device=device or self.w_avg.device)
        c[:, int(index)] = 1.0
        return c

    def sample_z(self, batch: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Standard normal z (B, z_dim); for the overparameterized generator correlated rows (B, rows, z_dim):
        Z_i = (z_i + z) / sqrt(2) — each row N(0, I), pairwise correlation 0.5 (paper §3.1)."""
        device = device or self.w_avg.device
        if not self.cfg.overparam:
            return torch.randn(batch, self.cfg.z_dim, generator=generator, device=device)
        rows = torch.randn(batch, self.cfg.latent_rows, self.cfg.z_dim, generator=generator, device=device)
        shared = torch.randn(batch, 1, self.cfg.z_dim, generator=generator, device=device)
        return (rows + shared) / 2**0.5

    @torch.no_grad()
    def compute_w_avg(self, n: int = 10_000, *, seed: int = 123, batch: int = 1000,
                      c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of mapped standard-normal z (the projector's w_avg); does not modify the buffer. A conditional
        generator maps with ``c`` (1, c_dim), or with classes drawn uniformly when ``c`` is None."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        acc = torch.zeros(self.cfg.w_dim, dtype=torch.float64)
        done = 0
        while done < n:
            b = min(batch, n - done)
            z = torch.randn(b, self.cfg.z_dim, generator=g).to(self.w_avg.device)
            cb = c
            if self.cfg.conditional and c is None:
                cb = torch.nn.functional.one_hot(torch.randint(self.cfg.c_dim, (b,), generator=g), self.cfg.c_dim)
            acc += self.mapping(z, None if cb is None else cb.to(z.device)).double().sum(0).cpu()
            done += b
        return (acc / n).float()

    # --- rendering ----------------------------------------------------------------------------------------------
    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        *,
        truncation: float = 1.0,
        noise_mode: str = "const",
        deltas: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        lat = self.map(z, c=c, truncation=truncation)
        if self.cfg.overparam:
            return self.synthesis(wmat=lat, deltas=deltas, noise_mode=noise_mode)
        return self.synthesis(lat, deltas=deltas, noise_mode=noise_mode)

    def extra_repr(self) -> str:
        return self.cfg.describe()
