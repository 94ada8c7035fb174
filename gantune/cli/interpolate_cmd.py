"""``gantune interpolate``: frames, a GIF and a sheet along the straight path between inversions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import (DeviceOpt, DtypeOpt, NoiseOpt, OverwriteOpt, RecordsArg, ResizeOpt, WeightsOpt, console, exit_with,
                     OutDirOpt, renamed, run_batch, value)

MAX_FRAMES = 1000


def interpolate_command(
    records: RecordsArg,
    frames: Annotated[int, typer.Option("--frames", "-n", min=2, max=MAX_FRAMES, help="Frames per pair, both ends included.")] = 9,
    loop: Annotated[bool, typer.Option("--loop", help="Also go from the last record back to the first.")] = False,
    out: OutDirOpt = Path("out/interpolate"),
    weights: WeightsOpt = None,
    noise: NoiseOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    resize: ResizeOpt = None,
    gif_ms: Annotated[int, typer.Option("--gif-ms", min=10, help="Milliseconds per GIF frame.")] = 80,
    overwrite: OverwriteOpt = False,
    steps: Annotated[Optional[int], typer.Option("--steps", min=2, max=MAX_FRAMES, hidden=True, show_default=False)] = None,
) -> None:
    """Interpolate between inversion records (any kind: w, w+, W, W+; HyperStyle offsets and tuned generator
    differences move with the latent). Per consecutive pair A, B: OUT/<A>_to_<B>/NNN.png frames, OUT/<A>_to_<B>.gif,
    OUT/<A>_to_<B>_sheet.png and a manifest.jsonl line. Records of different kinds or generators are refused.
    --weights: the generator (default: the one the records name).

    Example: gantune interpolate inv/anna.safetensors inv/ben.safetensors --frames 9 --loop -o paths/
    """
    from ..editing.directions import input_identity
    from ..editing.interpolate import interpolation_frames, interpolation_pairs, load_compatible
    from ..io.hashing import sha256_file
    from ..io.images import image_grid, tensor_to_pil, to_width
    from ..io.inputs import expand_inputs
    from ..io.runner import Batch, Item, output_stems
    from ..methods.pipeline import write_gif
    from ..runtime import resolve_device, resolve_dtype
    from ..editing.generators import GeneratorCache, generator_for

    frames = renamed(frames, steps, old="--steps", new="--frames", default=9)  # --steps: optimizer steps elsewhere
    paths = expand_inputs(records, suffixes=(".safetensors",))
    if len(paths) < 2:
        raise InputError("interpolation needs at least two records", "give two or more .safetensors records")
    stems = output_stems(paths)
    recs = load_compatible(paths, stems)
    items = [Item(name=f"{stems[a]}_to_{stems[b]}", input=paths[a], label=f"{paths[a].name} to {paths[b].name}",
                  data=(a, b)) for a, b in interpolation_pairs(len(paths), loop=loop)]
    pair_of = {it.name: it.data for it in items}
    hashes = [sha256_file(p) for p in paths]
    # the records by content, in order: a re-run from another folder (other spellings of the same paths) resumes;
    # the frames under their manifest key of before ("steps"), so that earlier runs resume too
    params = {"steps": frames, "weights": input_identity(weights), "noise": value(noise), "dtype": value(dtype),
              "resize": resize, "gif_ms": gif_ms, "records": hashes}
    batch = Batch("interpolate", items, out, params=params, extra_inputs=paths[1:], overwrite=overwrite,
                  planned=lambda it: [f"{it.name}.gif", f"{it.name}_sheet.png"]
                  + [f"{it.name}/{i:03d}.png" for i in range(frames)])
    if not batch.prepare():
        console.print(f"nothing to do: all {len(batch.skipped)} paths are done (--overwrite redoes them)")
        return
    dev = resolve_device(device)
    cache = GeneratorCache(dev, resolve_dtype(value(dtype), dev))
    tile = max(32, min(256, 8192 // frames))

    def write(item, _data, outs) -> None:
        from .. import progress

        a, b = pair_of[item.name]
        G = generator_for(cache, weights, recs[a])
        images = []
        for i, (t, img) in enumerate(interpolation_frames(G, recs[a], recs[b], frames, noise_mode=value(noise))):
            im = tensor_to_pil(img)
            if resize:
                im = to_width(im, resize)
            outs.image(f"frame{i:03d}", f"{item.name}/{i:03d}.png", im)
            images.append(im)
            progress.step(i + 1, frames, "frame")
        write_gif(images, outs.path("gif", f"{item.name}.gif"), ms=gif_ms)
        outs.image("sheet", f"{item.name}_sheet.png",
                   image_grid([f if f.width <= tile else to_width(f, tile) for f in images], cols=frames))
        to = os.path.relpath(os.path.abspath(paths[b]), os.path.abspath(out))  # from the manifest's folder
        item.info.update({"to": {"path": to, "sha256": hashes[b]}, "kind": recs[a].latent_kind})

    exit_with(run_batch(batch, "interpolated", write=write))


def register(app: typer.Typer) -> None:
    app.command("interpolate")(interpolate_command)
