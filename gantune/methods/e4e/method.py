"""e4e and ReStyle-e4e as inversion methods (encoder only: one or a few forward passes, W+ codes, no offsets).

* e4e: ``codes = E(x) + latent_avg``, rendered once.
* ReStyle-e4e, as the official ``restyle_inference_utils.run_on_batch``: the first input is x concatenated with the
  average image ``ȳ₀ = pool(G(latent_avg))``, and its codes are offsets from ``latent_avg``; every later input is x
  concatenated with the previous reconstruction (pooled to the encoder's input size, not clamped), and its codes are
  offsets from the previous codes. Rendering uses the stored noise buffers (``randomize_noise=False``).

The generator is given separately (``--weights``; the registry's ``ffhq-1024`` by default, the generator the FFHQ
encoders were trained with), so records name a generator that ``edit`` / ``adapt`` load as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ...core import Generator, NOISE_MODES
from ...errors import InputError, WeightsError
from ..hyper.inference import encoder_layout, face_pool, render, to_input_size
from ..pipeline import InvertOptions, MethodRun
from ..result import InversionResult
from .checkpoint import DEFAULTS, StyleEncoderModel, load_style_encoder
from ...runtime import resolve_device
from ...weights import load_generator
from ...weights.download import resolve_all

DEFAULT_GENERATOR = "ffhq-1024"
RESTYLE_ITERS = 5  # ReStyle's inference default (test_options n_iters_per_batch)
RESTYLE_ADAPT_ITERS = 2  # HyperStyle's domain-adaptation script (--restyle_n_iterations)


def check_pair(model: StyleEncoderModel, G: Generator, source: str = "the encoder") -> None:
    enc = model.encoder
    if enc.num_ws != G.num_ws or enc.w_dim != G.cfg.w_dim:
        raise WeightsError(f"{source} predicts ({enc.num_ws}, {enc.w_dim}) codes; the generator needs "
                           f"({G.num_ws}, {G.cfg.w_dim})", "use the generator the encoder was trained with")


def average_latent(model: StyleEncoderModel, G: Generator) -> torch.Tensor:
    """(num_ws, w_dim): the file's latent_avg, or the generator's w_avg where the file has none."""
    if model.latent_avg is not None:
        return model.latent_avg.float()
    return G.w_avg.detach().float().reshape(1, -1).expand(G.num_ws, -1)


@torch.no_grad()
def encode_e4e(model: StyleEncoderModel, x: torch.Tensor, G: Generator) -> torch.Tensor:
    """(B, num_ws, w_dim) W+ codes of x (B, 3, H, W) in [-1, 1]."""
    enc = model.encoder
    codes = enc(encoder_layout(to_input_size(x, enc.input_size))).float()
    if model.add_latent_avg:
        codes = codes + average_latent(model, G).to(codes.device)[None]
    return codes


@dataclass
class ReStyleOutput:
    codes: torch.Tensor  # (B, num_ws, w_dim) after the last iteration
    images: torch.Tensor  # (B, 3, H, W) G(codes) at full resolution, not clamped
    intermediates: list[torch.Tensor] = field(default_factory=list)  # G(codes_t) after each iteration


@torch.no_grad()
def encode_restyle(model: StyleEncoderModel, x: torch.Tensor, G: Generator, *, iters: int,
                   noise_mode: str = "const", keep_intermediates: bool = False) -> ReStyleOutput:
    """ReStyle-e4e's iterations on x (B, 3, H, W) in [-1, 1]."""
    if iters < 1:
        raise InputError(f"ReStyle-e4e needs at least one iteration (got {iters})")
    enc = model.encoder
    if enc.in_channels != 6:
        raise WeightsError(f"the ReStyle-e4e encoder takes {enc.in_channels} input channels, not 6")
    size = enc.input_size
    xs = to_input_size(x, size)
    avg = average_latent(model, G).to(xs.device)
    y_hat = face_pool(render(G, avg[None], noise_mode=noise_mode), size).expand(xs.shape[0], -1, -1, -1)
    codes, y, inter = avg[None], None, []
    for _ in range(iters):
        codes = enc(encoder_layout(torch.cat([xs, y_hat], 1))).float() + codes
        y = render(G, codes, noise_mode=noise_mode)
        if keep_intermediates:
            inter.append(y)
        y_hat = face_pool(y, size)
    return ReStyleOutput(codes=codes, images=y, intermediates=inter)


@dataclass
class EncoderInversion:
    """A ready e4e / ReStyle-e4e inverter for the pipeline: (B, 3, H, W) images, names -> results."""

    G: Generator
    model: StyleEncoderModel
    iters: int = 1  # ReStyle iterations (e4e: one pass)
    noise_mode: str = "const"
    keep_intermediates: bool = False
    generator_info: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.model.kind

    def record_meta(self) -> dict:
        pick = ("spec", "name", "path", "sha256")
        gen = {k: v for k, v in self.generator_info.items() if k in pick and v is not None}
        enc = {k: v for k, v in self.model.info.items() if k in pick and v is not None}
        params = {"noise_mode": self.noise_mode, "encoder_input_size": self.model.encoder.input_size}
        if self.method == "restyle-e4e":
            params["iters"] = self.iters
        return {"params": params, "generator": {**gen, "config": self.G.cfg.to_dict()},
                "encoder": {**enc, "kind": self.method}}

    def __call__(self, images: torch.Tensor, names: list[str] | None = None) -> list[InversionResult]:
        names = names or [f"image{i}" for i in range(images.shape[0])]
        dev = self.G.w_avg.device
        t0 = time.perf_counter()
        x = images.to(dev)
        if self.method == "e4e":
            codes = encode_e4e(self.model, x, self.G)
            t1 = time.perf_counter()
            with torch.no_grad():
                y = render(self.G, codes, noise_mode=self.noise_mode)
            inter = [y] if self.keep_intermediates else []
            timings = {"encode": t1 - t0, "render": time.perf_counter() - t1}
        else:
            out = encode_restyle(self.model, x, self.G, iters=self.iters, noise_mode=self.noise_mode,
                                 keep_intermediates=self.keep_intermediates)
            codes, y, inter = out.codes, out.images, out.intermediates
            timings = {"encode": time.perf_counter() - t0}
        b = images.shape[0]
        total = time.perf_counter() - t0
        params = {"noise_mode": self.noise_mode, **({"iters": self.iters} if self.method == "restyle-e4e" else {})}
        return [InversionResult(name=name, image=y[i].detach().float().cpu(), latent=codes[i].detach().float().cpu(),
                                latent_kind="w+", method=self.method,
                                intermediates=[t[i].detach().float().cpu() for t in inter],
                                meta={"params": params}, timings={"invert": total / b, **{k: v / b for k, v in timings.items()}})
                for i, name in enumerate(names)]


def _setup(kind: str, opts: InvertOptions) -> MethodRun:
    if opts.params:
        raise InputError(f"{kind} takes no --param ({', '.join(sorted(opts.params))})", "see gantune invert --help")
    if opts.noise not in NOISE_MODES:
        raise InputError(f"--noise {opts.noise!r}: expected one of {', '.join(NOISE_MODES)}")
    if kind == "e4e" and opts.iters not in (None, 1):
        raise InputError(f"--iters {opts.iters}: e4e is a single forward pass", "use --method restyle-e4e to iterate")
    iters = 1 if kind == "e4e" else (RESTYLE_ITERS if opts.iters is None else opts.iters)
    if iters < 1:
        raise InputError(f"--iters {iters}: ReStyle-e4e needs at least one iteration")

    gen_spec, enc_spec = opts.weights or DEFAULT_GENERATOR, opts.encoder or DEFAULTS[kind]
    resolve_all({"--weights": gen_spec, "--encoder": enc_spec})
    device = resolve_device(opts.device)
    model = load_style_encoder(enc_spec, kind=kind, device=device)
    G, ginfo = load_generator(gen_spec, device=device)
    check_pair(model, G, f"the {kind} encoder")
    inv = EncoderInversion(G.eval(), model, iters=iters, noise_mode=opts.noise, keep_intermediates=opts.save_intermediate,
                           generator_info={**ginfo, "spec": str(gen_spec)})
    desc = (f"{kind}: {model.encoder.num_ws} style rows, "
            + (f"{iters} iterations, " if kind == "restyle-e4e" else "")
            + f"generator {G.cfg.resolution}px, on {device}")
    return MethodRun(invert_batch=inv, input_size=model.encoder.input_size, record_meta=inv.record_meta(), describe=desc)


def setup_e4e(opts: InvertOptions) -> MethodRun:
    """The registry's ``e4e`` method."""
    return _setup("e4e", opts)


def setup_restyle_e4e(opts: InvertOptions) -> MethodRun:
    """The registry's ``restyle-e4e`` method."""
    return _setup("restyle-e4e", opts)
