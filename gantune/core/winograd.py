"""3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016), for CPU inference.

Each 2×2 output tile of a 3×3 convolution is computed from its 4×4 input tile in a transformed space where the
convolution becomes 16 independent channel-mixing products, one per transformed position ξ:

    V[ξ] = (Bᵀ d B)[ξ]   (input tiles, C_in values each)      U[ξ] = (G g Gᵀ)[ξ]   (weights, C_in × C_out)
    M[ξ] = V[ξ] · U[ξ]   (16 GEMMs: tiles × C_in by C_in × C_out)
    y    = Aᵀ M A        (back to the 2×2 output tile)

That is 16 multiplies per 4 outputs instead of 36: the channel-mixing work drops 2.25× and the transforms are
additions over the maps. The transforms' coefficients are 0, ±1 and ±½, so the result differs from a direct
convolution by float rounding only (relative error ~3e-6 measured against oneDNN in float32). On an AVX2 CPU the
GEMMs run at about the direct convolution's rate, so wide layers on small maps gain (512 channels at 64²: 0.26 →
0.16 s) while narrow ones on large maps lose (the transformed maps are 4× the input and memory-bound): see
:func:`applies`.

Layouts: activations NHWC (channels-last), so a transformed position is a (tiles, C) matrix without a copy; the
weights (16, C_out, C_in), read transposed by the GEMMs. A weight that is a fixed θ times a per-(out, in) factor (styles, per-channel offsets,
demodulation) is transformed once and scaled per image (:func:`scale_weight`): the transform is linear and acts on
the 3×3 taps only.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

# F(2×2, 3×3): Bᵀ (4×4) on the input tile, G (4×3) on the kernel, Aᵀ (2×4) on the product
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_AT = ((1.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, -1.0))

# ``GANTUNE_WINOGRAD=0`` turns the path off (direct oneDNN convolutions everywhere).
ENABLED = os.environ.get("GANTUNE_WINOGRAD", "1") != "0"


def _kernel_matrix(device, dtype=torch.float32) -> torch.Tensor:
    """(9, 16): K[(kh, kw), (a, b)] = G[a, kh] · G[b, kw], so that U = g.view(…, 9) @ K."""
    g = torch.tensor(_G, dtype=torch.float64)
    return torch.einsum("ak,bl->klab", g, g).reshape(9, 16).to(device=device, dtype=dtype)


def _output_matrix(device, dtype=torch.float32) -> torch.Tensor:
    """(4, 16): row (p, q) of the 2×2 output tile, column (a, b) of the transformed position: Aᵀ[p, a] · Aᵀ[q, b]."""
    a = torch.tensor(_AT, dtype=torch.float64)
    return torch.einsum("pa,qb->pqab", a, a).reshape(4, 16).to(device=device, dtype=dtype)


_MATS: dict = {}


def _mats(device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _MATS:
        _MATS[device] = (_kernel_matrix(device), _output_matrix(device))
    return _MATS[device]


def applies(x: torch.Tensor, in_ch: int, kernel: int) -> bool:
    """Whether a 3×3 stride-1 convolution of ``x`` (B, in, H, W) runs faster here: float32 CPU, channels-last, even
    sides, and a layer wide against its map. Measured on a 2-core AVX2 CPU (ms, direct / Winograd): 512 channels at
    16² 17.7/10.3, 32² 66/36, 64² 259/157; 256 at 32² 15.9/10.3, 128² 257/209; 128 at 64² 15.9/12.3, 256² 256/312;
    64 at 128² 16/17.5, 512² 274/500. A weight transformed for one call (per-tap offsets) adds ~5 ms at 512
    channels, 1 ms at 256: at 16² that about cancels the gain, and is kept so that zero per-tap offsets give the
    plain layer's algorithm."""
    if not ENABLED or kernel != 3 or x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4:
        return False
    h, w = x.shape[2], x.shape[3]
    if h % 2 or w % 2 or h * w < 16 * 16 or in_ch < 128 or not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return in_ch * h * w <= 256 * 128 * 128  # larger: the transformed maps (4× the input) are memory-bound


def transform_weight(w: torch.Tensor) -> torch.Tensor:
    """w (out, in, 3, 3) float32 -> U (16, out, in): G g Gᵀ of every (out, in) kernel, as one product
    Kᵀ (16 × 9) · w(out·in × 9)ᵀ, written in the layout :func:`conv3x3_into` reads (no transposed copy)."""
    out_ch, in_ch = w.shape[:2]
    k, _ = _mats(w.device)
    return (k.t() @ w.reshape(out_ch * in_ch, 9).t()).view(16, out_ch, in_ch)


def cached_transform(w: torch.Tensor) -> torch.Tensor:
    """:func:`transform_weight` of a stored float32 weight, kept on the tensor and redone when it changes in place
    (16/9 of the weight's memory: 52 MB for the layers of a 1024 px generator that use it)."""
    key = (w._version, w.data_ptr())
    hit = getattr(w, "_gantune_winograd", None)
    if hit is None or hit[0] != key:
        hit = (key, transform_weight(w.detach()))
        w._gantune_winograd = hit
    return hit[1]


def scale_weight(u: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The transform of θ ⊙ scale[o, i] (broadcast over the taps) from U = transform(θ): U ⊙ scale, (16, out, in).
    The transform is linear and acts on the taps alone, so this is exact up to rounding."""
    return u * scale[None]


def _input_transform(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) channels-last -> V (16, B·tiles, C) for tiles of stride 2 over the zero-padded maps."""
    n, c, h, w = x.shape
    th, tw = h // 2, w // 2
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C)
    # rows: the tile at row r reads padded rows 2r … 2r+3 = even[r], odd[r], even[r+1], odd[r+1]
    ev, od = xp[:, 0::2], xp[:, 1::2]
    t = torch.empty(4, n, th, w + 2, c, dtype=x.dtype)
    torch.sub(ev[:, :-1], ev[:, 1:], out=t[0])
    torch.add(od[:, :-1], ev[:, 1:], out=t[1])
    torch.sub(ev[:, 1:], od[:, :-1], out=t[2])
    torch.sub(od[:, :-1], od[:, 1:], out=t[3])
    ev, od = t[..., 0::2, :], t[..., 1::2, :]  # then the columns, the same way
    v = torch.empty(4, 4, n, th, tw, c, dtype=x.dtype)
    torch.sub(ev[..., :-1, :], ev[..., 1:, :], out=v[:, 0])
    torch.add(od[..., :-1, :], ev[..., 1:, :], out=v[:, 1])
    torch.sub(ev[..., 1:, :], od[..., :-1, :], out=v[:, 2])
    torch.sub(od[..., :-1, :], od[..., 1:, :], out=v[:, 3])
    return v.view(16, n * th * tw, c)


def _tiles(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The 2×2 output tiles of conv2d(x, g, bias, padding=1) as a (B, H/2, 2, W/2, 2, out) view."""
    n, _, h, w = x.shape
    out_ch = u.shape[1]
    th, tw = h // 2, w // 2
    _, a2 = _mats(x.device)
    m = torch.bmm(_input_transform(x), u.transpose(1, 2))  # (16, B·tiles, out)
    # back to the 2×2 output tiles: one (4 × 16) product over every (tile, channel), the bias added there
    if bias is None:
        y = a2 @ m.view(16, -1)
    else:
        y = torch.addmm(bias.float().repeat(n * th * tw), a2, m.view(16, -1))
    return y.view(2, 2, n, th, tw, out_ch).permute(2, 3, 0, 4, 1, 5)  # (B, tile row, p, tile column, q, out)


def conv3x3_into(out: torch.Tensor, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """out += conv2d(x, g, bias, padding=1) for the weight g whose transform is ``u`` (16, out, in).
    x (B, in, H, W) and out (B, out, H, W) channels-last float32 (see :func:`applies`)."""
    n, c, h, w = out.shape
    out.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c).add_(_tiles(x, u, bias))


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(x, g, bias, padding=1) as a new channels-last map."""
    n, _, h, w = x.shape
    c = u.shape[1]
    out = torch.empty(n, h, w, c, dtype=x.dtype)
    out.view(n, h // 2, 2, w // 2, 2, c).copy_(_tiles(x, u, bias))
    return out.permute(0, 3, 1, 2)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state-dict keys and results to float rounding) whose 3×3 stride-1 passes
    without gradients run as Winograd convolutions where :func:`applies` says they are faster: the hypernetwork's
    backbone and heads and the IR-SE encoders. ``cache_transform``: keep the transformed weight (16/9 of the weight's
    memory) for a network run several times per image (the hypernetwork turns it on); by default the weight is
    transformed on each call (1-5 ms for 256-512 channels), so an encoder run once per batch keeps no copies."""

    cache_transform = False

    def _winograd(self, x: torch.Tensor) -> bool:
        if (self.kernel_size != (3, 3) or self.stride != (1, 1) or self.padding != (1, 1) or self.dilation != (1, 1)
                or self.groups != 1 or self.padding_mode != "zeros" or self.weight.dtype != torch.float32):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return False
        return applies(x, self.in_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._winograd(x):
            return super().forward(x)
        u = cached_transform(self.weight) if self.cache_transform else transform_weight(self.weight.detach())
        return conv3x3(x, u, None if self.bias is None else self.bias.detach())
