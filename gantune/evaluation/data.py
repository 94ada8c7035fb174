"""The held-out images of ``gantune eval``.

They are drawn from the same ``synthetic-faces`` source the trainers use (the DCGAN of ``gan-face-generate``,
:mod:`gantune.train.data`), but from a torch generator seeded with ``HELDOUT_SEED_OFFSET + seed`` = 10 000 000 + S.
The trainers seed their data draws with the small ``--seed`` given to ``gantune train`` (the generator trainer with
seed + 1, the encoder trainers with seed), so the held-out latents come from a different random stream (z is
continuous: a repeat has probability zero). A folder of images can be given instead (the first N files in sorted
order). Images are resized to each method's generator resolution and every method sees the same targets.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..io.images import IMAGE_SUFFIXES, ImageError, load_image, pil_to_tensor
from ..train.data import SYNTHETIC_FACES, SyntheticFaces, dcgan_weights_path

HELDOUT_SEED_OFFSET = 10_000_000  # held-out draws use torch seed 10_000_000 + S; training uses --seed (and seed + 1)


def heldout_seed(seed: int) -> int:
    """The torch seed of the held-out draws for ``--seed S`` (never one the trainers use for their data)."""
    return HELDOUT_SEED_OFFSET + int(seed)


class HeldOutImages:
    """N evaluation images, available at any resolution (the same images each time).

    ``synthetic-faces``: z ~ N(0, I) from ``torch.Generator().manual_seed(10_000_000 + seed)``, rendered by the DCGAN
    and resized by the training source itself (:class:`gantune.train.data.SyntheticFaces`: area down, bilinear up).
    A folder: its first ``count`` images (sorted, recursive), resized with LANCZOS to a square.
    """

    def __init__(self, data: str = SYNTHETIC_FACES, count: int = 16, seed: int = 0) -> None:
        if count < 1:
            raise InputError(f"--count {count}: need at least one image")
        self.data, self.count, self.seed = str(data), int(count), int(seed)
        self.notes: list[str] = []
        self._cache: dict[int, torch.Tensor] = {}
        if self.data == SYNTHETIC_FACES:
            dcgan_weights_path()  # the one-line error now, if the package is missing
            self.files: list[Path] = []
            self.names = [f"heldout{i:04d}" for i in range(self.count)]
        else:
            folder = Path(self.data)
            if not folder.is_dir():
                raise InputError(f"--data {folder}: not a folder", f"give a folder of images or '{SYNTHETIC_FACES}'")
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"--data {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
            if len(files) < self.count:
                self.notes.append(f"--data {folder} has {len(files)} images: all of them are used (--count {self.count})")
            self.files = files[: self.count]
            self.names = [p.stem for p in self.files]

    def at(self, resolution: int) -> torch.Tensor:
        """(N, 3, resolution, resolution) in [-1, 1] on the CPU."""
        if resolution not in self._cache:
            self._cache[resolution] = self._load(resolution)
        return self._cache[resolution]

    def _load(self, resolution: int) -> torch.Tensor:
        if self.data == SYNTHETIC_FACES:
            g = torch.Generator().manual_seed(heldout_seed(self.seed))
            return SyntheticFaces(resolution).sample(self.count, g).float().cpu()

        xs, names = [], []
        for p in self.files:
            try:
                xs.append(pil_to_tensor(load_image(p), resolution))
                names.append(p.stem)
            except ImageError as e:
                note = f"skipped {p}: {e}"
                if note not in self.notes:
                    self.notes.append(note)
        if not xs:
            raise InputError(f"--data {self.data}: none of the {len(self.files)} images could be read")
        self.names = names
        return torch.cat(xs)

    def describe(self) -> dict:
        if self.data == SYNTHETIC_FACES:
            return {"source": SYNTHETIC_FACES, "count": self.count, "seed": self.seed,
                    "heldout_torch_seed": heldout_seed(self.seed),
                    "rule": f"z ~ N(0, I) (100-d) from torch.Generator().manual_seed({HELDOUT_SEED_OFFSET} + seed); "
                            "training draws use the torch seed given to `gantune train` (and seed + 1), never this one",
                    "resize": "the training source's own rule: area down, bilinear (antialiased) up"}
        return {"source": self.data, "count": len(self.names), "files": [str(p) for p in self.files],
                "resize": "LANCZOS to a square at the generator resolution"}
