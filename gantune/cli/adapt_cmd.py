"""``gantune adapt``: render inversion records with a fine-tuned generator (Toonify, StyleGAN-NADA, …) and the
records' HyperStyle offsets (HyperStyle Sec. 4.4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import GantuneError, InputError
from .common import (DeviceOpt, DtypeOpt, IdentityOpt, NoiseOpt, OverwriteOpt, RecordsArg, ShardOpt, console,
                     dropped_short_flags, exit_with, identity_metric, input_items, OutDirOpt, print_identity_note, run_batch, shard_of,
                     value, writers_for)
from .directions_cmd import finite_in


def adapt_command(
    records: RecordsArg,
    target: Annotated[str, typer.Option("--target", help="Fine-tuned generator of the same architecture: registry "
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
    from ..editing import load_record
    from ..editing.generators import GeneratorCache
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
    encoder = None if codes == "record" else _codes_encoder(codes, dev)
    # on a GPU the PNGs are the slow part (0.2 s each at 1024 px): the image and its comparison saved in threads
    with ImageSaver(writers_for(cache.device)) as saver:
        adaptation = _Adaptation(G, {"spec": target, "sha256": info.get("sha256")}, cache, saver, encoder, codes_iters,
                                 layers, offset_scale, noise, compare, identity)
        code = run_batch(batch, "adapted", load=lambda it: load_record(it.input), write=saver.wrap(adaptation.write))
    exit_with(code)


def _codes_iters(codes: str, iters: int | None) -> int:
    """--codes-iters (default 2), refused where --codes record re-encodes nothing."""
    if codes == "record" and iters is not None:
        raise InputError("--codes-iters is for re-encoding (--codes restyle-e4e, e4e or a file); --codes record "
                         "renders the record's own latent", "drop --codes-iters, or give --codes")
    return 2 if iters is None else iters


def _codes_encoder(codes: str, device):
    """The e4e / ReStyle-e4e encoder of --codes (a name of :data:`DEFAULTS`, a registry name or a file)."""
    from ..methods.e4e.checkpoint import DEFAULTS, load_style_encoder

    return load_style_encoder(DEFAULTS.get(codes, codes), device=device)


@dataclass
class _Adaptation:
    """Per record: its codes re-encoded (--codes), rendered with the target, the image and comparison written."""

    G: object  # the target generator
    target: dict  # its spec and sha256, for the manifest
    cache: object  # gantune.editing.generators.GeneratorCache: the records' own generators
    saver: object  # gantune.io.runner.ImageSaver
    encoder: object | None  # the --codes encoder; None for --codes record
    codes_iters: int
    layers: str | None
    offset_scale: float
    noise: str | None
    compare: bool
    identity: bool

    def source(self, rec):
        """The record's own generator, for the identity distance (None, with a note, when it cannot be had)."""
        from ..editing.generators import generator_for

        try:
            return generator_for(self.cache, None, rec)
        except GantuneError as e:
            console.print(f"note: no identity distance ({e.one_line()})")
            return None

    def write(self, item, rec, outs) -> None:
        from ..editing.adapt import adapt_record
        from ..editing.generators import generator_for
        from ..io.images import image_grid, tensor_to_pil
        from ..methods.e4e.adapt import recode_record

        if self.encoder is not None:
            rec = recode_record(rec, self.encoder, generator_for(self.cache, None, rec), iters=self.codes_iters,
                                noise_mode=self.noise or "const", base=item.input.parent)
            item.info["codes"] = rec.meta["codes"]
        res = adapt_record(self.G, rec, layers=self.layers, offset_scale=self.offset_scale, noise_mode=self.noise,
                           compare=self.compare, source=self.source(rec) if self.identity else None)
        self.saver.image(outs, "image", f"{item.name}.png", res.image)
        if res.plain is not None:
            self.saver.image(outs, "compare", f"{item.name}_compare.png",
                             image_grid([tensor_to_pil(res.plain), tensor_to_pil(res.image)]))
        item.info.update(layers=res.layers, target=self.target)
        if self.identity:
            item.metrics["identity_to_reconstruction"] = res.identity


def register(app: typer.Typer) -> None:
    app.command("adapt", cls=dropped_short_flags(t="--target"))(adapt_command)  # -t: paste --transform
