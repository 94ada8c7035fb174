"""``gantune edit``: move inverted images along latent directions (InterFaceGAN, GANSpace) or towards a text
(StyleCLIP) and render them with their offsets. What an edit computes is :mod:`gantune.editing.edit`; this module
reads the options, names the files and writes them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (BatchOpt, DeviceOpt, DtypeOpt, IdentityOpt, NoiseOpt, OverwriteOpt, RecordsArg, ResizeOpt, ShardOpt,
                     WeightsOpt, dropped_short_flags, exit_with, identity_metric, input_items, OutDirOpt, print_identity_note, run_batch,
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


def _text_option(kind: type, name: str, help: str, **kw):
    """An option of text edits: optional (None when not given), its help starting "With --text:"."""
    return Annotated[Optional[kind], typer.Option(name, help=f"With --text: {help}", show_default=False, **kw)]


DirectionOpt = Annotated[Optional[list[str]], typer.Option(
    "--direction", "-d", help="age, smile, pose (InterFaceGAN), a registry name (interfacegan-age, …), a .pt / .npy "
    "file, or a GANSpace component FILE.pt:K; repeatable.", show_default=False)]
StrengthOpt = Annotated[Optional[str], typer.Option(
    "--strength", "-s", help="With --direction: strength: 2 (the default), a list -2,0,2, or START:STOP:COUNT (-3:3:7 "
    f"gives a strip of 7 and a side-by-side sheet; at most {MAX_IMAGES} images per record).", show_default=False)]
PasteOpt = Annotated[bool, typer.Option("--paste", help="Also paste each edit back into the original photo (records "
                                        "inverted with --align), as <stem>_<direction>_<s>_photo.png.")]
OntoOpt = Annotated[Optional[Path], typer.Option("--onto", help="With --paste: the original photo, when it has moved "
                                                 "since the inversion.", show_default=False)]
TextOpt = Annotated[Optional[str], typer.Option("--text", help="StyleCLIP global direction towards this text "
                                                "(instead of --direction), e.g. \"a smiling face\".", show_default=False)]
NeutralOpt = _text_option(str, "--neutral", "the neutral text the edit starts from (default: a face).")
AlphaOpt = _text_option(str, "--alpha", "manipulation strength(s) in style standard deviations, as --strength: 3 (the "
                        "default), -3,0,3 or -5:5:11.")
BetaOpt = _text_option(float, "--beta", "disentanglement threshold, 0 to 1 (default 0.15); channels whose relevance "
                       "to the text is below it stay unchanged.", callback=finite_in("--beta", 0.0, 1.0))
ClipOpt = _text_option(str, "--clip", "the CLIP model (registry name or file; OpenAI layout; default clip-vit-b-32).")
StatsOpt = _text_option(str, "--styleclip-stats", "the generator's channel statistics (from gantune directions "
                        "styleclip-stats); default: StyleCLIP's published FFHQ 1024 files.")


@dataclass
class _Plan:
    """What each record's edit makes: its strengths (and their file-name labels) along each named direction, or
    towards the text with its settings."""

    strengths: list[float]
    labels: list[str]
    names: list[str]  # the directions' names, or the text's slug
    dirs: list  # the Directions (none for a text edit)
    text: str | None = None
    neutral: str | None = None
    beta: float | None = None
    clip: str | None = None
    stats: str | None = None  # --styleclip-stats

    def files(self, stem: str) -> list[str]:
        """The edits' names, direction by direction, strength by strength."""
        return [f"{stem}_{d}_{lb}" for d in self.names for lb in self.labels]

    def planned(self, item, paste: bool) -> list[str]:
        files = [f"{n}.png" for n in self.files(item.name)]
        if paste:
            files += [f"{n}_photo.png" for n in self.files(item.name)]
        return files + ([f"{item.name}_sheet.png"] if len(files) > 1 else [])

    def params(self, **common) -> dict:
        """The batch's parameters: the edit's, then ``common``. Inputs go by content (input_identity): a re-run from
        another folder, or with another spelling of a path, resumes."""
        from ..editing.directions import input_identity

        params = {"direction": [[d.name, input_identity(d.source)] for d in self.dirs], "strength": self.strengths,
                  **common}
        if self.text is None:
            return params
        return dict(params, direction=None, strength=None, text=self.text, neutral=self.neutral, alpha=self.strengths,
                    beta=self.beta, clip=input_identity(self.clip), styleclip_stats=input_identity(self.stats))


def _plan(direction, strength, text, alpha, neutral, beta, clip, stats) -> _Plan:
    """The edit the options ask for, refused in one line where they do not add up."""
    from ..editing import load_direction, parse_strengths
    from ..editing.text import DEFAULT_BETA, DEFAULT_CLIP, DEFAULT_NEUTRAL

    option, given = ("--strength", "2" if strength is None else strength) if text is None else \
        ("--alpha", "3" if alpha is None else alpha)
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
    return _Plan(strengths, labels, names, dirs, text, DEFAULT_NEUTRAL if neutral is None else neutral,
                 DEFAULT_BETA if beta is None else beta, DEFAULT_CLIP if clip is None else clip, stats)


@dataclass
class _Edits:
    """Per record: load it (and find its photo for --paste), render its edits and write them with the sheet."""

    plan: _Plan
    batch: object  # gantune.io.runner.Batch
    cache: object  # gantune.editing.generators.GeneratorCache
    saver: object  # gantune.io.runner.ImageSaver
    texts: object | None  # gantune.editing.text.TextEditor of a text edit
    weights: str | None
    noise: str | None
    batch_size: int
    resize: int | None
    paste: bool
    onto: Path | None
    identity: bool

    def load(self, item):
        from ..editing import load_record
        from ..editing.edit import paste_source

        rec = load_record(item.input)
        src = paste_source(rec, self.onto) if self.paste else None
        if src is not None:
            self.batch.forbidden.add(Path(os.path.realpath(src)))
        return rec, src

    def renderers(self, item, G, rec) -> list:
        from ..editing.edit import direction_renderer, text_renderer

        if self.texts is None:
            return [direction_renderer(G, rec, d, noise_mode=self.noise) for d in self.plan.dirs]
        tdir = self.texts.direction(G)
        item.info.update(text=self.plan.text, neutral=self.plan.neutral, beta=self.plan.beta, channels=tdir.channels,
                         top_channels=[[n_, c, round(r, 4)] for n_, c, r in tdir.top])
        return [text_renderer(G, rec, tdir, noise_mode=self.noise)]

    def write(self, item, data, outs) -> None:
        from ..editing.edit import edited_images
        from ..editing.generators import generator_for
        from ..io.images import image_grid, load_image, to_width

        rec, src = data
        photo = load_image(src) if src is not None else None
        G = generator_for(self.cache, self.weights, rec)
        renderers = self.renderers(item, G, rec)
        names, n = self.plan.files(item.name), len(self.plan.strengths)
        tile = max(32, min(256, SHEET_MAX_WIDTH // n))
        dists, thumbs = {}, []
        for e in edited_images(G, rec, renderers, self.plan.strengths, batch_size=self.batch_size,
                               noise_mode=self.noise, resize=self.resize, photo=photo, identity=self.identity):
            name = names[e.direction * n + e.strength]
            self.saver.image(outs, name, f"{name}.png", e.image)
            if e.identity is not None:
                dists[name] = e.identity
            if e.photo is not None:
                self.saver.image(outs, f"{name}_photo", f"{name}_photo.png", e.photo)
            thumbs.append(e.image if e.image.width <= tile else to_width(e.image, tile))
        if len(thumbs) > 1:
            self.saver.image(outs, "sheet", f"{item.name}_sheet.png", image_grid(thumbs, cols=n))
        item.info.update(directions=self.plan.names, strengths=self.plan.strengths)
        if self.identity:
            item.metrics["identity_to_reconstruction"] = dists


def edit_command(
    records: RecordsArg,
    direction: DirectionOpt = None,
    strength: StrengthOpt = None,
    out: OutDirOpt = Path("out/edit"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    noise: NoiseOpt = None,
    batch_size: BatchOpt = 8,
    resize: ResizeOpt = None,
    paste: PasteOpt = False,
    onto: OntoOpt = None,
    identity: IdentityOpt = True,
    text: TextOpt = None,
    neutral: NeutralOpt = None,
    alpha: AlphaOpt = None,
    beta: BetaOpt = None,
    clip: ClipOpt = None,
    styleclip_stats: StatsOpt = None,
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
    from ..editing.directions import input_identity
    from ..editing.generators import GeneratorCache
    from ..editing.text import TextEditor
    from ..io.runner import Batch, ImageSaver
    from ..runtime import resolve_device, resolve_dtype

    _check_edit_kind(direction, text, strength=strength, alpha=alpha, neutral=neutral, beta=beta, clip=clip,
                     styleclip_stats=styleclip_stats, paste=paste, onto=onto)
    plan = _plan(direction, strength, text, alpha, neutral, beta, clip, styleclip_stats)
    noise = value(noise)
    identity, identity_note = identity_metric(identity, load=False)
    params = plan.params(weights=input_identity(weights), noise=noise, dtype=value(dtype), resize=resize, paste=paste,
                         onto=input_identity(onto), identity=identity)
    batch = Batch("edit", input_items(records, suffixes=(".safetensors",)), out, params=params,
                  planned=lambda item: plan.planned(item, paste), shard=shard_of(shard), overwrite=overwrite,
                  extra_inputs=[onto] if onto is not None else [])
    batch.prepare()
    dev = resolve_device(device)
    cache = GeneratorCache(dev, resolve_dtype(value(dtype), dev))
    if identity and batch.todo:  # loads dlib's models (a file that is there but unreadable: the metric is skipped)
        identity, identity_note = identity_metric(True)
    print_identity_note(identity_note, batch.todo)
    texts = None if text is None else TextEditor(text, plan.neutral, plan.beta, plan.clip, styleclip_stats, cache.device)
    if texts is not None and batch.todo:
        texts.prepare()
    # on a GPU the PNGs are the slow part (0.2 s each at 1024 px against milliseconds a render): saved in threads
    saver = ImageSaver(writers_for(cache.device))
    edits = _Edits(plan, batch, cache, saver, texts, weights, noise, batch_size, resize, paste, onto, identity)
    with saver:
        code = run_batch(batch, "edited", load=edits.load, write=saver.wrap(edits.write))
    exit_with(code)


def register(app: typer.Typer) -> None:
    app.command("edit", cls=dropped_short_flags(t="--text"))(edit_command)  # -t: paste --transform
