"""``gantune edit``: move inverted images along latent directions (InterFaceGAN) and render them with their offsets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, NoiseOpt, OutDirOpt, Progress, console, failure_message

RecordsArg = Annotated[list[str], typer.Argument(help="Inversion records (.safetensors from gantune invert), folders or globs.",
                                                 show_default=False)]
GeneratorOpt = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="Generator to render with (default: the one named in each record).", show_default=False)]


def _fmt(s: float) -> str:
    """File-name form of a strength: -1.5 -> m1.5, 2 -> p2, 0 -> 0."""
    if s == 0:
        return "0"
    return f"{s:+.2f}".rstrip("0").rstrip(".").replace("+", "p").replace("-", "m")


class GeneratorCache:
    """Loads each generator once per command run."""

    def __init__(self, device) -> None:
        self.device, self._cache = device, {}

    def get(self, spec: str):
        from ..weights import load_generator

        if spec not in self._cache:
            G, info = load_generator(spec, device=self.device)
            self._cache[spec] = (G.eval(), info)
        return self._cache[spec]


def generator_for(cache: GeneratorCache, weights: str | None, rec):
    from ..editing import record_generator_spec
    from ..errors import InputError

    spec = weights or record_generator_spec(rec)
    if not spec:
        raise InputError("the record does not name its generator", "pass --weights")
    G, info = cache.get(spec)
    want = (rec.meta.get("generator") or {}).get("sha256")
    if weights is None and want and info.get("sha256") and want != info.get("sha256"):
        console.print(f"warning: {spec} has sha256 {info['sha256'][:12]}…, the record was made with {want[:12]}…")
    return G


def _paste_target(rec, onto: Path | None):
    """(original photo, alignment transform) for ``--paste``; one-line errors when the record cannot be pasted."""
    from ..align import RECORD_META_KEY
    from ..errors import InputError
    from ..io.images import load_image

    transform = rec.meta.get(RECORD_META_KEY)
    if not transform:
        raise InputError("the record has no alignment transform, so --paste has nothing to paste into",
                         "invert the photo with --align, or use gantune paste with the align manifest")
    src = onto or transform.get("source") or (rec.meta.get("source") or {}).get("path")
    if not src:
        raise InputError("the record does not name its original photo", "pass --onto PHOTO")
    return load_image(src), transform


def edit_command(
    records: RecordsArg,
    direction: Annotated[list[str], typer.Option("--direction", "-d", help="age, smile, pose (InterFaceGAN), a registry "
                                                 "name, or a .pt / .npy file; repeatable.", show_default=False)],
    strength: Annotated[str, typer.Option("--strength", "-s", help="Strength: 2, a list -2,0,2, or START:STOP:COUNT "
                                          "(-3:3:7 gives a strip of 7 and a side-by-side sheet).")] = "2",
    out: OutDirOpt = Path("out/edit"),
    weights: GeneratorOpt = None,
    device: DeviceOpt = "auto",
    noise: NoiseOpt = "const",
    resize: Annotated[Optional[int], typer.Option("--resize", min=8, help="Write images at this side.", show_default=False)] = None,
    paste: Annotated[bool, typer.Option("--paste", help="Also paste each edit back into the original photo "
                                        "(records inverted with --align), as <stem>_<direction>_<s>_photo.png.")] = False,
    onto: Annotated[Optional[Path], typer.Option("--onto", help="With --paste: the original photo, when it has moved "
                                                 "since the inversion.", show_default=False)] = None,
) -> None:
    """Edit inverted images: w + s·n, rendered with the record's offsets. Writes OUT/<stem>_<direction>_<s>.png,
    OUT/<stem>_sheet.png when there are several edits, and manifest.jsonl.

    Example: gantune edit out/face.safetensors --direction age --strength -3:3:7 -o edits/
    """

    from ..editing import load_direction, load_record, parse_strengths, render_record
    from ..editing.render import edited_latents
    from ..io.images import image_grid, save_image, tensor_to_pil
    from ..io.inputs import expand_inputs
    from ..io.manifest import Manifest
    from ..methods.pipeline import output_stems
    from ..runtime import resolve_device

    strengths = parse_strengths(strength)
    dirs = [load_direction(d) for d in direction]
    paths = expand_inputs(records, suffixes=(".safetensors",))
    dev = resolve_device(device)
    cache = GeneratorCache(dev)
    manifest = Manifest(out / "manifest.jsonl")
    failed = 0
    with Progress(len(paths), "edit") as bar:
        for path, stem in zip(paths, output_stems(paths)):
            try:
                rec = load_record(path)
                photo, transform = _paste_target(rec, onto) if paste else (None, None)
                G = generator_for(cache, weights, rec)
                rows, written = [], []
                for d in dirs:
                    n = d.fit(G.num_ws, G.cfg.w_dim)
                    lats = edited_latents(G, rec, n, strengths)
                    imgs = tensor_to_pil(render_record(G, rec, latents=lats, noise_mode=noise))
                    if resize:
                        imgs = [im.resize((resize, resize)) for im in imgs]
                    for s, im in zip(strengths, imgs):
                        p = out / f"{stem}_{d.name}_{_fmt(s)}.png"
                        save_image(im, p)
                        written.append(str(p))
                        if photo is not None:
                            from ..align import paste_back

                            pasted = out / f"{stem}_{d.name}_{_fmt(s)}_photo.png"
                            save_image(paste_back(im, photo, transform), pasted)
                            written.append(str(pasted))
                    rows.append(imgs)
                entry = {"status": "ok", "input": str(path), "name": stem, "images": written,
                         "directions": [d.name for d in dirs], "strengths": strengths}
                if len(written) > 1:
                    sheet = out / f"{stem}_sheet.png"
                    save_image(image_grid([im for r in rows for im in r], cols=len(strengths)), sheet)
                    entry["sheet"] = str(sheet)
                manifest.write(entry)
                bar.advance(f"{path} -> {len(written)} image(s)")
            except Exception as e:  # noqa: BLE001 - one bad record must not stop the others
                msg = failure_message(e)
                failed += 1
                manifest.write({"status": "failed", "input": str(path), "name": stem, "error": msg})
                bar.advance(f"{path}: FAILED {msg}")
    console.print(f"{len(paths) - failed} edited, {failed} failed; manifest: {out / 'manifest.jsonl'}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("edit")(edit_command)
