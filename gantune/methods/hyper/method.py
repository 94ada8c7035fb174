"""HyperStyle as an inversion method: loaded models + settings -> ``invert_batch(images, names)`` results.

Used by :func:`gantune.invert` and by ``gantune invert --method hyperstyle`` / ``gantune invert-hyper``.

The initial latent comes from the W-encoder (``faces_w_encoder.pt`` plus the HyperStyle file's ``latent_avg``, as the
paper), or from e4e / ReStyle-e4e (``--param initial=e4e|restyle-e4e``, or an e4e / ReStyle file given as
``--encoder``): then the codes are that encoder's own (its file's ``latent_avg``, ReStyle's iterations rendered with
the HyperStyle generator), and the hypernetwork refines from them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ...core import Generator, NOISE_MODES
from ...runtime import native_bf16_cpu
from ..pipeline import InvertOptions, MethodRun
from ...io.record import SharedOffsets
from ..result import InversionResult
from .domain import CARS, DOMAINS, SQUARE, crop_output, domain_of, input_hw, output_crop
from .checkpoint import DEFAULT_HYPERSTYLE, DEFAULT_W_ENCODER, HyperStyleModel, load_hyperstyle, load_w_encoder
from .hypernet import INPUT_SIZE, HyperNetwork
from .inference import refine
from .wencoder import WEncoder
from ...errors import InputError, WeightsError
from ...runtime import compile_synthesis, resolve_device, resolve_dtype
from ...weights import registry
from ...weights.download import resolve_all
from ...weights.formats import identify_file
from ..e4e.checkpoint import DEFAULTS, load_style_encoder
from ..e4e.method import check_pair, encode_e4e, encode_restyle

DEFAULT_ITERS = 5
INITIAL_KINDS = ("w-encoder", "e4e", "restyle-e4e")


def bf16_weights(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the inverter's networks hold bf16 weights for a run in ``dtype`` on ``device`` (see HyperStyle)."""
    return device.type == "cpu" and dtype == torch.bfloat16 and native_bf16_cpu()


@dataclass
class HyperStyle:
    """A ready HyperStyle inverter. Call it with (B, 3, H, W) images in [-1, 1] and their names."""

    G: Generator  # generator the hypernetwork was trained for
    hypernet: HyperNetwork
    w_encoder: WEncoder | None  # None when ``initial`` gives the codes
    latent_avg: torch.Tensor  # (num_ws, w_dim)
    iters: int = DEFAULT_ITERS  # hypernetwork passes
    noise_mode: str = "const"  # stored noise buffers, as the official inference
    dtype: torch.dtype = torch.float32  # encoder / hypernetwork / synthesis compute dtype
    keep_intermediates: bool = False  # return y_0 … y_T per image
    info: dict = field(default_factory=dict)  # checkpoint provenance (spec, path, sha256, load seconds, warnings)
    initial: object = None  # an e4e / ReStyle-e4e StyleEncoderModel giving the initial latent instead of the W-encoder
    initial_iters: int = 2  # ReStyle-e4e iterations for the initial latent (2 as the domain-adaptation script)
    domain: str = SQUARE  # cars: 192×256 inputs, the official crops, 512×384 outputs (see .domain)
    compiled_batch: int = 0  # > 0: the synthesis is compiled (runtime.compile_synthesis) for batches of this size,
    # to which smaller batches are padded (a new batch size would compile again)

    def __post_init__(self) -> None:
        """bf16 on a CPU with bf16 in hardware: the hypernetwork and the W-encoder (this object's own modules) hold
        bf16 weights, so that a pass reads 0.65 GB of head weights instead of converting 1.3 GB of float32 ones (AMX
        Xeon, 1024 px, 5 passes: hypernetwork 1.37 -> 0.93 s). Offsets still accumulate in float32."""
        if bf16_weights(self.dtype, self.device):
            self.hypernet.to(torch.bfloat16)
            if self.w_encoder is not None:
                self.w_encoder.to(torch.bfloat16)

    @classmethod
    def load(
        cls,
        weights: str | None = None,  # hyperstyle_*.pt: registry name, path or URL (default hyperstyle-ffhq)
        encoder: str | None = None,  # faces_w_encoder.pt (default w-encoder-ffhq), or an e4e / ReStyle-e4e file
        *,
        device="cpu",
        hash_files: bool = True,  # sha256 of both files for the records
        initial: str | None = None,  # w-encoder | e4e | restyle-e4e; None = what --encoder is (W-encoder by default)
        domain: str | None = None,  # square | cars; None = the checkpoint's opts.dataset_type, else its registry entry
        **settings,  # iters, noise_mode, dtype, keep_intermediates, initial_iters
    ) -> "HyperStyle":
        if initial is not None and initial not in INITIAL_KINDS:
            raise InputError(f"initial={initial!r}: expected one of {', '.join(INITIAL_KINDS)}")
        if encoder is None:
            encoder = DEFAULTS.get(initial or "", DEFAULT_W_ENCODER)
        weights = weights or DEFAULT_HYPERSTYLE
        paths = resolve_all({"--weights": weights, "--encoder": encoder})  # every missing file named in one message
        kind = _encoder_kind(paths["--encoder"])
        if initial is not None and kind != initial and not (initial == "w-encoder" and kind not in ("e4e", "restyle-e4e")):
            raise InputError(f"initial={initial} but --encoder {encoder} is a {kind} file",
                             f"give the {initial} file as --encoder, or drop --param initial")
        model: HyperStyleModel = load_hyperstyle(weights, device=device, hash_file=hash_files)
        if domain is not None and domain not in DOMAINS:
            raise InputError(f"domain={domain!r}: expected one of {', '.join(DOMAINS)}")
        settings["domain"] = domain or _detect_domain(model, weights)
        if settings["domain"] == CARS and kind in ("e4e", "restyle-e4e"):
            raise InputError(f"the cars domain takes its initial latent from the W-encoder, not a {kind} encoder",
                             "give the cars W-encoder (w-encoder-cars) as --encoder")
        if kind in ("e4e", "restyle-e4e"):
            init = load_style_encoder(encoder, kind=kind, device=device, hash_file=hash_files)
            check_pair(init, model.G, f"the {kind} encoder")
            info = dict(model.info, encoder={**init.info, "kind": kind})
            return cls(model.G, model.hypernet, None, model.latent_avg, info=info, initial=init, **settings)
        settings.pop("initial_iters", None)
        enc, enc_info = load_w_encoder(encoder, num_ws=model.G.num_ws, device=device,
                                       hash_file=hash_files)
        if enc.w_dim != model.G.cfg.w_dim:
            raise WeightsError(f"the W-encoder outputs w of size {enc.w_dim}, the generator needs {model.G.cfg.w_dim}",
                               "use the W-encoder published with the HyperStyle checkpoint")
        info = dict(model.info, encoder=enc_info)
        return cls(model.G, model.hypernet, enc, model.latent_avg, info=info, **settings)

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the photos are resized to: 256×256, cars 192×256 (the official ``Resize``)."""
        return input_hw(INPUT_SIZE, self.domain)

    def domain_meta(self) -> dict:
        """Record meta of a cars model: the crop of the generator output the record's images are."""
        crop = output_crop(self.G.cfg.resolution, self.domain)
        return {} if crop is None else {"output_crop": crop}

    def layers_meta(self) -> dict:
        """{layer: {"rosinality": "convs.8", "hyperstyle_index": 14, "head": "channel"}} for the records."""
        specs = {s.name: s for s in self.G.specs}
        return {lyr.name: {"rosinality": specs[lyr.name].rosinality, "hyperstyle_index": lyr.hyperstyle_index,
                           "head": lyr.head} for lyr in self.hypernet.layers}

    def record_meta(self) -> dict:
        gen = {k: self.info.get(k) for k in ("spec", "path", "sha256") if self.info.get(k) is not None}
        enc = {k: v for k, v in (self.info.get("encoder") or {}).items() if k in ("spec", "path", "sha256")}
        params = {"iters": self.iters, "noise_mode": self.noise_mode, "dtype": str(self.dtype).replace("torch.", ""),
                  "input_size": self.hypernet.input_size, "initial": self.initial_kind,
                  "encoder_input_size": (self.initial.encoder if self.initial is not None else self.w_encoder).input_size}
        if self.initial_kind == "restyle-e4e":
            params["initial_iters"] = self.initial_iters
        if self.domain != SQUARE:
            params["domain"] = self.domain
        return {
            **self.domain_meta(),
            "params": params,
            "generator": {**gen, "source": "hyperstyle checkpoint decoder", "config": self.G.cfg.to_dict()},
            "encoder": enc,
            "layers": self.layers_meta(),
        }

    @property
    def initial_kind(self) -> str:
        return "w-encoder" if self.initial is None else self.initial.kind

    def initial_codes(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, num_ws, w_dim) codes of the e4e / ReStyle-e4e encoder, or None for the W-encoder (refine computes them)."""
        if self.initial is None:
            return None

        if self.initial.kind == "e4e":
            return encode_e4e(self.initial, x, self.G)
        return encode_restyle(self.initial, x, self.G, iters=self.initial_iters, noise_mode=self.noise_mode).codes

    def __call__(self, images: torch.Tensor, names: list[str] | None = None) -> list[InversionResult]:
        names = names or [f"image{i}" for i in range(images.shape[0])]
        t0 = time.perf_counter()
        self.G.set_precision(self.dtype)
        x = images.to(self.device)
        if 0 < x.shape[0] < self.compiled_batch:  # the last batch of a folder: padded, the copies' results unused
            x = torch.cat([x, x[-1:].expand(self.compiled_batch - x.shape[0], -1, -1, -1)])
        if self.domain == CARS and x.shape[-1] * 3 != x.shape[-2] * 4:  # e.g. square API inputs: the centre 4:3
            h, w = x.shape[-2:]
            ch, cw = (w * 3 // 4, w) if w * 3 < h * 4 else (h, h * 4 // 3)
            x = x[..., (h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
        out = refine(x, G=self.G, hypernet=self.hypernet, w_encoder=self.w_encoder, codes=self.initial_codes(x),
                     own_modules=True,
                     latent_avg=self.latent_avg, iters=self.iters, noise_mode=self.noise_mode, dtype=self.dtype,
                     keep_intermediates=self.keep_intermediates, domain=self.domain)
        total = time.perf_counter() - t0
        b = images.shape[0]
        fc = self.hypernet.shared_fc
        w1 = b1 = None
        if out.shared:
            w1, b1 = fc.w1.detach().float().cpu().contiguous(), fc.b1.detach().float().cpu().contiguous()
        results = []
        for i, name in enumerate(names):
            shared = None
            if out.shared:
                shared = SharedOffsets({k: v[i].detach().float().cpu().contiguous() for k, v in out.shared.items()},
                                       w1, b1, out.shared_count, fc.kernel)
            results.append(InversionResult(
                name=name,
                image=crop_output(out.images[i], self.domain).detach().float().cpu(),
                latent=out.codes[i].detach().float().cpu(),
                latent_kind="w+",
                method="hyperstyle",
                deltas={k: v[i].detach().float().cpu() for k, v in out.deltas.items() if k not in out.shared},
                shared=shared,
                intermediates=[crop_output(y[i], self.domain).detach().float().cpu() for y in out.intermediates],
                meta={"params": {"iters": self.iters, "noise_mode": self.noise_mode, "initial": self.initial_kind,
                                 **({"initial_iters": self.initial_iters} if self.initial_kind == "restyle-e4e" else {}),
                                 **({"domain": self.domain} if self.domain != SQUARE else {})},
                      **self.domain_meta()},
                timings={"invert": total / b, **{k: v / b for k, v in out.timings.items()}},
            ))
        return results


DEFAULT_INITIAL_ITERS = 2  # ReStyle-e4e iterations for the initial latent (the domain-adaptation script's default)


def _detect_domain(model: HyperStyleModel, weights) -> str:
    """The checkpoint's ``opts.dataset_type`` (what the official scripts read), else its registry entry's file name
    (``hyperstyle_cars.pt``), else square."""
    found = domain_of(model.info.get("dataset_type"))
    if found is not None:
        return found

    if str(weights) in registry.names() and "cars" in registry.get(str(weights)).file:
        return CARS
    return SQUARE


def _encoder_kind(path) -> str:
    return identify_file(path)[0]


def setup_hyperstyle(opts: InvertOptions) -> MethodRun:
    """The registry's ``hyperstyle``: load once, return the batch callable for :func:`run_pipeline`."""

    unknown = sorted(set(opts.params) - {"initial", "initial_iters", "domain"})
    if unknown:
        raise InputError(f"hyperstyle takes --param initial=w-encoder|e4e|restyle-e4e, initial_iters=N and "
                         f"domain=square|cars, not "
                         f"{', '.join(unknown)}", "see gantune invert --help")
    initial = opts.params.get("initial") or None
    try:
        initial_iters = int(opts.params.get("initial_iters", DEFAULT_INITIAL_ITERS))
    except ValueError:
        raise InputError(f"--param initial_iters={opts.params['initial_iters']!r} is not an integer") from None
    if initial_iters < 1:
        raise InputError(f"--param initial_iters={initial_iters}: ReStyle-e4e needs at least one iteration")
    if opts.noise not in NOISE_MODES:
        raise InputError(f"--noise {opts.noise!r}: expected one of {', '.join(NOISE_MODES)}")
    iters = DEFAULT_ITERS if opts.iters is None else opts.iters
    if iters < 1:
        raise InputError(f"--iters {iters}: HyperStyle needs at least one refinement pass")
    hs = HyperStyle.load(opts.weights, opts.encoder, device=resolve_device(opts.device), iters=iters,
                         initial=initial, initial_iters=initial_iters, domain=opts.params.get("domain") or None,
                         noise_mode=opts.noise, dtype=resolve_dtype(opts.dtype, opts.device),
                         keep_intermediates=opts.save_intermediate)
    if opts.compile:
        compile_synthesis(hs.G, hs.device)
        hs.compiled_batch = opts.batch_size
    desc = (f"HyperStyle: {len(hs.hypernet.layers)} tuned layers, {iters} iterations, generator "
            f"{hs.G.cfg.resolution}px, on {hs.device}")
    if hs.initial is not None:
        desc += f"; initial latent from {hs.initial_kind}" + (
            f" ({hs.initial_iters} iterations)" if hs.initial_kind == "restyle-e4e" else "")
    if hs.domain != SQUARE:
        desc += f"; {hs.domain} domain, {hs.input_size[1]}x{hs.input_size[0]} inputs"
    for w in hs.info.get("warnings", []):
        desc += f"\nwarning: {w}"
    return MethodRun(invert_batch=hs, input_size=hs.input_size, record_meta=hs.record_meta(), describe=desc)
