"""``gantune adapt``: render inversion records with a fine-tuned generator (Toonify, StyleGAN-NADA, …) and the
records' HyperStyle offsets (HyperStyle Sec. 4.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import GantuneError, InputError
from .common import (DeviceOpt, DtypeOpt, IdentityOpt, NoiseOpt, OverwriteOpt, RecordsArg, ShardOpt, console,
                     exit_with, identity_metric, input_items, OutDirOpt, print_identity_note, run_batch, shard_of,
                     value, writers_for)
from .directions_cmd import finite_in


def adapt_command(
    records: RecordsArg,
    target: Annotated[str, typer.Option("--target", "-t", help="Fine-tuned generator of the same architecture: registry "
                                        "name (toonify, stylegan-nada-pixar, …), path or URL.", show_default=False)],
    out: OutDirOpt = Path("out/adapt"),
    layers: Annotated[Optional[str], typer.Option("--layers", help="Offsets to apply: default (convs 128 px and up, as the "
                                                  "reference), all, levels (fine,medium) or layer names (b128.conv0 / "
                                                  "convs.8, comma separated).", show_default=False)] = None,
    offset_scale: Annotated[float, typer.Option("--offset-scale", callback=finite_in("--offset-scale", -10.0, 10.0),
                                                help="Blend: 0 = plain target, 1 = full offsets (-10 to 10).")] = 1.0,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Also write OUT/<stem>_compare.png: "
                                          "[target without offsets | with offsets].")] = False,
    codes: Annotated[str, typer.Option("--codes", help="Latent to render: record (the record's own, default), "
                                       "restyle-e4e (the official recipe: ReStyle-e4e W+ codes of the record's source "
                                       "photo, re-encoded here, with the record's HyperStyle offsets), e4e, or an e4e / "
                                       "ReStyle-e4e file (path or registry name).")] = "record",
    codes_iters: Annotated[Optional[int], typer.Option("--codes-iters", min=1, help="ReStyle-e4e iterations for "
                                                       "--codes other than record (default 2, as the official "
                                                       "domain-adaptation script).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    noise: NoiseOpt = None,
    identity: IdentityOpt = True,
    shard: ShardOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Domain adaptation: the record's latent and offsets rendered with --target. Writes OUT/<stem>.png and a
    manifest.jsonl line per record.

    The official recipe (HyperStyle's run_domain_adaptation.py) is --codes restyle-e4e on a HyperStyle record made
    with the W-encoder and 2-3 iterations: adapt encodes the record's source photo again (the path and sha256 the
    record stores; the alignment or crop it stores is applied again) with ReStyle-e4e (--codes-iters, default 2),
    rendering with the record's generator, and uses those W+ codes with the record's offsets on the default layers.

    Example: gantune invert face.jpg --method hyperstyle --iters 2 -o inv/ && gantune adapt inv/face.safetensors
    --target toonify --codes restyle-e4e -o toon/
    """
    from ..editing import adapt_render, load_record
    from ..editing.generators import GeneratorCache
    from ..io.images import image_grid, tensor_to_pil
    from ..io.runner import Batch, ImageSaver
    from ..runtime import resolve_device, resolve_dtype

    codes_iters = _codes_iters(codes, codes_iters)
    noise = value(noise)
    params = {"target": target, "layers": layers, "offset_scale": offset_scale, "compare": compare, "noise": noise,
              "dtype": value(dtype), **({"codes": codes, "codes_iters": codes_iters} if codes != "record" else {})}
    batch = Batch("adapt", input_items(records, suffixes=(".safetensors",)), out, params=params,
                  planned=lambda it: [f"{it.name}.png"] + ([f"{it.name}_compare.png"] if compare else []),
                  shard=shard_of(shard), overwrite=overwrite)
    if not batch.prepare() and not batch.missing:
        console.print(f"nothing to do: all {len(batch.skipped)} records are done (--overwrite redoes them)")
        return
    dev = resolve_device(device)
    cache = GeneratorCache(dev, resolve_dtype(value(dtype), dev))
    identity, identity_note = identity_metric(identity and bool(batch.todo))
    print_identity_note(identity_note, batch.todo)
    G, info = cache.get(target)
    recode = None
    if codes != "record":
        from ..methods.e4e.checkpoint import DEFAULTS, load_style_encoder

        encoder = load_style_encoder(DEFAULTS.get(codes, codes), device=resolve_device(device))

        def _recode(rec, item):
            from ..methods.e4e.adapt import recode_record
            from ..editing.generators import generator_for

            return recode_record(rec, encoder, generator_for(cache, None, rec), iters=codes_iters,
                                 noise_mode=noise or "const", base=item.input.parent)

        recode = _recode

    def write(item, rec, outs) -> None:
        if recode is not None:
            rec = recode(rec, item)
            item.info["codes"] = rec.meta["codes"]
        img, applied = adapt_render(G, rec, layers=layers, offset_scale=offset_scale, noise_mode=noise)
        saver.image(outs, "image", f"{item.name}.png", img[0])
        if compare:
            plain, _ = adapt_render(G, rec, layers=layers, offset_scale=0.0, noise_mode=noise)
            saver.image(outs, "compare", f"{item.name}_compare.png",
                        image_grid([tensor_to_pil(plain[0]), tensor_to_pil(img[0])]))
        item.info.update(layers=applied, target={"spec": target, "sha256": info.get("sha256")})
        if identity:
            item.metrics["identity_to_reconstruction"] = _identity_to_reconstruction(cache, rec, img[0])

    # on a GPU the PNGs are the slow part (0.2 s each at 1024 px): the image and its comparison saved in threads
    with ImageSaver(writers_for(cache.device)) as saver:
        code = run_batch(batch, "adapted", load=lambda it: load_record(it.input), write=saver.wrap(write))
    exit_with(code)


def _codes_iters(codes: str, iters: int | None) -> int:
    """--codes-iters (default 2), refused where --codes record re-encodes nothing."""
    if codes == "record" and iters is not None:
        raise InputError("--codes-iters is for re-encoding (--codes restyle-e4e, e4e or a file); --codes record "
                         "renders the record's own latent", "drop --codes-iters, or give --codes")
    return 2 if iters is None else iters


def _identity_to_reconstruction(cache, rec, adapted) -> float | None:
    """dlib identity distance of the adapted image to the record rendered with its own generator (None, with a
    note, when that generator cannot be had)."""
    from ..editing import render_record
    from ..io.images import tensor_to_pil
    from ..metrics.identity import identity_distance
    from ..editing.generators import generator_for

    try:
        G = generator_for(cache, None, rec)
    except GantuneError as e:
        console.print(f"note: no identity distance ({e.one_line()})")
        return None
    return round(identity_distance(tensor_to_pil(render_record(G, rec)[0]), tensor_to_pil(adapted)), 4)


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt_command)
