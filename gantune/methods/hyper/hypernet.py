"""HyperStyle's hypernetwork (Alaluf et al. 2022, Sec. 3.3 and App. D), built from the generator's layer specs.

    x ‖ ŷ (B, 6, 256, 256) ──ResNet34 backbone──▶ F (B, 512, 16, 16) ──one head per tuned layer──▶ Δ_ℓ

Heads (one per tuned generator layer, addressed by gantune layer name):

* ``shared`` — a *Shared Refinement Block*: its own strided convs (16 → 1) and an equalized-lr FC (512 → 512) give a
  code z, then two fully-connected layers **shared by every shared head** map z to offsets. Used for the 3×3 convs
  whose weight is ``S × S`` with ``S = shared_size`` (512 in the official model: every 512→512 conv up to 64 px).
  The shared FCs predict ``k·k`` values per (out, in) pair, so these offsets are per tap: (B, out, in, 3, 3).
* ``channel`` — a *Refinement Block*: strided convs (16 → 2), global average pooling and a 1×1 conv to
  ``in·out`` values: one offset per (out, in) channel pair, (B, out, in), the same for every k×k tap.
* ``torgb`` — the per-channel head for a 1×1 toRGB layer (strided convs down to 1×1, no pooling); (B, 3, in).

The module tree is gantune's own (``heads.<layer name with '_'>``); :mod:`.checkpoint` translates the official
``refinement_blocks.{index}`` keys. Nothing is downloaded: the backbone is built with random weights that a
checkpoint overwrites (train code may load ImageNet weights explicitly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core.layers import FullyConnected
from ...accel import Conv2d  # nn.Conv2d; 3×3 stride-1 inference on CPU by Winograd where faster
from ...core.specs import LayerSpec, select_layers
from ...io.record import expand_shared
from ...accel.memory import replace_data

FEATURES = 512  # channels of the backbone's 16×16 feature map (ResNet34 layer4)
FEATURE_RES = 16  # side of the feature map for a 256×256 input
INPUT_SIZE = 256  # the hypernetwork (and the W-encoder) see 256×256 images
WIDTH = 64  # channels of the backbone stem (official); stages are width·(1, 2, 4, 8)
HEAD_KINDS = ("shared", "channel", "torgb")


def head_key(name: str) -> str:
    """Module key of a layer's head (module names cannot contain dots): ``b64.conv0`` -> ``b64_conv0``."""
    return name.replace(".", "_")


@dataclass(frozen=True)
class TunedLayer:
    name: str  # gantune layer name (``b64.conv0``)
    in_ch: int  # input channels of the generator layer
    out_ch: int  # output channels of the generator layer
    kernel: int  # generator kernel size (3 for convs, 1 for toRGB)
    head: str  # shared | channel | torgb
    hyperstyle_index: int  # position in the official delta list (for import/export only)

    @classmethod
    def from_spec(cls, s: LayerSpec, head: str) -> "TunedLayer":
        if head not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS}, got {head!r}")
        return cls(s.name, s.in_ch, s.out_ch, s.kernel, head, s.hyperstyle_index)


def default_heads(specs: list[LayerSpec], names: list[str] | None = None, *, shared_size: int = 512) -> list[TunedLayer]:
    """The paper's choice: the medium and fine non-toRGB convs (14 layers at 1024 px), or ``names``.
    3×3 convs of ``shared_size × shared_size`` get a shared head, other convs a per-channel head, toRGB a toRGB head."""
    chosen = select_layers(specs, names=names) if names is not None else select_layers(specs)
    out = []
    for s in chosen:
        if s.kind == "torgb":
            head = "torgb"
        elif s.kernel == 3 and s.in_ch == s.out_ch == shared_size:
            head = "shared"
        else:
            head = "channel"
        out.append(TunedLayer.from_spec(s, head))
    return out


# --- backbone: ResNet34 on 6 channels, no max-pool, PReLU after the stem ---------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names), written out so nothing is downloaded. Its 3×3 convs are
    :class:`gantune.accel.Conv2d` (an ``nn.Conv2d``: same keys; Winograd inference on CPU where faster)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place as torchvision (BN's backward keeps its input)
        y = self.bn2(self.conv2(y))
        y += idt
        return F.relu(y, inplace=True)


RESNET34_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (channels, blocks, stride of first block)


class Backbone(nn.Module):
    """(B, 6, 256, 256) -> (B, 512, 16, 16): 7×7/2 conv, BN, PReLU, then ResNet34's 16 BasicBlocks as ``body.0..15``.
    ``width`` < 64 scales every stage (width·(1, 2, 4, 8) channels) for small models; 64 is the official network."""

    def __init__(self, in_channels: int = 6, width: int = WIDTH) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.PReLU(width)
        blocks, cin = [], width
        for cout, n, stride in RESNET34_STAGES:
            cout = cout * width // WIDTH
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.relu(self.bn1(self.conv1(x))))


# --- heads -----------------------------------------------------------------------------------------------------------
def _strided_convs(cin: int, inner: int, cout: int, n: int, *, first_stride: int) -> nn.Sequential:
    """n 3×3 convs with LeakyReLU(0.01): cin -> inner … inner -> cout; the first has ``first_stride``, the rest 2.
    Module indices 0, 2, 4, … are the convs (as in the official state dicts)."""
    mods: list[nn.Module] = []
    for i in range(n):
        a = cin if i == 0 else inner
        b = cout if i == n - 1 else inner
        mods += [Conv2d(a, b, 3, first_stride if i == 0 else 2, 1), nn.LeakyReLU(0.01)]
    return nn.Sequential(*mods)


class SharedHead(nn.Module):
    """Shared Refinement Block minus the shared FCs: 16×16×512 -> 1×1×512 (one stride-1 and four stride-2 convs
    through 128 channels) -> equalized-lr FC -> code (B, 512). Smaller models scale all three widths with the
    backbone (inner = features / 4, code = features) and need fewer convs for a smaller feature map."""

    def __init__(self, features: int = FEATURES, inner: int | None = None, spatial: int = FEATURE_RES) -> None:
        super().__init__()
        n = int(math.log2(spatial)) + 1  # 16 -> 16, 8, 4, 2, 1
        self.convs = _strided_convs(features, inner or features // 4, features, n, first_stride=1)
        self.linear = FullyConnected(features, features)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(feat).flatten(1))


class SharedFC(nn.Module):
    """The two fully-connected layers shared by all shared heads (Ha et al.'s hypernetwork):
    code (B, z) -> (B, in, z) via ``w2`` -> (B, in, out·k·k) via ``w1``, read as (B, out, in, k, k) exactly as the
    official code reinterprets that memory (a view, not a transpose)."""

    def __init__(self, size: int = 512, z_dim: int = 512, kernel: int = 3) -> None:
        super().__init__()
        self.size, self.z_dim, self.kernel = size, z_dim, kernel
        self.w1 = nn.Parameter(torch.fmod(torch.randn(z_dim, size * kernel * kernel) / 40, 2))
        self.b1 = nn.Parameter(torch.fmod(torch.randn(size * kernel * kernel) / 40, 2))
        self.w2 = nn.Parameter(torch.fmod(torch.randn(z_dim, size * z_dim) / 40, 2))
        self.b2 = nn.Parameter(torch.fmod(torch.randn(size * z_dim) / 40, 2))

    def hidden(self, code: torch.Tensor) -> torch.Tensor:
        """The hidden code (B, in, z) = ``code @ w2 + b2``; the offsets are an affine function of it."""
        w2 = self.w2
        if w2.stride(0) == 1 and w2.shape[1] > 1:  # column-major (see pack_): BLAS streams w2ᵀ once for all codes
            h = (w2.t() @ code.t()).t() + self.b2
        else:
            h = code @ w2 + self.b2
        return h.reshape(code.shape[0], self.size, self.z_dim)

    def pack_(self) -> "SharedFC":
        """Stores ``w2`` (z × in·z, 0.5 GB official) column-major, same shape and values. On CPU a few codes times a
        row-major w2 is about 5× slower than memory allows (BLAS copies all of w2 into its own layout on every call);
        column-major it is streamed once. One copy; pages of a memory-mapped checkpoint it came from are released.
        Idempotent; the official export writes it row-major again."""
        w2 = self.w2
        if w2.stride(0) == 1 or w2.device.type != "cpu":
            return self

        replace_data(w2, w2.detach().t().contiguous().t())
        return self

    def expand(self, hidden: torch.Tensor, count: int = 1) -> torch.Tensor:
        """Offsets (…, out, in, k, k) of ``count`` passes whose hidden codes sum to ``hidden`` (…, in, z)."""
        return expand_shared(hidden, self.w1, self.b1, count, self.kernel)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.expand(self.hidden(code))  # (B, out, in, k, k)

    def extra_repr(self) -> str:
        return f"{self.size}x{self.size}x{self.kernel}x{self.kernel}, z={self.z_dim}"


RELEASE_SLICE_BYTES = 32 << 20  # output-conv weight read per slice when its pages are released after use


class ChannelHead(nn.Module):
    """Refinement Block: strided convs through 256 channels, then a 1×1 conv to in·out values per sample.
    3×3 layers: three stride-2 convs (16 -> 2) and global average pooling; toRGB: four (16 -> 1), no pooling."""

    def __init__(self, layer: TunedLayer, features: int = FEATURES, inner: int | None = None,
                 spatial: int = FEATURE_RES) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.is_rgb = layer.in_ch, layer.out_ch, layer.head == "torgb"
        n = int(math.log2(spatial)) - (1 if self.is_rgb else 2) + 1
        if n < 1:
            raise ValueError(f"a {spatial}x{spatial} feature map is too small for a refinement block (input 64 px or more)")
        self.convs = _strided_convs(features, inner or features // 2, features, n, first_stride=2)
        if self.is_rgb:
            self.output = nn.Sequential(nn.Conv2d(features, layer.in_ch * layer.out_ch, 1))
        else:
            self.output = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(features, layer.in_ch * layer.out_ch, 1))

    def forward(self, feat: torch.Tensor, *, release: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """(B, out, in). ``release``: the output convolution (up to 0.25 GB official) runs in slices of its output
        channels of at most :data:`RELEASE_SLICE_BYTES`, and ``release`` is called with each weight slice once used —
        the same products, so the same values."""
        h = self.convs(feat)
        conv = self.output[-1]
        if len(self.output) > 1:
            h = self.output[0](h)
        w, b = conv.weight, conv.bias
        if release is None or w.numel() * w.element_size() <= RELEASE_SLICE_BYTES:
            y = _pointwise(h, w, b)
            if release is not None:
                release(w)
        else:
            rows = max(1, RELEASE_SLICE_BYTES // (w[0].numel() * w.element_size()))
            parts = []
            for i in range(0, w.shape[0], rows):
                parts.append(_pointwise(h, w[i : i + rows], None if b is None else b[i : i + rows]))
                release(w[i : i + rows])
            y = torch.cat(parts, 1)
        return y.view(feat.shape[0], self.out_ch, self.in_ch)


def _pointwise(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The heads' 1×1 output convolution; on a 1×1 map (every official head) as the matrix product it is: oneDNN's
    convolution of a bf16 1×1 map by a (32768, 512) weight took 11.7 ms against 1.6 ms for the product (1.8 / 1.3 ms
    in float32; AMX Xeon)."""
    if h.shape[-2:] != (1, 1):
        return F.conv2d(h, w, b)
    return F.linear(h.flatten(1), w.flatten(1), b)[:, :, None, None]


class HyperNetwork(nn.Module):
    """Predicts multiplicative weight offsets for the tuned generator layers from (target, current reconstruction)."""

    def __init__(
        self,
        layers: list[TunedLayer],  # tuned layers and their head kinds (see ``default_heads``)
        *,
        shared_size: int = 512,  # side of the square 3×3 weights the shared FCs predict (official: 512)
        in_channels: int = 6,  # target and reconstruction, RGB each
        width: int = WIDTH,  # backbone stem channels (official 64); features = 8·width
        input_size: int = INPUT_SIZE,  # side of the input images (official 256); features are input_size / 16
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a hypernetwork needs at least one tuned layer")
        if input_size % 16 or input_size < 64:
            raise ValueError(f"input_size must be a multiple of 16 and at least 64, got {input_size}")
        self.layers = list(layers)
        self.shared_size, self.width, self.input_size = shared_size, width, input_size
        features, spatial = 8 * width, input_size // 16
        self.backbone = Backbone(in_channels, width)
        shared = [lyr for lyr in layers if lyr.head == "shared"]
        for lyr in shared:
            if lyr.kernel != 3 or lyr.in_ch != shared_size or lyr.out_ch != shared_size:
                raise ValueError(f"{lyr.name}: a shared head needs a 3x3 {shared_size}x{shared_size} layer")
        self.shared_fc = SharedFC(shared_size, z_dim=features) if shared else None
        self.heads = nn.ModuleDict()
        for lyr in layers:
            self.heads[head_key(lyr.name)] = (SharedHead(features, spatial=spatial) if lyr.head == "shared"
                                              else ChannelHead(lyr, features, spatial=spatial))

    @classmethod
    def from_specs(cls, specs: list[LayerSpec], names: list[str] | None = None, *, shared_size: int | None = None,
                   width: int = WIDTH, input_size: int = INPUT_SIZE):
        """Heads for the paper's default layers (or ``names``); ``shared_size`` defaults to the widest conv.
        ``width``/``input_size`` below the official 64/256 give a compact network for small generators."""
        size = shared_size or max(s.in_ch for s in specs)
        return cls(default_heads(specs, names, shared_size=size), shared_size=size, width=width, input_size=input_size)

    @property
    def names(self) -> list[str]:
        return [lyr.name for lyr in self.layers]

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor, *, compact: bool = False,
                release: Callable[[torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
        """x, y_hat (B, 3, S, S) in [-1, 1] (S = input_size, 256 official), or (B, 3, 3S/4, S) for cars (the
        official 192×256: a 12×16 feature map, which the heads' 16×16 conv counts still bring to 1×1, or 2×2 before
        the average pool) -> {layer: (B, out, in) or (B, out, in, k, k) for shared heads}. ``compact``: shared heads
        give their hidden code (B, in, z) instead (offsets = ``shared_fc.expand(code)``). ``release`` is called
        with each per-layer head's output weight (in slices) once used (inference drops memory-mapped pages there)."""
        S = self.input_size
        if x.shape != y_hat.shape or x.shape[1:] not in ((3, S, S), (3, S * 3 // 4, S)):
            raise ValueError(f"hypernetwork inputs must both be (B, 3, {S}, {S}) or (B, 3, {S * 3 // 4}, {S}); got "
                             f"{tuple(x.shape)} and {tuple(y_hat.shape)}")
        feat = self.backbone(torch.cat([x, y_hat], dim=1))
        out = {}
        shared = [lyr.name for lyr in self.layers if lyr.head == "shared"]
        codes = [self.heads[head_key(n)](feat) for n in shared]
        if shared:  # one product for every shared head: w2 (z × in·z, 0.5 GB official) is read once, not per head
            hidden = self.shared_fc.hidden(torch.cat(codes)).split(feat.shape[0])
            for n, h in zip(shared, hidden):
                out[n] = h
        for lyr in self.layers:
            if lyr.head == "shared":
                if not compact:
                    out[lyr.name] = self.shared_fc.expand(out[lyr.name])
            else:
                out[lyr.name] = self.heads[head_key(lyr.name)](feat, release=release)
        return {lyr.name: out[lyr.name] for lyr in self.layers}

    def extra_repr(self) -> str:
        kinds = {k: sum(lyr.head == k for lyr in self.layers) for k in HEAD_KINDS}
        return (f"{len(self.layers)} tuned layers ({kinds}), shared size {self.shared_size}, width {self.width}, "
                f"input {self.input_size}")
