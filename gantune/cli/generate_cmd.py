"""``gantune generate``: sample images (and their latents) from a generator by seed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import BatchOpt, ChannelsLastOpt, DeviceOpt, DtypeOpt, NoiseOpt, OutDirOpt, Progress, WeightsOpt, console


def generate_command(
    weights: WeightsOpt = "ffhq-1024",
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds: 0-7, 1,5,9 or 0-3,10.")] = "0-7",
    truncation: Annotated[float, typer.Option("--truncation", "--trunc", help="Truncation psi toward the average w (1 = none).")] = 1.0,
    out: OutDirOpt = Path("out/generate"),
    noise: NoiseOpt = "const",
    batch_size: BatchOpt = 4,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    channels_last: ChannelsLastOpt = None,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help="Also write grid.png with all samples.")] = True,
) -> None:
    """Sample images by seed. Writes seedNNNN.png and seedNNNN.safetensors (the latent, as an inversion record
    that `gantune edit` accepts).

    Example: gantune generate --weights ffhq-1024 --seeds 0-7 --truncation 0.7 -o samples/
    """
    from ..io import InversionRecord, image_grid, save_image, tensor_to_pil
    from ..runtime import resolve_device, resolve_dtype
    from ..sampling import generate, parse_seeds
    from ..weights import load_generator

    seed_list = parse_seeds(seeds)
    dev = resolve_device(device)
    G, info = load_generator(weights, device=dev)
    G.eval().set_precision(resolve_dtype(dtype), channels_last=channels_last)
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"{info.get('name') or weights}: {G.cfg.describe()} on {dev}")
    thumbs = []
    with Progress(len(seed_list), "generate") as bar:
        for s in generate(G, seed_list, truncation=truncation, noise_mode=noise, batch_size=batch_size, device=dev):
            stem = out / f"seed{s.seed:04d}"
            img = tensor_to_pil(s.image)
            save_image(img, stem.with_suffix(".png"))
            InversionRecord(
                latent=s.latent,
                latent_kind=s.latent_kind,
                method="generate",
                meta={
                    "seed": s.seed,
                    "truncation": truncation,
                    "noise_mode": noise,
                    "generator": {"spec": weights, "name": info.get("name"), "sha256": info.get("sha256"),
                                  "config": G.cfg.to_dict()},
                },
            ).save(stem.with_suffix(".safetensors"))
            if grid:
                thumbs.append(img)
            bar.advance(f"{stem.with_suffix('.png')}")
    if grid and thumbs:
        save_image(image_grid(thumbs, cols=min(8, len(thumbs))), out / "grid.png")
    console.print(f"wrote {len(seed_list)} samples to {out}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
