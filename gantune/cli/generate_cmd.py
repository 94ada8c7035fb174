"""``gantune generate``: sample images (and their latents) from a generator by seed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (BatchOpt, ChannelsLastOpt, ClassOpt, DeviceOpt, DtypeOpt, Noise, NoiseOpt, OverwriteOpt, ShardOpt,
                     WeightsOpt, console, exit_with, OutDirOpt, run_batch, shard_of, value,
                     writers_for)
from ..errors import InputError
from .validate import finite

DEFAULT_WEIGHTS = "ffhq-1024"
MAX_SEEDS = 100_000  # seeds a run (--seeds): a bigger range is refused before it is expanded


def _seed_list(text: str, parse) -> list[int]:
    """``parse(text)`` with repeats dropped (first order kept), after refusing more than MAX_SEEDS seeds."""
    count = 0
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        count += int(hi) - int(lo) + 1 if dash and lo.strip().isdigit() and hi.strip().isdigit() else 1
    if count > MAX_SEEDS:
        raise InputError(f"--seeds {text!r}: {count} seeds, more than {MAX_SEEDS} a run",
                         "split it over several runs into the same -o; a re-run skips the seeds already done")
    return list(dict.fromkeys(parse(text)))


def generate_command(
    weights: WeightsOpt = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds: 0-7, 1,5,9 or 0-3,10 (a repeated seed is drawn once, in the order first given; at most 100000 seeds a run).")] = "0-7",
    truncation: Annotated[float, typer.Option("--truncation", "--trunc", callback=finite("--truncation"), help="Truncation psi toward the average w (1 = none).")] = 1.0,
    out: OutDirOpt = Path("out/generate"),
    noise: NoiseOpt = Noise.const,
    batch_size: BatchOpt = 4,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    channels_last: ChannelsLastOpt = None,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help="Also write grid.png with the samples of this run (at most 64).")] = True,
    shard: ShardOpt = None,
    class_index: ClassOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Sample images by seed. Writes seedNNNN.png and seedNNNN.safetensors (the latent, as an inversion record
    that `gantune edit` accepts) and a manifest.jsonl line per seed. --weights: the generator (default ffhq-1024).

    Example: gantune generate --weights ffhq-1024 --seeds 0-7 --truncation 0.7 -o samples/
    """
    from ..io import InversionRecord, image_grid, save_image, tensor_to_pil
    from ..io.record import class_label
    from ..io.runner import Batch, Item
    from ..runtime import resolve_device, resolve_dtype
    from ..sampling import generate, parse_seeds

    weights = weights or DEFAULT_WEIGHTS
    noise, dtype = value(noise), value(dtype)
    seed_list = _seed_list(seeds, parse_seeds)
    items = [Item(name=f"seed{s:04d}", label=f"seed {s}", data=s) for s in seed_list]
    seed_of = {it.name: s for it, s in zip(items, seed_list)}
    batch = Batch("generate", items, out, params={"weights": weights, "truncation": truncation, "noise": noise,
                                                  "dtype": dtype,
                                                  **({"class": class_index} if class_index is not None else {})},
                  planned=lambda it: [f"{it.name}.png", f"{it.name}.safetensors"], shard=shard_of(shard),
                  overwrite=overwrite)
    if not batch.prepare():
        console.print(f"nothing to do: all {len(batch.skipped)} seeds are done (--overwrite redoes them)")
        return
    from ..weights import load_generator

    dev = resolve_device(device)
    G, info = load_generator(weights, device=dev)
    G.eval().set_precision(resolve_dtype(dtype, dev), channels_last=channels_last)
    c = class_label(G.cfg.c_dim, class_index, what=f"{info.get('name') or weights}")
    console.print(f"{info.get('name') or weights}: {G.cfg.describe()} on {dev}")
    gen_meta = {"spec": weights, "name": info.get("name"), "sha256": info.get("sha256"), "config": G.cfg.to_dict()}
    thumbs = {}  # item name -> thumbnail, for the grid (writes may run in threads, finishing in any order)
    grid_names = {it.name for it in batch.todo[:64]}

    def process(chunk):
        return list(generate(G, [seed_of[it.name] for it in chunk], truncation=truncation, noise_mode=noise,
                             batch_size=len(chunk), device=dev, c=c))

    def write(item, sample, outs) -> None:
        img = tensor_to_pil(sample.image)
        record = InversionRecord(latent=sample.latent, latent_kind=sample.latent_kind, method="generate",
                                 meta={"seed": sample.seed, "truncation": truncation, "noise_mode": noise,
                                       "generator": gen_meta, **({"class": class_index} if c is not None else {})},
                                 c=sample.c)
        outs.image("image", f"{item.name}.png", img)
        record.save(outs.path("record", f"{item.name}.safetensors"))
        if grid and item.name in grid_names:
            thumbs[item.name] = img if img.width <= 256 else img.resize((256, 256))

    code = run_batch(batch, "generated", process=process, write=write, batch_size=batch_size,
                     writers=writers_for(dev))
    if grid and thumbs:
        ordered = [thumbs[it.name] for it in batch.todo if it.name in thumbs]
        save_image(image_grid(ordered, cols=min(8, len(ordered))), out / "grid.png")
    exit_with(code)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
