"""StyleGAN2 training, standard and overparameterized (Poirier-Ginter et al. 2022), on one device or under torchrun.

One iteration = four phases, each with its own optimizer step (lazy regularization as in StyleGAN2):

1. G main: non-saturating logistic loss on a fresh batch of fakes (style mixing with probability ``style_mixing``);
2. G reg (every ``pl_interval`` iterations): path-length penalty on a smaller batch, weight ``pl_weight·pl_interval``;
3. D main: logistic loss on reals and detached fakes;
4. D reg (every ``r1_interval`` iterations): R1 penalty on reals, weight ``r1_gamma/2·r1_interval``.

With lazy regularization the Adam learning rate and betas are corrected by c = interval / (interval + 1):
lr·c, (β₁^c, β₂^c). The EMA generator follows ADA: half-life ``ema_kimg`` (batch·10/32 by default) ramped up as
``min(ema_nimg, nimg·ema_rampup)``. ``w_avg`` is tracked with β = 0.995 from G-main's mapping outputs.

Overparameterized generators (``cfg.latent_rows > 0``) sample the correlated latent matrix with ``G.sample_z``
(Zᵢ = (zᵢ + z)/√2, all rows at once) and map it row-wise; style mixing then mixes WHOLE matrices per layer range
(layers ≥ cutoff take the second matrix), exactly like the standard latent mixes whole w vectors.

Randomness: every random draw of the training loop (latents, mixing cut-offs, data, path-length noise) comes from
one CPU ``torch.Generator`` and is drawn for the GLOBAL batch; each process keeps its contiguous slice. The only
per-process randomness is the core's ``noise_mode='random'`` noise (global torch RNG, per-process seed).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..accel import accelerate
from ..core import Generator, GeneratorConfig
from ..errors import InputError
from ..io.images import image_grid, save_image, tensor_to_pil
from ..weights.native import save_native
from . import ddp
from .checkpoint import network_path, prune_states, remove_stale_temp_files, save_state, state_path
from .discriminator import Discriminator
from .losses import d_logistic, g_nonsaturating, path_length_penalty, path_lengths, r1_penalty


@dataclass(frozen=True)
class TrainOptions:
    batch: int = 32  # global batch (all processes together); must divide by the number of processes
    lr: float = 0.0025  # Adam learning rate of G and D (before the lazy-regularization correction)
    betas: tuple[float, float] = (0.0, 0.99)  # Adam betas (before the lazy-regularization correction)
    r1_gamma: float | None = None  # R1 weight; None = ADA's heuristic 0.0002·res²/batch
    r1_interval: int = 16  # D iterations between R1 steps (lazy regularization); 0 = no R1
    pl_weight: float = 2.0  # path-length weight; 0 = off
    pl_interval: int = 4  # G iterations between path-length steps
    pl_decay: float = 0.01  # running-mean decay of the path lengths
    pl_batch_shrink: int = 2  # path-length batch = batch / shrink
    style_mixing: float = 0.9  # probability that a sample mixes two latents at a random layer
    ema_kimg: float | None = None  # EMA half-life in thousands of images; None = batch·10/32
    ema_rampup: float | None = 0.05  # EMA ramp-up (half-life ≤ images seen · rampup); None = off
    w_avg_beta: float = 0.995  # decay of the tracked w_avg
    mbstd_group: int = 4  # minibatch-stddev group size (consecutive samples; must divide the per-process batch)
    seed: int = 0  # seeds initialization and every random draw
    d_warmup_kimg: float = 0.0  # G frozen (D alone trains) until this many thousand real images have been shown
    freeze_below_top_kimg: float = 0.0  # only G's top block trains until this many kimg (after --grow-from); inf = always
    distill: float = 0.0  # weight of the teacher term (synthetic data only): mean |G(z) - T(z)| over unmixed samples
    distill_only_kimg: float = 0.0  # with distill: G trains on the teacher term alone (no D, no mixing) until this many kimg
    distill_lr: float = 0.01  # G's Adam learning rate in that phase (a regression: momentum β₁ = 0.9, no lazy-reg correction)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.lr <= 0 or self.pl_interval < 1 or self.pl_batch_shrink < 1:
            raise ValueError("batch, lr, pl_interval and pl_batch_shrink must be positive")
        if not (self.d_warmup_kimg >= 0 and self.freeze_below_top_kimg >= 0 and self.distill >= 0
                and self.distill_only_kimg >= 0 and self.distill_lr > 0):
            raise ValueError("the D warm-up, the freeze of the grown layers and the distillation settings must be >= 0")
        if self.distill_only_kimg > 0 and self.distill <= 0:
            raise ValueError("a distillation-only phase needs a distillation weight > 0")
        if not 0.0 <= self.style_mixing <= 1.0:
            raise ValueError("style_mixing must be a probability")

    def gamma(self, resolution: int) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * resolution**2 / self.batch

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainOptions":
        d = dict(d)
        d.setdefault("distill", 0.0)  # states written before distillation existed
        d.setdefault("distill_only_kimg", 0.0)
        d.setdefault("distill_lr", 0.01)
        d["betas"] = tuple(d["betas"])
        return cls(**d)


def check_growable(small: GeneratorConfig, cfg: GeneratorConfig) -> None:
    """Raises ValueError unless ``small`` is ``cfg`` at half the resolution (what :meth:`GeneratorTrainer.grow_from`
    can start from)."""
    if small.resolution * 2 != cfg.resolution or small.replace(resolution=cfg.resolution) != cfg:
        raise ValueError(f"--grow-from needs a generator with the same options at {cfg.resolution // 2} px; "
                         f"got {small.describe()}")


@dataclass(frozen=True)
class GeneratorRunSettings:
    """A training run as ``gantune train generator`` asks for it, in the command's terms (None: a default that depends
    on the other settings). :meth:`config` and :meth:`options` give the architecture and the training options."""

    data: str  # a folder of images, or synthetic-faces
    resolution: int = 64
    kimg: float = 1000.0  # train until this many thousand real images have been shown (across resumes)
    snap: float = 50.0  # snapshot grid + checkpoint every this many kimg
    keep: int = 2  # training states and network snapshots kept in the run folder
    resume: str = "auto"  # auto (newest state in the run folder, if any), none, or a training-state-*.pt file
    xflip: bool = False  # random horizontal flips of folder images
    overparam: bool = False  # overparameterized latent matrix
    latent_rows: int | None = None  # rows of the latent matrix (overparam only); default the widest layer's channels
    z_dim: int = 512
    w_dim: int | None = None  # default z_dim
    mapping_layers: int | None = None  # default 8; 2 with overparam
    noise: bool | None = None  # noise inputs; default on, off with overparam
    channel_base: int = 16384
    channel_max: int = 512
    grow_from: str | None = None  # a generator of half the resolution with the same options to start from
    d_warmup: float | None = None  # kimg of D alone; default 2 with grow_from, else 0
    freeze_grown: float | None = None  # kimg during which only the new top block trains (grow_from); default the run
    batch: int = 32
    lr: float = 0.0025
    gamma: float | None = None  # R1 weight; default 0.0002·res²/batch
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    style_mixing: float = 0.9
    ema_kimg: float | None = None
    mbstd_group: int = 4
    distill: float = 0.0
    distill_only: float = 0.0  # kimg
    distill_lr: float = 0.01
    seed: int = 0

    def config(self) -> GeneratorConfig:
        """The architecture: ValueError where GeneratorConfig refuses it, InputError for latent rows without
        overparam."""
        cfg = GeneratorConfig(resolution=self.resolution, z_dim=self.z_dim, w_dim=self.w_dim or self.z_dim,
                              channel_base=self.channel_base, channel_max=self.channel_max,
                              mapping_layers=self.mapping_layers or (2 if self.overparam else 8),
                              use_noise=self.noise if self.noise is not None else not self.overparam)
        if self.overparam:
            return cfg.replace(latent_rows=self.latent_rows or max(cfg.channels(r) for r in cfg.block_resolutions))
        if self.latent_rows:
            raise InputError("--latent-rows needs --overparam")
        return cfg

    def options(self) -> TrainOptions:
        """The training options: ValueError where TrainOptions refuses them, InputError for freeze_grown without
        grow_from."""
        grown = bool(self.grow_from)
        if self.freeze_grown is not None and not grown:
            raise InputError("--freeze-grown applies to a grown generator only",
                             hint="add --grow-from SMALLER_GENERATOR, or leave out --freeze-grown")
        return TrainOptions(batch=self.batch, lr=self.lr, r1_gamma=self.gamma, r1_interval=self.r1_interval,
                            pl_weight=self.pl_weight, pl_interval=self.pl_interval, style_mixing=self.style_mixing,
                            ema_kimg=self.ema_kimg, mbstd_group=self.mbstd_group, seed=self.seed, distill=self.distill,
                            distill_only_kimg=self.distill_only, distill_lr=self.distill_lr,
                            d_warmup_kimg=self.d_warmup if self.d_warmup is not None else (2.0 if grown else 0.0),
                            freeze_below_top_kimg=(self.freeze_grown if self.freeze_grown is not None else self.kimg)
                            if grown else 0.0)


def _two_groups(opt_state: dict, n_mapping: int) -> dict:
    """A G optimizer state written with one parameter group (before the mapping had its own) as the two groups of
    now: the same parameter indices (mapping first), the same settings, the same moments."""
    groups = opt_state["param_groups"]
    if len(groups) != 1:
        return opt_state
    ids = groups[0]["params"]
    return {"state": opt_state["state"],
            "param_groups": [dict(groups[0], params=ids[:n_mapping]), dict(groups[0], params=ids[n_mapping:])]}


def _lazy(lr: float, betas: tuple[float, float], interval: int) -> tuple[float, tuple[float, float]]:
    c = interval / (interval + 1) if interval > 0 else 1.0
    return lr * c, (betas[0] ** c, betas[1] ** c)


class GeneratorTrainer:
    """Holds G, D, G_ema, the optimizers and the counters; :meth:`step` runs one iteration."""

    def __init__(
        self,
        cfg: GeneratorConfig,  # generator architecture (the discriminator mirrors its channels)
        opts: TrainOptions,  # training hyper-parameters
        data,  # a data source with ``sample(batch, generator, rank=, world=)`` (gantune.train.data)
        *,
        dist: ddp.DistInfo | None = None,  # process group position and device; default one CPU process
    ) -> None:
        self.cfg, self.opts, self.data = cfg, opts, data
        self.dist = dist or ddp.DistInfo()
        self.device = self.dist.device
        if opts.batch % self.dist.world:
            raise ValueError(f"batch {opts.batch} must be divisible by the number of processes ({self.dist.world})")
        self.local_batch = opts.batch // self.dist.world
        if self.local_batch % min(opts.mbstd_group, self.local_batch):
            raise ValueError(f"minibatch-stddev group {opts.mbstd_group} must divide the per-process batch {self.local_batch}")
        if opts.distill > 0 and not callable(getattr(data, "teacher", None)):
            raise ValueError("distillation needs a data source that is itself a generator (synthetic-faces)")
        torch.manual_seed(opts.seed)  # identical initialization on every process
        self.G = accelerate(Generator(cfg).train().to(self.device))
        self.D = Discriminator(cfg, mbstd_group=opts.mbstd_group).train().to(self.device)
        ddp.broadcast_module(self.G)
        ddp.broadcast_module(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        g_lr, g_betas = _lazy(opts.lr, opts.betas, opts.pl_interval if opts.pl_weight > 0 else 0)
        d_lr, d_betas = _lazy(opts.lr, opts.betas, opts.r1_interval)
        # two groups, the mapping network's parameters first (G.parameters() order): the distillation-only phase
        # trains the mapping at its own rate (see _distill_optimizer); the GAN phases use one lr for both
        mapping = [p for n, p in self.G.named_parameters() if n.startswith("mapping.")]
        rest = [p for n, p in self.G.named_parameters() if not n.startswith("mapping.")]
        self.opt_G = torch.optim.Adam([{"params": mapping}, {"params": rest}], lr=g_lr, betas=g_betas, eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=d_lr, betas=d_betas, eps=1e-8)
        self.rng = torch.Generator().manual_seed(opts.seed + 1)  # every draw of the loop, global-batch sized
        torch.manual_seed(opts.seed * 1000 + 7 + self.dist.rank)  # per-process noise inputs
        self.step_count = 0  # iterations done
        self.nimg = 0  # real images shown (global)
        self.pl_mean = torch.zeros([], device=self.device)
        self.noise_mode = "random" if cfg.use_noise else "none"
        self.stats: dict[str, float] = {}

    @torch.no_grad()
    def grow_from(self, small: Generator) -> list[str]:
        """Start from a trained generator of half this resolution (progressive growing, Karras et al. 2018, used
        once): every tensor the two share by name and shape is copied into G and G_ema, and the new top block's
        toRGB starts at zero, so the first images are exactly the small generator's, upsampled by the skip path.
        The discriminator starts fresh. Returns the names that were not copied (the new block)."""
        check_growable(small.cfg, self.cfg)
        src = small.state_dict()
        fresh = []
        for net in (self.G, self.G_ema):
            for name, t in net.state_dict().items():
                s = src.get(name)
                if s is not None and s.shape == t.shape:
                    t.copy_(s)
                elif net is self.G:
                    fresh.append(name)
            top = net.synthesis.layers[f"b{self.cfg.resolution}"]["torgb"]
            top.weight.zero_()
            top.bias.zero_()
        return fresh

    # --- sampling -----------------------------------------------------------------------------------------------
    def _slice(self, x: torch.Tensor) -> torch.Tensor:
        w, r = self.dist.world, self.dist.rank
        n = x.shape[0] // w
        return x[r * n : (r + 1) * n].to(self.device)

    def sample_latents(self, batch: int, *, with_teacher: bool = False):
        """(z, z_mix, cutoff) for this process's share of a global ``batch``; cutoff = num_ws means no mixing.
        ``with_teacher`` adds the teacher's latent for each z (see :meth:`teacher_z`) as a fourth element."""
        G, n = self.G, self.cfg.num_ws
        if self.cfg.overparam:  # G.sample_z's draws, in its order, keeping the shared row
            shape = (batch, self.cfg.latent_rows, self.cfg.z_dim)
            rows, shared = torch.randn(shape, generator=self.rng), torch.randn(batch, 1, self.cfg.z_dim, generator=self.rng)
            z, base = (rows + shared) / 2**0.5, shared[:, 0]
        else:
            z = base = G.sample_z(batch, generator=self.rng, device="cpu")
        z2 = G.sample_z(batch, generator=self.rng, device="cpu")
        cut = torch.randint(1, n, (batch,), generator=self.rng) if n > 1 else torch.ones(batch, dtype=torch.long)
        mix = torch.rand(batch, generator=self.rng) < self.opts.style_mixing
        cut = torch.where(mix, cut, torch.full_like(cut, n))
        out = (self._slice(z), self._slice(z2), self._slice(cut))
        return (*out, self._slice(self.teacher_z(base))) if with_teacher else out

    def teacher_z(self, z: torch.Tensor) -> torch.Tensor:
        """The teacher's latent for a standard z (the overparameterized matrix's shared row): its first ``nz``
        entries, scaled to second moment 1 — the mapping network normalises z the same way, so only the direction,
        which G can see, decides the target."""
        nz = self.data.teacher_dim
        t = z[:, :nz] if z.shape[1] >= nz else torch.cat([z, z.new_zeros(z.shape[0], nz - z.shape[1])], 1)
        return t * (t.square().mean(1, keepdim=True) + 1e-8).rsqrt()

    def latents(self, G: Generator, z: torch.Tensor, z2: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
        """Mapped latent with per-sample style mixing: standard (B, num_ws, w) or overparameterized (B, rows, w) when
        nobody mixes, else one matrix per layer (B, num_ws, rows, w)."""
        w1 = G.mapping(z)
        n = self.cfg.num_ws
        mixing = bool((cut < n).any())
        if not mixing:
            return w1 if self.cfg.overparam else w1[:, None].expand(-1, n, -1)
        w2 = G.mapping(z2)
        take_first = torch.arange(n, device=cut.device)[None] < cut[:, None]  # (B, num_ws)
        if self.cfg.overparam:
            return torch.where(take_first[:, :, None, None], w1[:, None], w2[:, None])
        return torch.where(take_first[:, :, None], w1[:, None], w2[:, None])

    def synthesize(self, G: Generator, lat: torch.Tensor) -> torch.Tensor:
        if self.cfg.overparam:
            return G.synthesis(wmat=lat, noise_mode=self.noise_mode)
        return G.synthesis(lat, noise_mode=self.noise_mode)

    # --- one iteration ------------------------------------------------------------------------------------------
    def _opt_step(self, opt: torch.optim.Optimizer, net: torch.nn.Module, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ddp.average_gradients(net.parameters())
        opt.step()

    def _g_trainable(self) -> None:
        """All of G trains, or, while ``freeze_below_top_kimg`` lasts, only its top block (the new one after growing):
        the frozen tensors get no gradient, so Adam leaves them exactly as they are."""
        self.G.requires_grad_(True)
        if self.nimg < self.opts.freeze_below_top_kimg * 1000:
            top = f"synthesis.layers.b{self.cfg.resolution}."
            for name, p in self.G.named_parameters():
                if not name.startswith(top):
                    p.requires_grad_(False)

    def distill_step(self) -> dict[str, float]:
        """One iteration of the distillation-only phase: G (all of it, no style mixing) matches the teacher's images
        for its latents; D, the path-length and R1 terms rest."""
        o, G = self.opts, self.G
        self._g_trainable()
        self._distill_optimizer(True)
        z, _, _, tz = self.sample_latents(o.batch, with_teacher=True)
        w1 = G.mapping(z)
        fake = self.synthesize(G, w1 if self.cfg.overparam else w1[:, None].expand(-1, self.cfg.num_ws, -1))
        loss = (fake - self.data.teacher(tz)).abs().mean()
        self._opt_step(self.opt_G, G, loss * o.distill)
        with torch.no_grad():
            w_mean = ddp.mean(w1.detach().reshape(-1, self.cfg.w_dim).mean(0))
            G.mapping.w_avg.copy_(w_mean.lerp(G.mapping.w_avg, o.w_avg_beta))
        return {"distill_L1": float(ddp.mean(loss.detach()))}

    def _distill_optimizer(self, on: bool) -> None:
        """G's Adam settings: the regression's in the distillation-only phase — ``distill_lr``, β = (0.9, 0.99), and
        the mapping network at ``distill_lr / mapping_lr_mul`` (as if its equalized-lr multiplier were 1: at 0.01 the
        regression stalled at the average face, measured at 32 px: L1 0.308 against 0.234 after 500 steps) — and the
        GAN's (lazy-regularization corrected, one rate) after it; the moment estimates carry over."""
        o = self.opts
        lr, betas = (o.distill_lr, (0.9, o.betas[1])) if on else _lazy(o.lr, o.betas, o.pl_interval if o.pl_weight > 0 else 0)
        boost = 1.0 / self.cfg.mapping_lr_mul if on else 1.0
        for i, group in enumerate(self.opt_G.param_groups):
            group["lr"], group["betas"] = lr * (boost if i == 0 else 1.0), betas

    def step(self) -> dict[str, float]:
        o, G, D = self.opts, self.G, self.D
        B = o.batch
        if o.distill_only_kimg > 0 and self.nimg >= o.distill_only_kimg * 1000:
            self._distill_optimizer(False)
        if self.nimg < o.distill_only_kimg * 1000:
            stats = self.distill_step()
            self.nimg += B
            self.step_count += 1
            self.update_ema()
            self.stats = stats
            return stats
        stats = {}
        g_trains = self.nimg >= o.d_warmup_kimg * 1000  # during a D warm-up (after growing) G stays as it is
        # 1. G main
        self._g_trainable()
        D.requires_grad_(False)
        z, z2, cut, *tz = self.sample_latents(B, with_teacher=o.distill > 0)
        if g_trains:
            w1 = G.mapping(z)
            lat = self.latents(G, z, z2, cut)
            fake = self.synthesize(G, lat)
            loss_g = g_nonsaturating(D(fake))
            stats["loss_G"] = float(ddp.mean(loss_g.detach()))
            if o.distill > 0:  # unmixed samples also match the teacher's image for their latent
                keep = (cut == self.cfg.num_ws).to(fake.dtype)
                target = self.data.teacher(tz[0])
                per = (fake - target).abs().flatten(1).mean(1)
                dist_loss = (per * keep).sum() / keep.sum().clamp(min=1)
                loss_g = loss_g + o.distill * dist_loss
                stats["distill_L1"] = float(ddp.mean(dist_loss.detach()))
            self._opt_step(self.opt_G, G, loss_g)
            with torch.no_grad():  # track the average w (over rows too for the matrix latent)
                w_mean = ddp.mean(w1.detach().reshape(-1, self.cfg.w_dim).mean(0))
                G.mapping.w_avg.copy_(w_mean.lerp(G.mapping.w_avg, o.w_avg_beta))
        # 2. G reg: path length
        if g_trains and o.pl_weight > 0 and self.step_count % o.pl_interval == 0:
            pb = max(self.dist.world, (B // o.pl_batch_shrink) // self.dist.world * self.dist.world)
            z, z2, cut = self.sample_latents(pb)
            lat = self.latents(G, z, z2, cut)
            if not lat.requires_grad:
                lat.requires_grad_(True)
            img = self.synthesize(G, lat)
            noise = self._slice(torch.randn((pb, *img.shape[1:]), generator=self.rng))
            lengths = path_lengths(img, lat, noise)
            with torch.no_grad():
                self.pl_mean.copy_(self.pl_mean.lerp(ddp.mean(lengths.mean()), o.pl_decay))
            pen = path_length_penalty(lengths, self.pl_mean)
            self._opt_step(self.opt_G, G, pen * o.pl_weight * o.pl_interval + img[:, 0, 0, 0].sum() * 0)
            stats["pl_penalty"] = float(ddp.mean(pen.detach()))
        # 3. D main
        G.requires_grad_(False)
        D.requires_grad_(True)
        z, z2, cut = self.sample_latents(B)
        with torch.no_grad():
            fake = self.synthesize(G, self.latents(G, z, z2, cut))
        real = self.data.sample(B, self.rng, rank=self.dist.rank, world=self.dist.world).to(self.device)
        real_logits, fake_logits = D(real), D(fake)
        loss_d = d_logistic(real_logits, fake_logits)
        self._opt_step(self.opt_D, D, loss_d)
        stats["loss_D"] = float(ddp.mean(loss_d.detach()))
        stats["D_real"] = float(ddp.mean(real_logits.detach().mean()))
        stats["D_fake"] = float(ddp.mean(fake_logits.detach().mean()))
        # 4. D reg: R1
        if o.r1_interval > 0 and self.step_count % o.r1_interval == 0:
            real = real.detach().requires_grad_(True)
            logits = D(real)
            r1 = r1_penalty(logits, real)
            self._opt_step(self.opt_D, D, r1 * (o.gamma(self.cfg.resolution) / 2) * o.r1_interval + logits.sum() * 0)
            stats["r1"] = float(ddp.mean(r1.detach()))
        self._g_trainable()
        # EMA
        self.nimg += B
        self.step_count += 1
        self.update_ema()
        self.stats = stats
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        o = self.opts
        ema_nimg = (o.ema_kimg if o.ema_kimg is not None else o.batch * 10 / 32) * 1000
        if o.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * o.ema_rampup)
        beta = 0.5 ** (o.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # --- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng_global = ddp.gather_objects(torch.get_rng_state())
        rng_cuda = ddp.gather_objects(torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        return {
            "kind": "gantune-train-generator",
            "gen_config": self.cfg.to_dict(),
            "options": self.opts.to_dict(),
            "step": self.step_count,
            "nimg": self.nimg,
            "world": self.dist.world,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "pl_mean": self.pl_mean.detach().cpu(),
            "rng": self.rng.get_state(),
            "rng_global": rng_global,
            "rng_cuda": rng_cuda,
        }

    def load_state_dict(self, state: dict) -> None:
        cfg = GeneratorConfig.from_dict(state["gen_config"])
        if cfg != self.cfg:
            raise InputError(
                "the checkpoint's generator architecture differs from the requested one",
                hint=f"checkpoint: {cfg.describe()}; use the same options, --resume none, or another --out",
            )
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(_two_groups(state["opt_G"], len(self.opt_G.param_groups[0]["params"])))
        self.opt_D.load_state_dict(state["opt_D"])
        self.pl_mean.copy_(state["pl_mean"])
        self.step_count, self.nimg = int(state["step"]), int(state["nimg"])
        self.rng.set_state(state["rng"])
        r = self.dist.rank
        if state.get("world") == self.dist.world:
            torch.set_rng_state(state["rng_global"][r])
            if self.device.type == "cuda" and state["rng_cuda"][r] is not None:
                torch.cuda.set_rng_state(state["rng_cuda"][r], self.device)
        else:  # another number of processes: fresh per-process noise streams, everything else identical
            torch.manual_seed(self.opts.seed * 1000 + 7 + r + 100003 * self.step_count)

    @torch.no_grad()
    def sample_grid(self, n: int = 16, seed: int = 12345) -> torch.Tensor:
        """EMA samples for a fixed set of latents (noise 'const'), (n, 3, res, res)."""
        g = torch.Generator().manual_seed(seed)
        z = self.G_ema.sample_z(n, generator=g, device="cpu").to(self.device)
        return self.G_ema(z, noise_mode="const" if self.cfg.use_noise else "none").float().cpu()


ProgressFn = Callable[[dict], None]


def train(
    trainer: GeneratorTrainer,
    *,
    run_dir: str | Path,  # run folder: checkpoints, snapshot grids, log
    kimg: float,  # stop once this many thousand real images have been shown in total (across resumes)
    snap_kimg: float = 50.0,  # snapshot grid + checkpoint every this many kimg (and at the end)
    keep_states: int = 2,  # training states to keep, and network snapshots to keep
    meta: dict | None = None,  # provenance stored in every network snapshot (data, licence, command)
    on_tick: ProgressFn | None = None,  # called after every iteration with {nimg, step, img/s, losses...}
    grid_size: int = 16,  # samples in each snapshot grid
) -> Path | None:
    """Run ``trainer`` until ``kimg``; returns the last network snapshot written (rank 0) or None."""
    run_dir = Path(run_dir)
    total = int(round(kimg * 1000))
    snap = max(1, int(round(snap_kimg * 1000)))
    last: Path | None = None
    if trainer.dist.is_main:
        remove_stale_temp_files(run_dir)  # what a killed run was writing

    def checkpoint() -> None:
        nonlocal last
        state = trainer.state_dict()  # collective: every process takes part
        if trainer.dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            info = dict(meta or {}, kimg=trainer.nimg / 1000, step=trainer.step_count, options=trainer.opts.to_dict(),
                        trainer="gantune train generator", ema=True)
            last = save_native(trainer.G_ema, network_path(run_dir, trainer.nimg), meta=info)
            save_state(state_path(run_dir, trainer.nimg), state)
            prune_states(run_dir, keep_states)
            imgs = tensor_to_pil(trainer.sample_grid(grid_size))
            imgs = imgs if isinstance(imgs, list) else [imgs]
            save_image(image_grid(imgs, cols=int(math.ceil(math.sqrt(len(imgs))))), run_dir / f"fakes-{trainer.nimg:09d}.png")
        ddp.barrier()

    t0, n0 = time.perf_counter(), trainer.nimg
    while trainer.nimg < total:
        before = trainer.nimg
        stats = trainer.step()
        if on_tick is not None and trainer.dist.is_main:
            dt = time.perf_counter() - t0
            on_tick(dict(stats, nimg=trainer.nimg, total=total, step=trainer.step_count,
                         img_per_s=(trainer.nimg - n0) / max(dt, 1e-9), shown=trainer.nimg - before))
        if trainer.nimg // snap != before // snap and trainer.nimg < total:
            checkpoint()
    if trainer.nimg != n0 or last is None:
        checkpoint()
    return last
