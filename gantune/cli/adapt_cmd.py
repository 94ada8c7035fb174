"""``gantune adapt``: render inversion records with a fine-tuned generator (Toonify, StyleGAN-NADA, …) and the
records' HyperStyle offsets (HyperStyle Sec. 4.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (DeviceOpt, DtypeOpt, NoiseOpt, OverwriteOpt, RecordsArg, ShardOpt, console, exit_with, input_items,
                     out_opt, run_batch, shard_of, value)
from .edit_cmd import GeneratorCache


def adapt_command(
    records: RecordsArg,
    target: Annotated[str, typer.Option("--target", "-t", help="Fine-tuned generator of the same architecture: registry "
                                        "name (toonify, stylegan-nada-pixar, …), path or URL.", show_default=False)],
    out: Annotated[Path, out_opt("adapt")] = Path("out/adapt"),
    layers: Annotated[Optional[str], typer.Option("--layers", help="Offsets to apply: default (convs 128 px and up, as the "
                                                  "reference), all, levels (fine,medium) or layer names (b128.conv0 / "
                                                  "convs.8, comma separated).", show_default=False)] = None,
    offset_scale: Annotated[float, typer.Option("--offset-scale", help="Blend: 0 = plain target, 1 = full offsets.")] = 1.0,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Also write OUT/<stem>_compare.png: "
                                          "[target without offsets | with offsets].")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    noise: NoiseOpt = None,
    shard: ShardOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Domain adaptation: the record's latent and offsets rendered with --target. Writes OUT/<stem>.png and a
    manifest.jsonl line per record.

    Example: gantune adapt out/face.safetensors --target toonify -o toon/
    """
    from ..editing import adapt_render, load_record
    from ..io.images import image_grid, tensor_to_pil
    from ..io.runner import Batch
    from ..runtime import resolve_device, resolve_dtype
    from .validate import finite_float

    offset_scale = finite_float(offset_scale, "--offset-scale")
    noise = value(noise)
    params = {"target": target, "layers": layers, "offset_scale": offset_scale, "compare": compare, "noise": noise,
              "dtype": value(dtype)}
    batch = Batch("adapt", input_items(records, suffixes=(".safetensors",)), out, params=params,
                  planned=lambda it: [f"{it.name}.png"] + ([f"{it.name}_compare.png"] if compare else []),
                  shard=shard_of(shard), overwrite=overwrite)
    if not batch.prepare() and not batch.missing:
        console.print(f"nothing to do: all {len(batch.skipped)} records are done (--overwrite redoes them)")
        return
    G, info = GeneratorCache(resolve_device(device), resolve_dtype(value(dtype))).get(target)

    def write(item, rec, outs) -> None:
        img, applied = adapt_render(G, rec, layers=layers, offset_scale=offset_scale, noise_mode=noise)
        outs.image("image", f"{item.name}.png", img[0])
        if compare:
            plain, _ = adapt_render(G, rec, layers=layers, offset_scale=0.0, noise_mode=noise)
            outs.image("compare", f"{item.name}_compare.png", image_grid([tensor_to_pil(plain[0]), tensor_to_pil(img[0])]))
        item.info.update(layers=applied, target={"spec": target, "sha256": info.get("sha256")})

    exit_with(run_batch(batch, "adapted", load=lambda it: load_record(it.input), write=write))


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt_command)
