"""3×3 stride-1 convolutions by Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray 2016), on the CPU.

Each m×m output tile of a 3×3 convolution is computed from its α×α input tile (α = m + 2) in a transformed space
where the convolution becomes α² independent channel-mixing products, one per transformed position ξ:

    V[ξ] = (Bᵀ d B)[ξ]   (input tiles, C_in values each)      U[ξ] = (G g Gᵀ)[ξ]   (weights, C_out × C_in)
    M[ξ] = V[ξ] · U[ξ]ᵀ  (α² GEMMs: tiles × C_in by C_in × C_out)
    y    = Aᵀ M A        (back to the m×m output tile)

F(2×2, 3×3) does 16 multiplies per 4 outputs (2.25× fewer than direct), F(4×4, 3×3) 36 per 16 (4× fewer); each
transform is one small GEMM over the whole map. Both are exact in real arithmetic; in float32, against a float64
reference (relative to the largest output), a direct oneDNN convolution is off by ~2.5e-6, F(2×2) by ~5e-7 and
F(4×4) by ~1e-5 (its transforms hold ±4, ±5, 1/6, 1/24: more rounding). On an AVX2 CPU (2 cores) the GEMMs run
at about the direct convolution's rate, so wide layers gain (512 channels at 64²: 234 ms direct, 151 F(2×2),
99 F(4×4)) while narrow ones on large maps lose (the transformed maps are 2.25–4× the input and memory-bound):
see :func:`tile_size`.

Layouts: activations NHWC (channels-last; NCHW maps are transposed in and out), so a transformed position is a
(tiles, C) matrix without a copy; the weights (α², C_out, C_in), read transposed by the GEMMs. A modulated weight θ
times a per-(out, in) factor (styles, per-channel offsets, demodulation) is θ's transform times that factor
(:func:`scale_weight`): the transform is linear and acts on the 3×3 taps only. Where it runs: the generator's folded
path (inference, and passes differentiating one image: PTI, the overparameterized latent), the rank-1 path of a
frozen generator (the projectors) and :class:`Conv2d` (the hypernetwork and the encoders, without gradients); all
transform the weight on each call. Every operation is differentiable, so a pass with autograd computes the same
bits as one without.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .settings import Settings, settings_for

# Bᵀ (α×α) on the input tile, G (α×3) on the kernel, Aᵀ (m×α) on the product (Lavin & Gray's points 0, ±1, ±2, ∞)
_MATRICES = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0),
         (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
         (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}

_MATS: dict = {}


def _mats(m: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 (α²×α²) input, (α²×9) kernel and (m²×α²) output transforms of F(m×m, 3×3), for 2-D tiles:
    Kronecker products of the 1-D matrices, built in float64."""
    key = (m, device)
    if key not in _MATS:
        bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in _MATRICES[m])
        a = m + 2
        bb = torch.einsum("ak,bl->abkl", bt, bt).reshape(a * a, a * a)
        kt = torch.einsum("ak,bl->abkl", g, g).reshape(a * a, 9)
        aa = torch.einsum("pa,qb->pqab", at, at).reshape(m * m, a * a)
        _MATS[key] = tuple(t.to(device=device, dtype=torch.float32) for t in (bb, kt, aa))
    return _MATS[key]


def tile_size(x: torch.Tensor, in_ch: int, kernel: int, settings: Settings, *, per_call_weight: bool = False,
              grad: str | None = None) -> int:
    """The output tile m (4 or 2) with which a 3×3 stride-1 convolution of ``x`` (B, in, H, W) runs faster than
    directly here, or 0: float32 CPU, sides divisible by m, at least 16×16, and a layer wide against its map (NCHW
    maps cost a transposing copy in and out: a few ms at these sizes).
    Measured on a 2-core AVX2 CPU (ms, direct / F(2×2) / F(4×4)): 512 channels at 16² 15/9.1/7.8, 32² 58/35/24, 64²
    234/151/99; 256 at 32² 14/10.5/7.6, 128² 223/214/130; 128 at 64² 15.7/14.2/9.9, 128² 63/72/43, 256² 230/–/211;
    64 at 128² 13.7/–/17.3; 32 at 1024² 255/–/674. ``per_call_weight``: the weight is transformed for this call
    alone (modulated weights): F(4×4)'s 36 planes of a 512² weight cost 10-18 ms, so wide layers on maps under 64²
    take F(2×2) (4 ms). ``settings``: whether Winograd is on, its channel and map limits, and the shapes measured
    on this machine (which override the rule). ``grad``: the pass records gradients through the input ("x") or the
    weight too ("w"; see :func:`grad_mode`): the shapes measured that way decide, not those measured without."""
    if not settings.winograd or kernel != 3 or x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4:
        return 0
    h, w = x.shape[2], x.shape[3]
    # measured on this machine (gantune.accel.measure)
    measured = settings.winograd_grad_tiles if grad else ((None, *row) for row in settings.winograd_tiles)
    for mode, in_t, side, m in measured:
        if mode == grad and in_t == in_ch and side == h == w:
            return m
    if (h % 2 or w % 2 or h * w < 16 * 16 or in_ch < settings.winograd_min_channels
            or in_ch * h * w > settings.winograd_max_map):
        return 0
    if h % 4 or w % 4 or (per_call_weight and in_ch > 256 and h * w < 64 * 64):
        return 2
    return 4


def grad_mode(x: torch.Tensor, *weight_inputs: torch.Tensor | None) -> str | None:
    """What this pass differentiates, for :func:`tile_size`: "w" when autograd records through anything the weight
    is made of, "x" through the input alone, None without gradients."""
    if not torch.is_grad_enabled():
        return None
    if any(t is not None and t.requires_grad for t in weight_inputs):
        return "w"
    return "x" if x.requires_grad else None


def transform_weight(w: torch.Tensor, m: int) -> torch.Tensor:
    """w (out, in, 3, 3) float32 -> U (α², out, in): G g Gᵀ of every (out, in) kernel, as one product
    Kᵀ (α² × 9) · w(out·in × 9)ᵀ, written in the layout :func:`conv3x3_into` reads (no transposed copy)."""
    out_ch, in_ch = w.shape[:2]
    _, kt, _ = _mats(m, w.device)
    return (kt @ w.reshape(out_ch * in_ch, 9).t()).view(-1, out_ch, in_ch)


def scale_weight(u: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The transform of θ ⊙ scale[o, i] (broadcast over the taps) from U = transform(θ): U ⊙ scale, (α², out, in).
    The transform is linear and acts on the taps alone, so this is exact up to rounding."""
    return u * scale[None]


def _tile_of(u: torch.Tensor) -> int:
    return {16: 2, 36: 4}[u.shape[0]]


def _tiles(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The m×m output tiles of conv2d(x, g, bias, padding=1), g the weight transformed into ``u``, as a
    (B, H/m, m, W/m, m, out) view."""
    n, c, h, w = x.shape
    m = _tile_of(u)
    a, th, tw, out_ch = m + 2, h // m, w // m, u.shape[1]
    bb, _, aa = _mats(m, x.device)
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C); from NCHW, the transposing copy
    # every α×α input tile (stride m, overlapping) gathered once: (α, α, B, H/m, W/m, C) (unfold: its backward
    # sums the overlaps, for passes that differentiate x)
    d = xp.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3).contiguous()
    v = (bb @ d.view(a * a, -1)).view(a * a, n * th * tw, c)
    mm = torch.bmm(v, u.transpose(1, 2))  # (α², B·tiles, out)
    if bias is None:
        y = aa @ mm.view(a * a, -1)
    else:  # the bias added in the output transform's product
        y = torch.addmm(bias.float().repeat(n * th * tw), aa, mm.view(a * a, -1))
    return y.view(m, m, n, th, tw, out_ch).permute(2, 3, 0, 4, 1, 5)


def conv3x3_into(out: torch.Tensor, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """out += conv2d(x, g, bias, padding=1) for the weight g whose transform is ``u`` (α², out, in).
    x (B, in, H, W) and out (B, out, H, W) float32 (see :func:`tile_size`); out channels-last is added in place."""
    n, c, h, w = out.shape
    m = _tile_of(u)
    if out.is_contiguous(memory_format=torch.channels_last):
        out.permute(0, 2, 3, 1).view(n, h // m, m, w // m, m, c).add_(_tiles(x, u, bias))
    else:
        out.add_(conv3x3(x, u, bias))


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(x, g, bias, padding=1) as a new map in x's layout (channels-last, or NCHW); differentiable in x and
    u (the same operations with and without autograd, so the same bits)."""
    n, _, h, w = x.shape
    c, m = u.shape[1], _tile_of(u)
    out = torch.empty(n, h, w, c, dtype=x.dtype, device=x.device)
    out.view(n, h // m, m, w // m, m, c).copy_(_tiles(x, u, bias))
    out = out.permute(0, 3, 1, 2)
    return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state-dict keys and results to float rounding) whose 3×3 stride-1 passes
    without gradients run as Winograd convolutions where :func:`tile_size` says they are faster: the hypernetwork's
    backbone and heads and the IR-SE encoders. The weight is transformed on each call (1-5 ms for 256-512 channels):
    keeping the hypernetwork's transformed weights measured 0.07 s faster a pass (0.48 against 0.55 s) but holds
    366 MB, more than the 1024 px HyperStyle memory target leaves.

    ``settings``: the :class:`Settings` it follows (set by :func:`gantune.accel.accelerate`); None takes
    :func:`settings_for` its device and dtype."""

    settings: Settings | None = None

    def accel_settings(self) -> Settings:
        return self.settings or settings_for(self.weight.device.type, self.weight.dtype)

    def winograd_shape(self) -> bool:
        """A 3×3, stride-1, padding-1 float32 convolution wide enough for :func:`tile_size` (the map decides the
        rest)."""
        return (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.padding == (1, 1)
                and self.dilation == (1, 1) and self.groups == 1 and self.padding_mode == "zeros"
                and self.weight.dtype == torch.float32
                and self.in_channels >= self.accel_settings().winograd_min_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 0
        low_precision = torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type) in (
            torch.bfloat16, torch.float16)  # the convolution runs in that dtype: oneDNN's direct one (AMX)
        if (self.winograd_shape() and not low_precision
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            m = tile_size(x, self.in_channels, 3, self.accel_settings(), per_call_weight=True)
        if not m:
            return super().forward(x)
        u = transform_weight(self.weight.detach(), m)
        return conv3x3(x, u, None if self.bias is None else self.bias.detach())
