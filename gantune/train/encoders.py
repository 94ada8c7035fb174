"""Training the HyperStyle W-encoder and hypernetwork for any generator gantune can load.

W-encoder (initial latent; HyperStyle App. G trained it with the e4e code, one w for all layers):

    x ──resize 256──▶ E ──▶ w − w_avg ──+w_avg──▶ G.synthesis (stored noise) ──▶ ŷ
    loss = λ_l2·L2(ŷ, x) + λ_p·perceptual(ŷ, x) [+ λ_lat·‖w_pred − w_true‖² for generator samples]

Hypernetwork (paper §3.4–3.5; the official training loop, coach_hyperstyle.py): codes = E(x) + w_avg are fixed
(E frozen), ŷ₀ = G(codes); for t = 1…T: Δ_t = H(x, ŷ_{t−1}), Σ_t = sg(Σ_{t−1}) + Δ_t, y_t = G(codes; θ⊙(1+Σ_t)),
loss_t is back-propagated at once, and ŷ_t = sg(y_t) feeds the next pass (sg = detach, as the reference: gradients
never flow through earlier passes). One optimizer step per batch, Ranger (RAdam + Lookahead).
loss_t = λ_l2·L2 + λ_p·perceptual + λ_sim·identity; the identity term is dlib's face-recognition ResNet for targets
with a detected face (``identity`` option), see :mod:`.substitutes` for it and for the networks that stand in for
LPIPS and the identity network when those are unavailable.

Data: ``synthetic`` = images rendered by the generator itself from random z (w is known, so a latent loss is
possible for the W-encoder; ``truncation`` ψ < 1 draws closer to the average face), ``synthetic-faces`` (the DCGAN of
:mod:`gantune.train.data`) or a folder of images.

Outputs are the official file layouts, so ``gantune invert --method hyperstyle --weights HYPERNET --encoder ENCODER``
loads them with the existing importers (:mod:`gantune.methods.hyper.checkpoint`, whose writers write them):

* W-encoder: ``{'state_dict': {'encoder.*'}, 'opts', 'latent_avg'}`` (the decoder is not stored: HyperStyle ignores it);
* hypernetwork: ``{'state_dict': {'hypernet.*' (official names), 'decoder.*' (rosinality)}, 'opts', 'latent_avg',
  'global_step'}``. The decoder is the rosinality form of the generator, which has noise inputs and a 0.01 mapping
  learning-rate multiplier: :func:`hyperstyle_generator` converts other generators to an exactly equivalent one
  (zero noise strength and buffers, rescaled mapping weights; an overparameterized generator becomes its standard
  W+ form) and training runs on that converted generator.

Resume: ``OUT/train_state.pt`` holds the model, optimizer (incl. Lookahead slow weights), step and data RNG state;
``resume=True`` continues from it. The loadable model file is rewritten at every checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..accel import accelerate
from ..core import Generator, GeneratorConfig
from ..core.specs import select_layers
from ..errors import InputError, WeightsError
from ..io.atomic import atomic_path
from ..io.manifest import append_jsonl
from ..methods.hyper.checkpoint import layers_to_tune, write_hyperstyle_file, write_w_encoder_file
from ..methods.hyper.hypernet import HyperNetwork, default_heads
from ..methods.hyper.inference import face_pool, render, to_input_size
from ..methods.hyper.wencoder import IR_SE_50_UNITS, WEncoder
from .checkpoint import remove_stale_temp_files
from .data import open_source
from .ranger import ranger
from .substitutes import IdentityLoss, Term, identity_term, perceptual_term

SYNTHETIC = "synthetic"  # images rendered by the generator being inverted (known w)
W_ENCODER_FILE = "w_encoder.pt"
HYPERNET_FILE = "hypernet.pt"
STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"
ROSINALITY_LR_MUL = 0.01


# --- generator in the form the HyperStyle file layout can hold -----------------------------------------------------------
def hyperstyle_generator(G: Generator) -> tuple[Generator, list[str]]:
    """An equivalent generator that the rosinality decoder layout can store, and notes on what was converted.

    * no noise inputs -> noise inputs with strength 0 and zero buffers (renders identically in every noise mode);
    * mapping lr multiplier ≠ 0.01 -> stored mapping weights/biases rescaled (the effective weights are unchanged);
    * overparameterized (latent_rows > 0) -> the standard generator on the same weights (HyperStyle works in W+).
    A clamp on pre-activations (``conv_clamp``) has no rosinality equivalent and is refused.
    """
    cfg = G.cfg
    if cfg.conv_clamp is not None:
        raise WeightsError(f"the generator clamps pre-activations (conv_clamp={cfg.conv_clamp}), which the HyperStyle "
                           "(rosinality) decoder layout cannot express", "use a generator trained without conv_clamp")
    notes = []
    new = dict(cfg.to_dict())
    if not cfg.use_noise:
        new["use_noise"] = True
        notes.append("generator without noise inputs stored with noise strength 0 (identical images)")
    if cfg.latent_rows:
        new["latent_rows"] = 0
        notes.append("overparameterized generator used in its standard W+ form")
    if cfg.mapping_lr_mul != ROSINALITY_LR_MUL:
        new["mapping_lr_mul"] = ROSINALITY_LR_MUL
        notes.append(f"mapping lr multiplier {cfg.mapping_lr_mul} stored as 0.01 (weights rescaled, same outputs)")
    if not notes:
        return G, notes
    G2 = accelerate(Generator(GeneratorConfig.from_dict(new)).to(next(G.parameters()).device))
    src = G.state_dict()
    dst = G2.state_dict()
    scale = cfg.mapping_lr_mul / ROSINALITY_LR_MUL
    with torch.no_grad():
        for k, v in dst.items():
            if k in src:
                val = src[k]
                if k.startswith("mapping.fcs.") and scale != 1.0:
                    val = val * scale
                v.copy_(val)
            elif k.endswith("noise_strength") or k.endswith("noise_const"):
                v.zero_()
            else:
                raise WeightsError(f"cannot convert the generator for HyperStyle: no value for {k}")
    extra = [k for k in src if k not in dst]
    if extra:
        raise WeightsError(f"cannot convert the generator for HyperStyle: {', '.join(extra[:4])} have no place")
    return G2.eval().requires_grad_(False), notes


# --- data ------------------------------------------------------------------------------------------------------------
class GeneratorSamples:
    """Images rendered by G from random z (stored noise), with their w: unlimited, and the latent is known."""

    name = SYNTHETIC

    def __init__(self, G: Generator, *, truncation: float = 1.0) -> None:
        self.G, self.truncation = G, truncation

    @torch.no_grad()
    def sample_with_w(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.G.mapping.w_avg.device
        z = torch.randn(batch, self.G.cfg.z_dim, generator=generator).to(dev)
        ws = self.G.map(z, truncation=self.truncation)  # (B, num_ws, w_dim), equal rows
        return self.G.synthesis(ws, noise_mode="const").float().clamp(-1, 1), ws[:, 0]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_with_w(batch, generator)[0]

    def describe(self) -> dict:
        return {"data": SYNTHETIC, "truncation": self.truncation}


def open_data(spec: str, G: Generator, *, truncation: float = 1.0, device="cpu"):
    """``synthetic`` (generator samples), ``synthetic-faces`` or a folder of images at the generator's resolution."""
    if spec == SYNTHETIC:
        return GeneratorSamples(G, truncation=truncation)

    return open_source(spec, G.cfg.resolution, device)


def _batch(data, batch: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(data, GeneratorSamples):
        x, w = data.sample_with_w(batch, gen)
        return x.to(device), w.to(device)
    return data.sample(batch, gen).to(device).float(), None


# --- options and results ---------------------------------------------------------------------------------------------
@dataclass
class EncoderTrainOptions:
    """Settings shared by both trainers (the CLI fills these from its flags)."""

    steps: int = 1000  # optimizer steps (batches) in total, counting steps done before a resume
    batch_size: int = 4  # images per batch (reference: 8 for the hypernetwork)
    lr: float = 1e-4  # Ranger learning rate (reference 1e-4)
    l2_lambda: float = 1.0  # weight of the pixel L2 term (reference 1)
    perceptual_lambda: float = 0.8  # weight of LPIPS or its MS-SSIM substitute (reference lpips_lambda 0.8)
    sim_lambda: float = 0.1  # weight of the identity term or its substitute (reference id_lambda 0.1)
    identity: str = "auto"  # auto | dlib | off: dlib's face network where the target has a face (see substitutes)
    latent_lambda: float = 1.0  # W-encoder on generator samples only: weight of ‖w_pred − w_true‖²
    lpips_net: str = "alex"  # LPIPS backbone of the reference (alex)
    seed: int = 0  # model init and data order
    save_every: int = 100  # write the model file and the resume state every this many steps
    truncation: float = 1.0  # ψ for ``synthetic`` data
    noise_mode: str = "const"  # generator noise while training (HyperStyle: stored buffers)
    width: int = 64  # encoder stem channels (official 64; 16 or 32 give compact models for small generators)
    input_size: int = 256  # side of the encoders' input images (official 256; 64 suits a 32–64 px generator)


@dataclass
class TrainResult:
    """What a training run returns."""

    model_path: Path  # the loadable file (official layout)
    state_path: Path  # resume state
    step: int  # optimizer steps done in total
    losses: list[dict] = field(default_factory=list)  # one dict per step of this run (total and terms)
    notes: list[str] = field(default_factory=list)  # substitutes used, generator conversions


def _losses(y: torch.Tensor, x: torch.Tensor, opts: EncoderTrainOptions, perc: Term, sim: Term | None):
    """Per-batch scalar loss and its terms (floats)."""
    l2 = (y - x).square().mean()
    total = opts.l2_lambda * l2
    terms = {"l2": l2}
    if opts.perceptual_lambda:
        p = perc.fn(y, x).mean()
        total = total + opts.perceptual_lambda * p
        terms[perc.name] = p
    if sim is not None and opts.sim_lambda:
        s = sim.fn(y, x).mean()
        total = total + opts.sim_lambda * s
        terms[sim.name] = s
        if isinstance(sim.fn, IdentityLoss):
            terms["id_faces"] = torch.tensor(sim.fn.last_face_share)  # share of targets with a face (not a loss)
    return total, terms


def _describe_losses(perc: Term, sim: Term | None, sim_note: str, opts: EncoderTrainOptions) -> list[str]:
    notes = [f"perceptual term: {perc.description}"]
    if sim is not None and opts.sim_lambda:
        notes.append(f"identity term (λ {opts.sim_lambda:g}): {sim_note}")
    else:
        notes.append(sim_note if sim is None else "identity term off (λ_sim = 0)")
    return notes


def _id_lambda(sim: Term | None, opts: EncoderTrainOptions) -> float:
    """The weight of a real identity network in the loss (the files' ``id_lambda``; the substitute does not count)."""
    return float(opts.sim_lambda) if sim is not None and isinstance(sim.fn, IdentityLoss) else 0.0


def _loss_terms(opts: EncoderTrainOptions, device, discriminator, perceptual):
    perc = perceptual or perceptual_term(opts.lpips_net, device=device)
    sim, sim_note = identity_term(opts.identity, discriminator.to(device) if discriminator is not None else None,
                                  device=device)
    return perc, sim, _describe_losses(perc, sim, sim_note, opts)


def _save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_state(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no training state to resume from", "start without --resume")
    return torch.load(path, map_location="cpu", weights_only=True)


def _latent_avg(G: Generator) -> torch.Tensor:
    return G.mapping.w_avg.detach().float().cpu()[None].repeat(G.num_ws, 1)  # (num_ws, w_dim), as the reference


# --- what both trainers share ----------------------------------------------------------------------------------------
def _start(G: Generator, opts: EncoderTrainOptions | None, device, out_dir) -> tuple:
    """(options, device, output folder, generator, notes): the defaults filled in, what a killed run was writing
    removed, and the generator in its HyperStyle form (see :func:`hyperstyle_generator`), frozen on the device."""
    opts = opts or EncoderTrainOptions()
    device = torch.device(device)
    out_dir = Path(out_dir)
    remove_stale_temp_files(out_dir)  # what a killed run was writing
    G, notes = hyperstyle_generator(G)
    return opts, device, out_dir, G.to(device).eval().requires_grad_(False), notes


def _restore(st: dict, model: torch.nn.Module, opt, gen: torch.Generator, notes: list[str]) -> int:
    """Model, optimizer and data RNG from a training state; returns the step it was saved at."""
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    gen.set_state(st["data_rng"])
    step = int(st["step"])
    notes.append(f"resumed at step {step}")
    return step


def _save_state(path: Path, kind: str, step: int, model: torch.nn.Module, opt, gen: torch.Generator, **arch) -> None:
    """The resume state: ``kind``, ``step``, the architecture, model, optimizer (Lookahead slow weights included) and
    data RNG."""
    _save({"kind": kind, "step": step, **arch, "model": model.state_dict(), "optimizer": opt.state_dict(),
           "data_rng": gen.get_state()}, path)


def _meta(step: int, notes: list[str], opts: EncoderTrainOptions, data, sim: Term | None, **extra) -> dict:
    """gantune's own record in a model file's opts (``extra`` before the identity term's name)."""
    return {"step": step, "notes": notes, "options": asdict(opts), "data": data.describe(), **extra,
            "identity": sim.name if sim is not None else "off"}


def _loop(opts: EncoderTrainOptions, step: int, one_step: Callable[[int], dict], checkpoint: Callable[[int], None],
          out_dir: Path, model_path: Path, notes: list[str], on_step, on_notes) -> TrainResult:
    """The training loop both trainers share: ``one_step(n)`` trains on one batch and returns its row of losses
    (step ``n``); each row is timed, logged and reported, and ``checkpoint(step)`` writes the model file and the
    resume state every ``save_every`` steps and at the end."""
    for n in notes if on_notes else ():
        on_notes(n)
    log, losses = out_dir / LOG_FILE, []
    while step < opts.steps:
        t0 = time.perf_counter()
        row = one_step(step + 1)
        step += 1
        row["seconds"] = round(time.perf_counter() - t0, 4)
        losses.append(row)
        append_jsonl(log, {"status": "ok", **row})
        if on_step:
            on_step(step, row)
        if step % opts.save_every == 0 or step == opts.steps:
            checkpoint(step)
    if not model_path.is_file():
        checkpoint(step)
    return TrainResult(model_path, out_dir / STATE_FILE, step, losses, notes)


def _floats(terms: dict) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


# --- W-encoder -------------------------------------------------------------------------------------------------------
def save_w_encoder(enc: WEncoder, G: Generator, path: str | Path, *, opts: dict | None = None) -> Path:
    """The official ``faces_w_encoder.pt`` layout (encoder keys only), loadable by ``load_w_encoder``."""
    meta = {"encoder_type": "WEncoder", "output_size": G.cfg.resolution, "units": list(enc.units),
            "n_styles": G.num_ws, "input_size": enc.input_size, **(opts or {})}
    return write_w_encoder_file(path, enc, _latent_avg(G), opts=meta)


def _w_encoder_to_train(G: Generator, arch: dict, opts: EncoderTrainOptions, device):
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, **arch).to(device).train()
    return enc, ranger(enc.parameters(), lr=opts.lr)


def train_w_encoder(
    G: Generator,  # the generator to invert (frozen)
    data,  # GeneratorSamples, or a source with ``sample(batch, torch.Generator)`` (synthetic-faces, ImageFolder)
    out_dir: str | Path,  # gets w_encoder.pt, train_state.pt, log.jsonl
    *,
    opts: EncoderTrainOptions | None = None,  # settings (defaults: the reference's)
    units: tuple[int, ...] = IR_SE_50_UNITS,  # IR-SE units per stage; (3, 4, 14, 3) = IR-SE-50, smaller for tiny models
    device="cpu",
    resume: bool = False,  # continue from out_dir/train_state.pt
    discriminator: torch.nn.Module | None = None,  # trained D for the identity substitute (targets without a face)
    perceptual: Term | None = None,  # override the perceptual term (tests); default LPIPS or MS-SSIM
    on_step: Callable[[int, dict], None] | None = None,  # called after every step with (step, losses)
    on_notes: Callable[[str], None] | None = None,  # called once per note (substitutes, conversions) before training
) -> TrainResult:
    opts, device, out_dir, G, notes = _start(G, opts, device, out_dir)
    perc, sim, loss_notes = _loss_terms(opts, device, discriminator, perceptual)
    notes += loss_notes
    if isinstance(data, GeneratorSamples):
        data.G = G
        notes.append(f"data: generator samples (ψ={data.truncation}) with known w; latent loss λ_lat={opts.latent_lambda}")
    torch.manual_seed(opts.seed)
    arch = {"units": tuple(units), "width": opts.width, "input_size": opts.input_size}
    enc, opt = _w_encoder_to_train(G, arch, opts, device)
    gen = torch.Generator().manual_seed(opts.seed)
    step = 0
    if resume:
        st = _load_state(out_dir / STATE_FILE)
        saved = {"units": tuple(st["units"]), "width": st.get("width", 64), "input_size": st.get("input_size", 256)}
        if saved != arch:
            arch = saved
            notes.append(f"architecture from the training state: {saved}")
            enc, opt = _w_encoder_to_train(G, arch, opts, device)
        step = _restore(st, enc, opt, gen, notes)
    w_avg = G.mapping.w_avg.detach()
    model_path = out_dir / W_ENCODER_FILE

    def checkpoint(step: int) -> None:
        save_w_encoder(enc, G, model_path, opts={"id_lambda": _id_lambda(sim, opts),
                                                 "gantune": _meta(step, notes, opts, data, sim)})
        _save_state(out_dir / STATE_FILE, "w-encoder", step, enc, opt, gen, units=list(arch["units"]), width=enc.width,
                    input_size=enc.input_size)

    def one_step(n: int) -> dict:
        x, w_true = _batch(data, opts.batch_size, gen, device)
        w_pred = enc(to_input_size(x, enc.input_size))[:, 0] + w_avg  # (B, w_dim)
        y = G.synthesis(w_pred, noise_mode=opts.noise_mode).float()
        total, terms = _losses(y, x, opts, perc, sim)
        if w_true is not None and opts.latent_lambda:
            lat = (w_pred - w_true).square().mean()
            total = total + opts.latent_lambda * lat
            terms["latent"] = lat
        opt.zero_grad()
        total.backward()
        opt.step()
        return {"step": n, "loss": float(total.detach()), **_floats(terms)}

    return _loop(opts, step, one_step, checkpoint, out_dir, model_path, notes, on_step, on_notes)


# --- hypernetwork ----------------------------------------------------------------------------------------------------
def save_hypernet(H: HyperNetwork, G: Generator, path: str | Path, *, step: int = 0, opts: dict | None = None) -> Path:
    """The official ``hyperstyle_*.pt`` layout (``hypernet.*`` + rosinality ``decoder.*``), loadable by
    ``load_hyperstyle`` and ``gantune invert --method hyperstyle``. ``G`` must be rosinality-expressible
    (see :func:`hyperstyle_generator`)."""
    meta = {"encoder_type": "SharedWeightsHyperNetResNet", "input_nc": 6, "output_size": G.cfg.resolution,
            "layers_to_tune": layers_to_tune(H), "input_size": H.input_size, **(opts or {})}
    return write_hyperstyle_file(path, G, H, _latent_avg(G), opts=meta, global_step=step, best_val_loss=None)


def hypernet_layers(G: Generator, *, levels=("medium", "fine"), names: list[str] | None = None,
                    include_torgb: bool = False):
    """Tuned layers (default: HyperStyle's medium + fine non-toRGB convs) with their head kinds."""
    kinds = ("conv", "torgb") if include_torgb else ("conv",)
    try:
        chosen = select_layers(G.specs, names=names) if names else select_layers(G.specs, levels=tuple(levels), kinds=kinds)
    except ValueError as e:
        raise InputError(str(e)) from None
    if not chosen:
        raise InputError(f"no generator layers at level(s) {', '.join(levels)}", "choose other --levels or --layers")
    size = max(s.in_ch for s in G.specs)
    return default_heads(G.specs, [s.name for s in chosen], shared_size=size), size


def _hypernet_to_train(G: Generator, opts: EncoderTrainOptions, st: dict | None, init: HyperNetwork | None, *, levels,
                       layers, include_torgb: bool, device, notes: list[str]) -> HyperNetwork:
    """The network to train: ``init`` (fine-tuning), or a new one for the chosen layers (those of the training state
    when resuming, with its width and input size)."""
    width, input_size = opts.width, opts.input_size
    if st is not None:
        layers, include_torgb = list(st["layers"]), False
        width, input_size = st.get("width", 64), st.get("input_size", 256)
    torch.manual_seed(opts.seed)
    if init is not None and st is None:
        H = init.to(device).train()
        notes.append(f"starting from the given hypernetwork ({len(H.layers)} tuned layers)")
        return H
    tuned, size = hypernet_layers(G, levels=levels, names=layers, include_torgb=include_torgb)
    return HyperNetwork(tuned, shared_size=size, width=width, input_size=input_size).to(device).train()


def _hypernet_step(H: HyperNetwork, G: Generator, encoder: WEncoder, x: torch.Tensor, w_avg: torch.Tensor, *,
                   iters: int, opts: EncoderTrainOptions, perc: Term, sim: Term | None, row: dict) -> dict:
    """One batch: ``iters`` refinement passes, a loss and a backward at each (gradients never flow through earlier
    passes); the losses go into ``row``. The caller steps the optimizer."""
    x_h = to_input_size(x, H.input_size)
    with torch.no_grad():
        codes = encoder(to_input_size(x, encoder.input_size)).float() + w_avg  # (B, num_ws, w_dim), fixed per batch
        y_hat = render(G, codes, None, noise_mode=opts.noise_mode)
    acc: dict[str, torch.Tensor] = {}
    for t in range(1, iters + 1):
        new = H(x_h, face_pool(y_hat, H.input_size))
        acc = {k: (acc[k].detach() + d if k in acc else d) for k, d in new.items()}
        y = render(G, codes, acc, noise_mode=opts.noise_mode)
        total, terms = _losses(y, x, opts, perc, sim)
        total.backward()
        y_hat = y.detach()
        row[f"loss_t{t}"] = float(total.detach())
        if t == iters:
            row.update({"loss": float(total.detach()), **_floats(terms)})
    return row


def train_hypernet(
    G: Generator,  # the generator (frozen); converted with hyperstyle_generator
    encoder: WEncoder,  # trained W-encoder (frozen, eval mode): gives the initial codes
    data,  # as for train_w_encoder
    out_dir: str | Path,  # gets hypernet.pt, train_state.pt, log.jsonl
    *,
    opts: EncoderTrainOptions | None = None,  # settings (defaults: the reference's)
    iters: int = 5,  # refinement passes T per batch, a loss and a backward at each (reference n_iters_per_batch 5)
    levels: tuple[str, ...] = ("medium", "fine"),  # tuned layer levels (ignored when ``layers`` is given)
    layers: list[str] | None = None,  # explicit layer names (gantune or rosinality)
    include_torgb: bool = False,  # tune the toRGB layers of those levels too
    device="cpu",
    resume: bool = False,
    discriminator: torch.nn.Module | None = None,
    perceptual: Term | None = None,
    init: HyperNetwork | None = None,  # start from these weights (fine-tuning); its layers replace levels/layers
    on_step: Callable[[int, dict], None] | None = None,
    on_notes: Callable[[str], None] | None = None,
) -> TrainResult:
    if iters < 1:
        raise InputError(f"--iters {iters}: at least one refinement pass per batch")
    opts, device, out_dir, G, notes = _start(G, opts, device, out_dir)
    if encoder.w_dim != G.cfg.w_dim:
        raise InputError(f"the W-encoder outputs w of size {encoder.w_dim}, the generator needs {G.cfg.w_dim}")
    encoder = encoder.to(device).eval().requires_grad_(False)
    perc, sim, loss_notes = _loss_terms(opts, device, discriminator, perceptual)
    notes += loss_notes
    if init is None:
        notes.append("hypernetwork backbone initialised randomly (no ImageNet ResNet34 weights are fetched)")
    st = _load_state(out_dir / STATE_FILE) if resume else None
    H = _hypernet_to_train(G, opts, st, init, levels=levels, layers=layers, include_torgb=include_torgb, device=device,
                           notes=notes)
    opt = ranger(H.parameters(), lr=opts.lr)
    gen = torch.Generator().manual_seed(opts.seed)
    step = _restore(st, H, opt, gen, notes) if st is not None else 0
    if isinstance(data, GeneratorSamples):
        data.G = G
    w_avg = G.mapping.w_avg.detach()
    model_path = out_dir / HYPERNET_FILE

    def checkpoint(step: int) -> None:
        meta = {"n_iters_per_batch": iters, "l2_lambda": opts.l2_lambda, "lpips_lambda": opts.perceptual_lambda,
                "id_lambda": _id_lambda(sim, opts), "learning_rate": opts.lr, "optim_name": "ranger",
                "batch_size": opts.batch_size,
                "gantune": _meta(step, notes, opts, data, sim, sim_lambda=opts.sim_lambda if sim is not None else 0.0)}
        save_hypernet(H, G, model_path, step=step, opts=meta)
        _save_state(out_dir / STATE_FILE, "hypernet", step, H, opt, gen, layers=H.names, width=H.width,
                    input_size=H.input_size)

    def one_step(n: int) -> dict:
        x, _ = _batch(data, opts.batch_size, gen, device)
        opt.zero_grad()
        row = _hypernet_step(H, G, encoder, x, w_avg, iters=iters, opts=opts, perc=perc, sim=sim, row={"step": n})
        opt.step()
        return row

    return _loop(opts, step, one_step, checkpoint, out_dir, model_path, notes, on_step, on_notes)
