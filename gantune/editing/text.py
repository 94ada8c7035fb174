"""Text edits (StyleCLIP global directions) of a record: the direction of one text pair, made once per generator,
and the record rendered with its styles moved along it. Used by ``gantune edit --text`` and ``gantune.edit(text=)``."""

from __future__ import annotations

import torch

from ..io.record import InversionRecord
from ..io.render import record_latent, render_record
from ..weights import resolve
from .clip import load_clip
from .styleclip import global_direction, text_direction
from .styleclip_stats import import_styleclip_stats, load_style_stats

DEFAULT_NEUTRAL = "a face"
DEFAULT_BETA = 0.15
DEFAULT_CLIP = "clip-vit-b-32"


class TextEditor:
    """StyleCLIP global direction of one text pair, made once per generator: CLIP and the text direction Δt once,
    then the generator's statistics and Δs. ``stats``: a statistics file or registry name (None: the published
    FFHQ statistics, for ffhq-1024)."""

    def __init__(self, text: str, neutral: str = DEFAULT_NEUTRAL, beta: float = DEFAULT_BETA,
                 clip: str = DEFAULT_CLIP, stats: str | None = None, device="cpu") -> None:
        self.text, self.neutral, self.beta, self.clip, self.stats, self.device = text, neutral, beta, clip, stats, device
        self._dt = None
        self._given_stats = None  # the statistics file, read once
        self._dirs: dict[int, object] = {}

    def _stats_for(self, G):
        if self.stats is None:
            st = import_styleclip_stats(G, resolve("styleclip-ffhq-fs3"), resolve("styleclip-ffhq-s-mean-std"))
        else:
            st = self._given_stats
        st.check(G)
        return st

    def prepare(self) -> None:
        """Load CLIP and embed the texts (and read a given statistics file) before any record: a missing or broken
        file stops the run with one message instead of failing every record."""
        if self._dt is None:
            model, tok = load_clip(self.clip, device=self.device)
            self._dt = text_direction(model, tok, self.text, self.neutral)
        if self.stats is not None and self._given_stats is None:
            self._given_stats = load_style_stats(resolve(self.stats))

    def direction(self, G):
        if self._dt is None:
            self.prepare()
        if id(G) not in self._dirs:
            self._dirs[id(G)] = global_direction(self._stats_for(G), self._dt, self.beta)
        return self._dirs[id(G)]


def render_text_edit(G, record: InversionRecord, direction, alphas: list[float], *,
                     noise_mode: str | None = None) -> torch.Tensor:
    """Images (S, 3, H, W): the record with its styles moved by α·Δs for each α (its latent and offsets kept)."""
    lat0 = record_latent(G, record)
    lat = lat0.expand(len(alphas), *lat0.shape[1:])
    a = torch.tensor([float(x) for x in alphas], dtype=torch.float32)[:, None]
    offsets = {name: a * off[None] for name, off in direction.offsets.items()}
    return render_record(G, record, latents=lat, style_offsets=offsets, noise_mode=noise_mode)
