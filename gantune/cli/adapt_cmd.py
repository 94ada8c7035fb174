"""``gantune adapt``: render inversion records with a fine-tuned generator (Toonify, StyleGAN-NADA, …) and the
records' HyperStyle offsets (HyperStyle Sec. 4.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, NoiseOpt, OutDirOpt, Progress, console, failure_message
from .edit_cmd import GeneratorCache, RecordsArg


def adapt_command(
    records: RecordsArg,
    target: Annotated[str, typer.Option("--target", "-t", help="Fine-tuned generator of the same architecture: registry "
                                        "name (toonify, stylegan-nada-pixar, …), path or URL.", show_default=False)],
    out: OutDirOpt = Path("out/adapt"),
    layers: Annotated[Optional[str], typer.Option("--layers", help="Offsets to apply: default (convs 128 px and up, as the "
                                                  "reference), all, levels (fine,medium) or layer names (b128.conv0 / "
                                                  "convs.8, comma separated).", show_default=False)] = None,
    offset_scale: Annotated[float, typer.Option("--offset-scale", help="Blend: 0 = plain target, 1 = full offsets.")] = 1.0,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Also write OUT/<stem>_compare.png: "
                                          "[target without offsets | with offsets].")] = False,
    device: DeviceOpt = "auto",
    noise: NoiseOpt = "const",
) -> None:
    """Domain adaptation: the record's latent and offsets rendered with --target. Writes OUT/<stem>.png and a
    manifest.jsonl line per record.

    Example: gantune adapt out/face.safetensors --target toonify -o toon/
    """
    from ..editing import adapt_render, load_record
    from ..io.images import image_grid, save_image, tensor_to_pil
    from ..io.inputs import expand_inputs
    from ..io.manifest import Manifest
    from ..methods.pipeline import output_stems
    from ..runtime import resolve_device

    paths = expand_inputs(records, suffixes=(".safetensors",))
    G, info = GeneratorCache(resolve_device(device)).get(target)
    manifest = Manifest(out / "manifest.jsonl")
    failed = 0
    with Progress(len(paths), "adapt") as bar:
        for path, stem in zip(paths, output_stems(paths)):
            try:
                rec = load_record(path)
                img, applied = adapt_render(G, rec, layers=layers, offset_scale=offset_scale, noise_mode=noise)
                p = out / f"{stem}.png"
                save_image(img[0], p)
                entry = {"status": "ok", "input": str(path), "name": stem, "image": str(p), "layers": applied,
                         "offset_scale": offset_scale, "target": {"spec": target, "sha256": info.get("sha256")}}
                if compare:
                    plain, _ = adapt_render(G, rec, layers=layers, offset_scale=0.0, noise_mode=noise)
                    c = out / f"{stem}_compare.png"
                    save_image(image_grid([tensor_to_pil(plain[0]), tensor_to_pil(img[0])]), c)
                    entry["compare"] = str(c)
                manifest.write(entry)
                bar.advance(f"{path} -> {p}")
            except Exception as e:  # noqa: BLE001
                msg = failure_message(e)
                failed += 1
                manifest.write({"status": "failed", "input": str(path), "name": stem, "error": msg})
                bar.advance(f"{path}: FAILED {msg}")
    console.print(f"{len(paths) - failed} adapted, {failed} failed; manifest: {out / 'manifest.jsonl'}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("adapt")(adapt_command)
