"""HyperStyle's iterative refinement (paper Sec. 3.4, Eq. 6), step for step as the official inference loop:

1. ``codes = E(x) + latent_avg`` once (E = W-encoder on the 256×256 input); the codes never change afterwards;
2. ``ŷ₀ = G(codes)`` with the stored noise buffers, average-pooled to 256×256 (not clamped);
3. for t = 1…T: ``Δ_t = H(x, ŷ_{t−1})``, ``Σ_t = Σ_{t−1} + Δ_t``, ``y_t = G(codes; θ ⊙ (1 + Σ_t))``, ``ŷ_t = pool(y_t)``.

The result is ``y_T`` at the generator's resolution, the codes (W+) and the accumulated offsets Σ_T.

Rendering with offsets goes through the core's one modulated conv, batched: ``deltas={name: (B, out, in)}`` for the
per-channel heads (repeated over k×k by broadcasting) and ``(B, out, in, k, k)`` for HyperStyle's shared heads,
which predict one offset per kernel tap.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ... import progress
from ...accel import Conv2d
from ...accel.memory import file_mapped, file_mapped_tensors, release_tensor_pages, replace_data
from ...core import Generator
from ...io.record import expand_shared
from ...runtime import native_bf16_cpu
from .domain import SQUARE, input_hw, pool_reconstruction
from .hypernet import INPUT_SIZE, HyperNetwork
from .wencoder import WEncoder


def face_pool(y: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """The official ``AdaptiveAvgPool2d((256, 256))`` (an exact 4×4 mean at 1024 px; pixel replication for a generator
    smaller than the hypernetwork's input, as the official op does). ``size``: the hypernetwork's input side."""
    return F.adaptive_avg_pool2d(y.float(), (size, size))


def to_input_size(x: torch.Tensor, size: int | tuple[int, int] = INPUT_SIZE) -> torch.Tensor:
    """Images for the encoders: (B, 3, 256, 256), or (B, 3, H, W) for ``size`` = (H, W) (cars: (192, 256)).
    Other sizes are resized (antialiased bilinear)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x.float()
    return F.interpolate(x.float(), size=hw, mode="bilinear", align_corners=False, antialias=True)


def encoder_layout(x: torch.Tensor) -> torch.Tensor:
    """Encoder inputs channels-last on CPU: the maps then stay channels-last through the network (oneDNN's layout,
    whatever the weights'), which the Winograd convolutions of its wide layers need (``gantune.accel.winograd``).
    (On an H200, channels-last hypernetwork inputs measured the same as NCHW: 0.32 ms/img a pass at batch 32.)"""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


@contextlib.contextmanager
def _tf32_matmul(device: torch.device, dtype: torch.dtype):
    """TF32 float32 GEMMs on CUDA for a half-precision run (the shared heads' offset expansion: a float32 SIMT GEMM,
    7 % of a batch-32 bf16 inversion on an H200); anything else unchanged."""
    if device.type != "cuda" or dtype == torch.float32:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def render(
    G: Generator,
    ws: torch.Tensor,  # (B, num_ws, w_dim) or (B, w_dim)
    deltas: dict[str, torch.Tensor] | None = None,  # name -> (B or 1, out, in) or (B or 1, out, in, k, k)
    *,
    noise_mode: str = "const",  # const = stored noise buffers, as HyperStyle (randomize_noise=False)
    prefix=None,  # SynthesisPrefix of these ws: the untuned first layers, computed once (G.synthesis.prefix)
) -> torch.Tensor:
    """G(ws; θ ⊙ (1 + Δ)) as float32 (B, 3, H, W) (on CPU the generator renders a batch one image a pass:
    ``gantune.accel.Settings.images_per_pass``)."""
    deltas = {k: v for k, v in (deltas or {}).items() if v is not None}
    return G.synthesis(ws, deltas=deltas or None, noise_mode=noise_mode, prefix=prefix).float()


def untuned_prefix(G: Generator, ws: torch.Tensor, tuned: set[str], noise_mode: str):
    """The activations before the first layer the hypernetwork tunes (the same in every pass: the latent is fixed
    and those layers get no offsets), or None where nothing can be kept (random noise, or the first layer tuned)."""
    first = next((s.name for s in G.specs if s.name in tuned), None)
    if noise_mode == "random" or first is None or first == G.specs[0].name:
        return None
    return G.synthesis.prefix(ws, until=first, noise_mode=noise_mode)


def cpu_layouts(hypernet) -> None:
    """Once per model, on CPU: the k×k (k > 1) convolution weights of the hypernetwork channels-last (oneDNN's native
    layout: ~5-8 % faster than converting on every call; not those that run as Winograd convolutions), and the shared
    FC's ``w2`` column-major (see :meth:`SharedFC.pack_`). Each weight is copied once; where the old one was
    memory-mapped from the checkpoint, its pages are released, so memory does not hold both. Values are unchanged;
    the official export writes the usual layout. (The W-encoder, used once per batch, keeps its memory-mapped
    weights, whose pages :func:`refine` drops after use: 0.1 GB less for 0.5 % of the time.)"""
    if isinstance(hypernet, torch.nn.Module) and not getattr(hypernet, "_gantune_cpu_layout", False):
        for conv in hypernet.modules():
            w = getattr(conv, "weight", None)
            if not isinstance(conv, torch.nn.Conv2d) or w is None or w.shape[-1] * w.shape[-2] == 1:
                continue
            if isinstance(conv, Conv2d) and conv.winograd_shape():
                continue  # runs as Winograd, which reads the weight once per call in any layout
            if w.device.type != "cpu" or w.is_contiguous(memory_format=torch.channels_last):
                continue
            replace_data(w, w.detach().contiguous(memory_format=torch.channels_last))
        hypernet._gantune_cpu_layout = True
    if isinstance(hypernet, HyperNetwork) and hypernet.shared_fc is not None:
        hypernet.shared_fc.pack_()


def _page_releaser() -> Callable[[torch.nn.Module | torch.Tensor], None] | None:
    """On CPU, weights memory-mapped from a checkpoint count as resident once read. The per-layer heads' output
    convolutions (0.5 GB of 1×1 weights in the official network) and the W-encoder are each read once per pass, so
    their pages are dropped right after use (the heads slice by slice) and read back from the page cache next time;
    peak memory then holds one slice, not every head. Only for modules handed over to :func:`refine`
    (``own_modules``)."""
    found: dict[tuple[int, int], list] = {}

    def release(obj: torch.nn.Module | torch.Tensor) -> None:
        if isinstance(obj, torch.Tensor):
            base = obj._base if obj._base is not None else obj  # a slice: is the whole weight file-mapped?
            key = (base.data_ptr(), base.numel())
            if key not in found:
                found[key] = file_mapped([base])
            if found[key]:
                release_tensor_pages([obj])
            return
        key = (id(obj), -1)
        if key not in found:
            found[key] = file_mapped_tensors(obj)
        release_tensor_pages(found[key])

    return release


@dataclass
class HyperOutput:
    """What :func:`refine` returns for a batch (tensors on the model's device)."""

    images: torch.Tensor  # (B, 3, H, W) final reconstruction y_T in [-1, 1] (not clamped)
    codes: torch.Tensor  # (B, num_ws, w_dim) the fixed initial latent (W-encoder + latent_avg)
    deltas: dict[str, torch.Tensor]  # accumulated offsets Σ_T: (B, out, in) or (B, out, in, k, k)
    shared: dict[str, torch.Tensor] = field(default_factory=dict)  # shared heads: Σ_t hidden codes (B, in, z)
    shared_count: int = 0  # passes summed in ``shared`` (deltas[name][i] = shared_fc.expand(shared[name][i], T))
    intermediates: list[torch.Tensor] = field(default_factory=list)  # y_0 … y_T when asked for (y_0 has no offsets)
    timings: dict[str, float] = field(default_factory=dict)  # seconds for the whole batch: encode, hypernet, render


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def initial_codes(x, G, w_encoder, latent_avg, codes, *, dtype, domain, release) -> torch.Tensor:
    """The initial latent (B, num_ws, w_dim) float32: ``codes`` as given, or the W-encoder's output plus
    ``latent_avg`` (its memory-mapped pages released after use when ``release`` is given)."""
    if codes is None:
        if w_encoder is None:
            raise ValueError("give a W-encoder or initial codes")
        with _autocast(x.device, dtype):
            codes = w_encoder(encoder_layout(to_input_size(x, input_hw(w_encoder.input_size, domain)))).float()
        if release is not None:
            release(w_encoder)
        if latent_avg is not None:
            codes = codes + latent_avg.to(x.device, torch.float32).reshape(1, -1, codes.shape[-1])
    codes = codes.float()
    if codes.ndim != 3 or codes.shape[1:] != (G.num_ws, G.cfg.w_dim):
        raise ValueError(f"codes must be (B, {G.num_ws}, {G.cfg.w_dim}); got {tuple(codes.shape)}")
    return codes


@torch.no_grad()
def refine(
    x: torch.Tensor,  # (B, 3, H, W) targets in [-1, 1]; resized to 256 for the networks
    *,
    G: Generator,  # the generator the hypernetwork was trained for
    hypernet: HyperNetwork,
    w_encoder: WEncoder | None = None,  # gives the initial latent (unless ``codes`` is given)
    latent_avg: torch.Tensor | None = None,  # (w_dim,), (1, w_dim) or (num_ws, w_dim), added to the encoder output
    codes: torch.Tensor | None = None,  # (B, num_ws, w_dim) initial latent to use instead of the W-encoder
    iters: int = 5,  # hypernetwork passes T (official test default 5)
    noise_mode: str = "const",  # generator noise: const (stored buffers, reference behaviour), random, none
    dtype: torch.dtype = torch.float32,  # compute dtype of the encoders (autocast); offsets accumulate in fp32
    keep_intermediates: bool = False,  # return y_0 … y_T
    on_iter: Callable[[int, torch.Tensor], None] | None = None,  # called with (t, y_t) after every pass
    domain: str = SQUARE,  # cars: (192, 256) inputs and the official crops of the reconstructions (see .domain)
    own_modules: bool = False,  # the modules are this run's to prepare (CPU: re-laid weights, released pages)
) -> HyperOutput:
    """HyperStyle's inference loop: the initial latent, a plain render, then ``iters`` passes of the hypernetwork,
    each adding its offsets and rendering again (the official ``run_inversion`` order).

    ``own_modules``: the caller hands the networks over for inference (the HyperStyle inverter does, for the ones it
    loaded). On CPU the first call then re-lays the hypernetwork's weights in place, once (:func:`cpu_layouts`:
    channels-last convolution weights, a column-major shared ``w2``; values unchanged; about 5 % faster), and drops
    the pages of memory-mapped weights after each use (:func:`_page_releaser`: the 1024 px memory target). Without
    it, refine changes nothing in the modules it is given; the results agree to float rounding (the re-laid weights
    run other oneDNN kernels)."""
    if iters < 0:
        raise ValueError("iters must be >= 0")
    device = x.device
    release = None  # on CPU: drops memory-mapped weights' pages after use (see _page_releaser)
    if device.type == "cpu" and own_modules:
        cpu_layouts(hypernet)
        release = _page_releaser()
    timings = {"encode": 0.0, "hypernet": 0.0, "render": 0.0}
    x_h = to_input_size(x, input_hw(hypernet.input_size, domain))  # 256 px (cars 192×256) for the official networks
    t0 = time.perf_counter()
    codes = initial_codes(x, G, w_encoder, latent_avg, codes, dtype=dtype, domain=domain, release=release)
    timings["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tuned = {lyr.name for lyr in hypernet.layers} if isinstance(hypernet, HyperNetwork) else set()
    prefix = untuned_prefix(G, codes, tuned, noise_mode) if tuned else None
    y = render(G, codes, None, noise_mode=noise_mode, prefix=prefix)
    timings["render"] += time.perf_counter() - t0
    inter = [y] if keep_intermediates else []
    if on_iter:
        on_iter(0, y)
    acc: dict[str, torch.Tensor] = {}
    hidden: dict[str, torch.Tensor] = {}  # shared heads: the offsets of T passes are one affine map of Σ_t codes
    compact = isinstance(hypernet, HyperNetwork) and hypernet.shared_fc is not None  # else any callable of (x, ŷ)
    shared = {lyr.name for lyr in hypernet.layers if lyr.head == "shared"} if compact else set()
    for t in range(1, iters + 1):
        t0 = time.perf_counter()
        with _autocast(device, dtype):
            pooled = pool_reconstruction(y, hypernet.input_size, domain, first=t == 1)
            new = hypernet(x_h, pooled, compact=True, release=release) if compact else hypernet(x_h, pooled)
        for name, d in new.items():
            store = hidden if name in shared else acc
            store[name] = store[name] + d.float() if name in store else d.float()
        # the passes before the last feed only the hypernetwork: on a CPU with bf16 in hardware their offsets are
        # expanded in bf16 (one GEMM 6x faster); the last pass's, which make the image, as a record re-expands them
        expand_dtype = torch.bfloat16 if t < iters and bf16_expansion(device, dtype) else torch.float32
        for name, h in hidden.items():
            if device.type == "cpu":  # per image, exactly as a record re-expands it (the same bits)
                acc[name] = torch.stack([shared_offsets(hypernet, h[i], t, expand_dtype) for i in range(h.shape[0])])
            else:  # one GEMM for the batch (on an H200, batch 32: 47 ms of GPU time against 66 ms per image)
                with _tf32_matmul(device, dtype):
                    acc[name] = shared_offsets(hypernet, h, t)
        timings["hypernet"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        y = render(G, codes, acc, noise_mode=noise_mode, prefix=prefix)
        timings["render"] += time.perf_counter() - t0
        if keep_intermediates:
            inter.append(y)
        if on_iter:
            on_iter(t, y)
        progress.step(t, iters, "iteration")
    return HyperOutput(images=y, codes=codes, deltas=acc, shared=hidden, shared_count=iters if hidden else 0,
                       intermediates=inter, timings=timings)


def bf16_expansion(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a refinement in ``dtype`` expands its intermediate passes' shared offsets in bf16: on a CPU with bf16
    in hardware (AMX Xeon: the (512 × 512) · (512 × 4608) GEMM of a 512-channel layer 1.3 ms against 7.8 ms in float32,
    relative difference 4e-3)."""
    return device.type == "cpu" and dtype == torch.bfloat16 and native_bf16_cpu()


def shared_offsets(hypernet: HyperNetwork, hidden: torch.Tensor, count: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One image's offsets (out, in, k, k) of a shared layer from its summed hidden code (in, z), in float32 — the
    computation :meth:`gantune.io.record.SharedOffsets.expand` repeats when a record is rendered; a batch of codes
    (B, in, z) gives (B, out, in, k, k). ``dtype`` bfloat16: the same product in bf16 (not a record's bits)."""
    fc = hypernet.shared_fc
    return expand_shared(hidden.to(dtype, copy=True), fc.w1.to(dtype), fc.b1.to(dtype), count, fc.kernel)
