"""``gantune directions``: editing directions for any generator: GANSpace (PCA of sampled w), InterFaceGAN boundaries
fitted on landmark measures or your labels, and a check of what a direction does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import BatchOpt, DeviceOpt, WeightsOpt, console, dropped_short_flags
from .validate import finite_float

directions_app = typer.Typer(help="Compute editing directions for a generator.", no_args_is_help=True)

SEED_MAX = 2**63 - 1  # seeds and seed ranges stay within what torch.Generator.manual_seed takes
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite the output file.")]


def finite_in(option: str, lo: float, hi: float):
    """A Typer option callback: a finite number from ``lo`` to ``hi`` (``None`` passes through), refused in one line
    naming ``option`` (a NaN is said to be one, not to be out of range)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        v = finite_float(value, option)
        if not lo <= v <= hi:
            raise InputError(f"{option} {v:g} is out of range", f"give a number from {lo:g} to {hi:g}")
        return v

    return check


def check_output_file(out: Path | None, *, force: bool | None = None, inputs=(), what: str = ".pt file") -> None:
    """Refuse, before anything is loaded or computed, an ``-o`` that cannot or must not be written: a folder, a path
    below a file, one of the command's input files (even with --force), or an existing file when ``force`` is False
    (``None``: the command overwrites its reports without asking)."""
    if out is None:
        return
    if out.is_dir():
        raise InputError(f"-o {out} is a folder", f"give a {what} path")
    above = next((q for q in out.parents if q.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"-o {out}: {above} is a file, not a folder", f"give a {what} path in a folder")
    real = os.path.realpath(out)
    for i in inputs:
        if i and Path(i).is_file() and os.path.realpath(i) == real:
            raise InputError(f"-o {out} is an input of this command",
                             "choose another output file; gantune never writes over its inputs")
    if force is False and out.exists():
        raise InputError(f"-o {out} exists", f"give a new {what}, or --force to overwrite it")


@directions_app.command("ganspace", cls=dropped_short_flags(k="--components"))  # -k: weights list --kind
def ganspace_command(
    weights: WeightsOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .pt file (the published GANSpace layout).")],
    samples: Annotated[int, typer.Option("--samples", "-n", min=2, help="Random z samples for the PCA.")] = 100_000,
    components: Annotated[Optional[int], typer.Option("--components", min=1, help="Principal components to keep, "
                                                      "at most w_dim (default: 80, or w_dim when smaller).",
                                                      show_default=False)] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """PCA of the generator's W space (GANSpace). The file works with
    `gantune edit REC --direction OUT.pt:K` (component K, additive, in σ) or `OUT.pt:K:START-END` / `OUT.pt:K:fine`.

    Example: gantune directions ganspace --weights demo-faces -o ganspace.pt --samples 100000 --components 80
    """
    from ..editing.ganspace import compute_ganspace
    from ..runtime import resolve_device
    from ..weights import load_generator

    check_output_file(out, force=force, inputs=[weights])
    if not weights:
        raise InputError("directions ganspace needs the generator", "give --weights (a registry name, path or URL)")
    dev = resolve_device(device)
    G, info = load_generator(weights, device=dev)
    k = min(80, G.cfg.w_dim) if components is None else components
    gs = compute_ganspace(G.eval(), samples=samples, components=k, seed=seed, device=dev)
    gs.meta["generator"] = {k: info.get(k) for k in ("name", "sha256", "path") if info.get(k) is not None}
    gs.meta["generator"]["spec"] = str(weights)
    gs.save(out)
    ev = gs.meta["explained_variance"]
    console.print(f"{gs.num_components} components from {samples} samples: first explains {ev[0]:.1%}, "
                  f"first 10 {sum(ev[:10]):.1%}; layer ranges {gs.layer_ranges}")
    console.print(f"wrote {out}; edit with: gantune edit RECORD --direction {out}:0 --strength -3:3:7")


@directions_app.command("fit")
def fit_command(
    attribute: Annotated[str, typer.Option("--attribute", "-a", help="pose, smile, mouth-open or eyes-open (measured "
                                           "with dlib's 68 landmarks), or any name with --labels.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .pt file (InterFaceGAN's layout, (1, w_dim)); the "
                                      "fit's facts go to a .json beside it.", show_default=False)],
    weights: WeightsOpt = None,
    samples: Annotated[Optional[int], typer.Option("--samples", "-n", min=8, help="Generator samples (seeds --seed …) "
                                                   "to measure (default 2000; not with --labels).",
                                                   show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="CSV of SEED_OR_RECORD,VALUE rows for an attribute "
                                                   "you measure yourself (instead of sampling); values of two levels "
                                                   "(0/1) are the two classes.", show_default=False)] = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Directions to keep unchanged (conditional "
                                                      "manipulation): the new direction is made orthogonal to them; a "
                                                      "file or a registry name; repeatable.", show_default=False)] = None,
    fraction: Annotated[float, typer.Option("--fraction", callback=finite_in("--fraction", 0.01, 0.5),
                                            help="Top and bottom share of the samples used as the two classes (0.01 to "
                                            "0.5).")] = 0.25,
    truncation: Annotated[Optional[float], typer.Option("--truncation", callback=finite_in("--truncation", 0.0, 2.0),
                                                        help="Truncation psi of the samples, 0 to 2 (default 1; "
                                                        "not with --labels).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=SEED_MAX, help="First sample seed (default 0; not "
                                                "with --labels).", show_default=False)] = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Fit an InterFaceGAN direction on any generator: sample it, measure the attribute on each image (images without
    a detected face are left out and counted), fit a linear boundary in W, write its unit normal. The accuracy shown
    is held out (a fixed 20% of each class left out of a first fit); a warning says when it is near chance. Use the
    direction with `gantune edit REC --direction OUT.pt`.

    Example: gantune directions fit --attribute pose --weights demo-faces --samples 2000 -o pose.pt
    """
    from ..editing import load_direction
    from ..editing.fit import ATTRIBUTES, fit_direction, read_labels, sample_and_measure, save_direction
    from ..runtime import resolve_device
    from ..weights import load_generator
    from .common import Progress

    if labels is None and attribute not in ATTRIBUTES:
        raise InputError(f"--attribute {attribute!r} is not measured by gantune",
                         f"use one of {', '.join(ATTRIBUTES)}, or give your own values with --labels")
    _check_fit_options(out, weights=weights, labels=labels, keep=keep or [], force=force,
                       sampling={"--samples": samples, "--seed": seed, "--truncation": truncation})
    keep_dirs = [load_direction(k) for k in keep or []]
    for k, d in zip(keep or [], keep_dirs):
        if not float(d.vector.norm()) > 0:
            raise InputError(f"--keep {k} is a zero vector; it has no direction to keep", "give a non-zero direction")
    samples, seed, truncation = samples or 2000, seed or 0, 1.0 if truncation is None else truncation
    dev = resolve_device(device)
    G, info = load_generator(weights, device=dev)
    G.eval()
    missing = 0
    if labels is not None:
        ws, values = read_labels(labels, G, device=dev)
    else:
        with Progress(samples, f"measure {attribute}") as bar:
            bar.begin(f"{samples} samples")
            ws, vals, missing = sample_and_measure(G, attributes=(attribute,), samples=samples, seed=seed,
                                                   batch_size=batch_size, truncation=truncation, device=dev,
                                                   progress=lambda done, total: bar.step(done, total, "sample"))
        values = vals[attribute]
    fit = fit_direction(ws, values, fraction=fraction, keep=[d.fit(G.num_ws, G.cfg.w_dim)[0] for d in keep_dirs])
    r = _correlation(ws, fit.normal, values)
    meta = {"attribute": attribute, "generator": {"spec": weights, "sha256": info.get("sha256")},
            "samples": samples if labels is None else len(values), "no_face": missing, "measured": len(values),
            "used": fit.used, "held_out": fit.held_out, "fraction": fraction, "accuracy": fit.accuracy,
            "train_accuracy": fit.train_accuracy, "correlation": r, "seed": seed, "truncation": truncation,
            "labels": None if labels is None else str(labels), "keep": [d.source for d in keep_dirs]}
    if labels is not None:
        meta.update(seed=None, truncation=None)
    save_direction(fit.normal, out, meta)
    console.print(f"{attribute}: {len(values)} measured" + (f", {missing} without a face (left out)" if missing else "")
                  + f"; held-out accuracy {fit.accuracy:.1%} on {fit.held_out} of the {fit.used} samples used; "
                  f"corr(w·n, {attribute}) = " + (f"{r:+.2f}" if r == r else "undefined"))
    if fit.warning():
        console.print(fit.warning())
    console.print(f"wrote {out}; edit with: gantune edit RECORD --direction {out} --strength -3:3:7")


def _check_fit_options(out: Path, *, weights, labels: Path | None, keep: list[str], force: bool,
                       sampling: dict) -> None:
    """directions fit's options, checked before anything loads: the outputs (the .pt and the .json beside it), the
    labels file, the generator, and no sampling option (``sampling``: option -> value or None) with --labels."""
    given = [o for o, v in sampling.items() if v is not None]
    if labels is not None and given:
        raise InputError(f"{given[0]} is for sampling the generator; with --labels the rows name the samples",
                         f"drop {given[0]}, or drop --labels")
    if out.suffix.lower() == ".json":
        raise InputError(f"-o {out}: the direction is a .pt file (its facts go to a .json beside it)", "give -o NAME.pt")
    for o in (out, out.with_suffix(".json")):
        check_output_file(o, force=force, inputs=[weights, labels, *keep])
    if labels is not None and not labels.is_file():
        raise InputError(f"{labels}: no such file", "give a CSV of SEED_OR_RECORD,VALUE rows")
    if not weights:
        raise InputError("directions fit needs the generator", "give --weights (a registry name, path or URL)")


def _correlation(ws, normal, values) -> float:
    """corr(w·n, values) over all the samples (NaN when either side does not vary)."""
    import numpy as np

    proj = (ws.double() @ normal.double()).numpy()
    if np.std(proj) == 0 or np.std(values) == 0:
        return float("nan")
    return float(np.corrcoef(proj, values)[0, 1])


@directions_app.command("check")
def check_command(
    direction: Annotated[str, typer.Argument(help="A direction (file or registry name).", show_default=False)],
    weights: WeightsOpt = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Held-out samples (seeds --seed …).")] = 24,
    strength: Annotated[str, typer.Option("--strength", "-s", help="Strengths, e.g. -3:3:7.")] = "-3:3:7",
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="First seed (default far from directions "
                                      "fit's 0 …).")] = 1_000_000,
    device: DeviceOpt = "auto",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the JSON report here.", show_default=False)] = None,
    force: ForceOpt = False,
) -> None:
    """Does a direction do what it says? Edit held-out samples along it and measure pose, smile, mouth opening and
    eye opening at every strength: the share that moves monotonically and the change relative to each attribute's
    spread. On an overparameterized generator the direction moves every row of the latent matrix, as edit does.

    Example: gantune directions check pose.pt --weights demo-faces --count 24 --strength -3:3:7
    """
    import json

    import torch

    from ..editing import load_direction, parse_strengths
    from ..editing.fit import check_direction
    from ..io.atomic import atomic_write
    from ..runtime import resolve_device
    from ..weights import load_generator
    from .common import Progress

    strengths = parse_strengths(strength)
    if len(strengths) < 3:
        raise InputError("--strength needs at least 3 values to judge monotonicity", "e.g. -3:3:7")
    d = load_direction(direction)
    check_output_file(out, force=force, inputs=[weights, d.source], what=".json file")
    if not weights:
        raise InputError("directions check needs the generator", "give --weights")
    dev = resolve_device(device)
    G, _ = load_generator(weights, device=dev)
    n = d.fit(G.num_ws, G.cfg.w_dim)
    if not torch.allclose(n, n[:1].expand_as(n)):
        raise InputError(f"{direction} acts on some layers only; check takes a direction in W",
                         "give a direction of all layers (an InterFaceGAN file, or a GANSpace component FILE:K)")
    with Progress(count, "check") as bar:
        bar.begin(f"{count} samples")
        rep = check_direction(G.eval(), n[0], strengths=strengths, count=count, seed=seed, device=dev,
                              progress=lambda k, total: bar.step(k, total, "image"))
    console.print(f"{rep['with_face_at_3_or_more']} of {count} samples have a face at 3 strengths or more "
                  f"({rep['with_face_at_every_strength']} at every strength)")
    for a, m in rep["attributes"].items():
        if m is not None:
            console.print(f"  {a:10s} monotonic {m['monotonic']:.0%}  increasing {m['increasing']:.0%}  "
                          f"change {m['mean_change']:+.4f} ({m['change_over_spread']:+.2f} × its spread)")
    rep["direction"] = direction
    if out is not None:
        with atomic_write(out, "w") as f:
            json.dump(rep, f, indent=2)
        console.print(f"wrote {out}")


@directions_app.command("styleclip-stats")
def styleclip_stats_command(
    weights: WeightsOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .pt file (for gantune edit --styleclip-stats); "
                                      "progress goes to OUT.partial, from which a re-run continues.",
                                      show_default=False)],
    clip: Annotated[str, typer.Option("--clip", help="CLIP model (registry name or file, OpenAI layout).")] = "clip-vit-b-32",
    images: Annotated[int, typer.Option("--images", "-n", min=1, help="Base images each channel is perturbed on "
                                        "(StyleCLIP: 100).")] = 100,
    samples: Annotated[int, typer.Option("--samples", min=2, help="Latents for the style means and standard "
                                         "deviations.")] = 100_000,
    truncation: Annotated[float, typer.Option("--truncation", callback=finite_in("--truncation", 0.0, 2.0),
                                              help="Truncation psi of the samples, 0 to 2 (on the first 8 W+ "
                                              "rows, as StyleCLIP).")] = 0.7,
    max_res: Annotated[Optional[int], typer.Option("--max-res", min=4, help="Cover conv layers up to this resolution "
                                                   "only (StyleCLIP's PyTorch port: 128); default all.",
                                                   show_default=False)] = None,
    seed: SeedOpt = 5,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """StyleCLIP channel statistics of any generator: the style mean and std of every layer, and the relevance of
    every conv style channel to CLIP image embeddings (each channel set to its mean ± 5 std on the same base images,
    both renders embedded). Batched, on the GPU when there is one, resumable: kill it and run the same command again.

    Example: gantune directions styleclip-stats --weights demo-faces --images 100 -o demo-stats.pt
    """
    from ..editing.clip import load_clip
    from ..editing.styleclip_compute import compute_style_stats
    from ..runtime import resolve_device
    from ..weights import load_generator
    from .common import Progress

    check_output_file(out, force=force, inputs=[weights, clip])
    if not weights:
        raise InputError("directions styleclip-stats needs the generator", "give --weights (a registry name, path or URL)")
    dev = resolve_device(device)
    G, info = load_generator(weights, device=dev)
    model, _ = load_clip(clip, device=dev)
    total = sum(s.in_ch for s in G.specs if s.kind == "conv" and (max_res is None or s.res <= max_res))
    meta = {"generator": {"spec": str(weights), "sha256": info.get("sha256")}, "clip_spec": clip}
    with Progress(total, "styleclip-stats") as bar:
        bar.begin(f"{total} channels x {images} images x 2")
        stats = compute_style_stats(G.eval(), model, out=out, images=images, stat_samples=samples, seed=seed,
                                    truncation=truncation, max_res=max_res, batch_size=batch_size, device=dev,
                                    progress=lambda done, n, label: bar.step(done, n, "channel"), meta=meta)
    console.print(f"{stats.relevance.shape[0]} channels of {len(stats.layers)} conv layers "
                  f"({stats.layers[0]} … {stats.layers[-1]}), CLIP size {stats.relevance.shape[1]}")
    console.print(f"wrote {out}; edit with: gantune edit RECORD --text \"a smiling face\" --styleclip-stats {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(directions_app, name="directions")
