"""``gantune edit``: move inverted images along latent directions (InterFaceGAN, GANSpace) and render them with their
offsets."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (BatchOpt, DeviceOpt, DtypeOpt, IdentityOpt, NoiseOpt, OverwriteOpt, RecordsArg, ResizeOpt, ShardOpt,
                     WeightsOpt, exit_with, identity_metric, input_items, OutDirOpt, print_identity_note, run_batch,
                     shard_of, value, writers_for)
from ..errors import InputError
from .directions_cmd import finite_in

MAX_IMAGES = 256  # edits per record (directions x strengths): beyond this a strip is a video, not a sheet
SHEET_MAX_WIDTH = 8192  # the contact sheet's tiles shrink to keep it under this width


def strength_label(s: float) -> str:
    """File-name form of a strength, unique and exact to 12 significant digits: 2 -> p2, -1.5 -> m1.5, 0.001 ->
    p0.001, 1e-05 -> p1e-05, 0 -> 0."""
    if s == 0:
        return "0"
    text = f"{abs(s):.12g}"
    return ("p" if s > 0 else "m") + text


def paste_source(rec, onto: Path | None) -> Path:
    """The original photo to paste an edit of ``rec`` into (one-line errors when the record cannot be pasted)."""
    from ..align import RECORD_META_KEY

    transform = rec.meta.get(RECORD_META_KEY)
    if not transform:
        raise InputError("the record has no alignment transform, so --paste has nothing to paste into",
                         "invert the photo with --align, or use gantune paste with the align manifest")
    src = onto or transform.get("source") or (rec.meta.get("source") or {}).get("path")
    if not src:
        raise InputError("the record does not name its original photo", "pass --onto PHOTO")
    return Path(src)


def text_slug(text: str) -> str:
    """File-name form of an edit text: lowercase letters and digits, other runs as '-', at most 40 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return slug or "text"


def _check_edit_kind(direction, text, *, paste: bool, onto, **given) -> None:
    """One edit kind per run, and no option that the kind would ignore: refused in one line before any work.
    ``given``: the options that belong to one kind (None when not given)."""
    if (text is None) == (not direction):
        raise InputError("give --direction or --text" if text is None else "--direction and --text go separately",
                         "one edit kind per run: latent directions (--direction) or a text (--text)")
    if text is not None and not text.strip():
        raise InputError("--text is empty", "give the target description, e.g. --text \"a smiling face\"")
    text_only = ("alpha", "neutral", "beta", "clip", "styleclip_stats")
    wrong = [k for k in (text_only if text is None else ("strength",)) if given.get(k) is not None]
    if wrong:
        opt = "--" + wrong[0].replace("_", "-")
        raise InputError(f"{opt} is for {'--text' if text is None else '--direction'} edits; this run edits "
                         f"{'along --direction' if text is None else 'towards --text'}",
                         "use --strength with --direction, --alpha with --text" if opt in ("--alpha", "--strength")
                         else f"drop {opt}")
    if onto is not None and not paste:
        raise InputError("--onto names the photo for --paste, which is not given", "add --paste, or drop --onto")


def edit_command(
    records: RecordsArg,
    direction: Annotated[Optional[list[str]], typer.Option("--direction", "-d", help="age, smile, pose (InterFaceGAN), a "
                                                           "registry name (interfacegan-age, …), a .pt / .npy file, or a "
                                                           "GANSpace component FILE.pt:K; repeatable.",
                                                           show_default=False)] = None,
    strength: Annotated[Optional[str], typer.Option("--strength", "-s", help="With --direction: strength: 2 (the "
                                                    "default), a list -2,0,2, or START:STOP:COUNT (-3:3:7 gives a strip "
                                                    f"of 7 and a side-by-side sheet; at most {MAX_IMAGES} images per "
                                                    "record).", show_default=False)] = None,
    out: OutDirOpt = Path("out/edit"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    noise: NoiseOpt = None,
    batch_size: BatchOpt = 8,
    resize: ResizeOpt = None,
    paste: Annotated[bool, typer.Option("--paste", help="Also paste each edit back into the original photo "
                                        "(records inverted with --align), as <stem>_<direction>_<s>_photo.png.")] = False,
    onto: Annotated[Optional[Path], typer.Option("--onto", help="With --paste: the original photo, when it has moved "
                                                 "since the inversion.", show_default=False)] = None,
    identity: IdentityOpt = True,
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="StyleCLIP global direction towards this text "
                                                "(instead of --direction), e.g. \"a smiling face\".",
                                                show_default=False)] = None,
    neutral: Annotated[Optional[str], typer.Option("--neutral", help="With --text: the neutral text the edit starts "
                                                   "from (default: a face).", show_default=False)] = None,
    alpha: Annotated[Optional[str], typer.Option("--alpha", help="With --text: manipulation strength(s) in style "
                                                 "standard deviations, as --strength: 3 (the default), -3,0,3 or "
                                                 "-5:5:11.", show_default=False)] = None,
    beta: Annotated[Optional[float], typer.Option("--beta", callback=finite_in("--beta", 0.0, 1.0),
                                                  help="With --text: disentanglement threshold, 0 to 1 (default 0.15); "
                                                  "channels whose relevance to the text is below it stay unchanged.",
                                                  show_default=False)] = None,
    clip: Annotated[Optional[str], typer.Option("--clip", help="With --text: the CLIP model (registry name or file; "
                                                "OpenAI layout; default clip-vit-b-32).", show_default=False)] = None,
    styleclip_stats: Annotated[Optional[str], typer.Option("--styleclip-stats", help="With --text: the generator's "
                                                           "channel statistics (from gantune directions styleclip-stats); "
                                                           "default: StyleCLIP's published FFHQ 1024 files.",
                                                           show_default=False)] = None,
    shard: ShardOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Edit inverted images: w + s·n, or a StyleCLIP text direction in style space (--text), rendered with the
    record's offsets and tuned weights. Writes
    OUT/<stem>_<direction>_<s>.png (s as p2, m1.5, 0), OUT/<stem>_sheet.png when there are several edits, and one
    manifest.jsonl line per record with each edit's identity distance to the unedited reconstruction. --weights: the
    generator (default: the one named in each record).

    Example: gantune edit out/face.safetensors --direction age --strength -3:3:7 -o edits/
             gantune edit out/face.safetensors --text "a smiling face" --neutral "a face" --alpha 0:4:5 --beta 0.15
    """
    from .. import progress
    from ..editing import load_direction, load_record, parse_strengths, render_record
    from ..editing.directions import input_identity
    from ..editing.generators import GeneratorCache, generator_for
    from ..editing.render import edited_latents
    from ..editing.text import DEFAULT_BETA, DEFAULT_CLIP, DEFAULT_NEUTRAL, TextEditor, render_text_edit
    from ..io.images import image_grid, tensor_to_pil, to_width
    from ..io.runner import Batch, ImageSaver
    from ..metrics.identity import descriptor, identity_distance
    from ..runtime import resolve_device, resolve_dtype

    _check_edit_kind(direction, text, strength=strength, alpha=alpha, neutral=neutral, beta=beta, clip=clip,
                     styleclip_stats=styleclip_stats, paste=paste, onto=onto)
    option, given = ("--strength", "2" if strength is None else strength) if text is None else \
        ("--alpha", "3" if alpha is None else alpha)
    neutral = DEFAULT_NEUTRAL if neutral is None else neutral
    beta, clip = DEFAULT_BETA if beta is None else beta, DEFAULT_CLIP if clip is None else clip
    strengths = parse_strengths(given, option)
    labels = [strength_label(s) for s in strengths]
    if len(set(labels)) != len(labels):
        dup = next(lb for lb in labels if labels.count(lb) > 1)
        raise InputError(f"{option} {given}: the strength {dup} appears twice", "give each strength once")
    dirs = [load_direction(d) for d in direction or []]
    names = [d.name for d in dirs] if text is None else [text_slug(text)]
    if len(set(names)) != len(names):
        raise InputError(f"--direction {next(n for n in names if names.count(n) > 1)} is given twice",
                         "give each direction once")
    if len(names) * len(strengths) > MAX_IMAGES:
        raise InputError(f"{len(names)} direction(s) x {len(strengths)} strengths = {len(names) * len(strengths)} images "
                         f"per record; the limit is {MAX_IMAGES}", "use fewer strengths, e.g. --strength -3:3:61")
    noise = value(noise)

    def edit_names(stem: str) -> list[tuple[int, int, str]]:
        return [(di, si, f"{stem}_{d}_{lb}") for di, d in enumerate(names) for si, lb in enumerate(labels)]

    def planned(item) -> list[str]:
        files = [f"{n}.png" for _, _, n in edit_names(item.name)]
        if paste:
            files += [f"{n}_photo.png" for _, _, n in edit_names(item.name)]
        return files + ([f"{item.name}_sheet.png"] if len(files) > 1 else [])

    identity, identity_note = identity_metric(identity, load=False)
    # inputs by content (input_identity): a re-run from another folder, or with another spelling of a path, resumes
    params = {"direction": [[d.name, input_identity(d.source)] for d in dirs], "strength": strengths,
              "weights": input_identity(weights), "noise": noise, "dtype": value(dtype), "resize": resize,
              "paste": paste, "onto": input_identity(onto), "identity": identity}
    if text is not None:
        params = dict(params, direction=None, strength=None, text=text, neutral=neutral, alpha=strengths, beta=beta,
                      clip=input_identity(clip), styleclip_stats=input_identity(styleclip_stats))
    batch = Batch("edit", input_items(records, suffixes=(".safetensors",)), out, params=params, planned=planned,
                  shard=shard_of(shard), overwrite=overwrite, extra_inputs=[onto] if onto is not None else [])
    batch.prepare()
    dev = resolve_device(device)
    cache = GeneratorCache(dev, resolve_dtype(value(dtype), dev))
    if identity and batch.todo:  # loads dlib's models (a file that is there but unreadable: the metric is skipped)
        identity, identity_note = identity_metric(True)
    print_identity_note(identity_note, batch.todo)
    texts = None if text is None else TextEditor(text, neutral, beta, clip, styleclip_stats, cache.device)
    if texts is not None and batch.todo:
        texts.prepare()
    tile = max(32, min(256, SHEET_MAX_WIDTH // len(strengths)))
    # on a GPU the PNGs are the slow part (0.2 s each at 1024 px against milliseconds a render): saved in threads
    saver = ImageSaver(writers_for(cache.device))

    def load(item):
        rec = load_record(item.input)
        src = paste_source(rec, onto) if paste else None
        if src is not None:
            batch.forbidden.add(Path(os.path.realpath(src)))
        return rec, src

    def write_item(item, data, outs) -> None:
        from ..align import RECORD_META_KEY, paste_back
        from ..io.images import load_image

        rec, src = data
        photo = load_image(src) if src is not None else None
        G = generator_for(cache, weights, rec)
        ref = descriptor(tensor_to_pil(render_record(G, rec, noise_mode=noise)[0])) if identity else None
        dists = {}
        thumbs = []
        jobs = edit_names(item.name)
        if texts is not None:
            tdir = texts.direction(G)

            def render(chunk):
                return render_text_edit(G, rec, tdir, chunk, noise_mode=noise)

            renders = [render]
            item.info.update(text=text, neutral=neutral, beta=beta, channels=tdir.channels,
                             top_channels=[[n_, c, round(r, 4)] for n_, c, r in tdir.top])
        else:
            renders = []
            for d in dirs:
                def render(chunk, n=d.fit(G.num_ws, G.cfg.w_dim)):
                    return render_record(G, rec, latents=edited_latents(G, rec, n, chunk), noise_mode=noise)

                renders.append(render)
        for di, render in enumerate(renders):
            for k in range(0, len(strengths), batch_size):
                chunk = strengths[k: k + batch_size]
                imgs = tensor_to_pil(render(chunk))
                for j, im in enumerate(imgs):
                    _, _, name = jobs[di * len(strengths) + k + j]
                    if resize:
                        im = to_width(im, resize)
                    saver.image(outs, name, f"{name}.png", im)
                    if ref is not None:
                        dists[name] = round(identity_distance(ref, im), 4)
                    if photo is not None:
                        saver.image(outs, f"{name}_photo", f"{name}_photo.png",
                                    paste_back(im, photo, rec.meta[RECORD_META_KEY]))
                    thumbs.append(im if im.width <= tile else to_width(im, tile))
                progress.step(di * len(strengths) + k + len(chunk), len(jobs), "image")
        if len(thumbs) > 1:
            saver.image(outs, "sheet", f"{item.name}_sheet.png", image_grid(thumbs, cols=len(strengths)))
        item.info.update(directions=names, strengths=strengths)
        if ref is not None:
            item.metrics["identity_to_reconstruction"] = dists

    with saver:
        code = run_batch(batch, "edited", load=load, write=saver.wrap(write_item))
    exit_with(code)


def register(app: typer.Typer) -> None:
    app.command("edit")(edit_command)
