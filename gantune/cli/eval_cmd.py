"""``gantune eval``: reconstruction quality of the inversion methods on held-out faces, and face-detection rates.

The measuring is in :mod:`gantune.evaluation`; this module parses options, prints a rich table (stderr) and a markdown
table (stdout, to paste into the README), and writes the JSON report atomically with ``-o``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import BatchOpt, DeviceOpt, console
from .directions_cmd import SEED_MAX, check_output_file, finite_in

eval_app = typer.Typer(help="Measure the inversion methods (L2, LPIPS, MS-SSIM, time) and face-detection rates.",
                       no_args_is_help=True)

ReportOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the JSON report here (atomically).",
                                                   show_default=False)]


def _rich_table(title: str, columns: list[str], cells: list[list[str]], caption: str | None = None):
    from rich.table import Table

    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right", overflow="fold", no_wrap=i == 0)
    for row in cells:
        t.add_row(*row)
    return t


def _write_report(report: dict, out: Path | None) -> None:
    if out is None:
        return
    from ..io.atomic import atomic_write

    with atomic_write(out, "w") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
    console.print(f"wrote {out}")


@eval_app.command("reconstruction")
def reconstruction_command(
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Standard generator (W+ optim row).",
                                                   show_default=False)] = None,
    overparam_weights: Annotated[Optional[str], typer.Option(
        "--overparam-weights", help="Overparameterized generator (overparam optim row).", show_default=False)] = None,
    encoder: Annotated[Optional[str], typer.Option("--encoder", help="W-encoder file (W-encoder and HyperStyle rows; "
                                                   "with --hypernet).", show_default=False)] = None,
    hypernet: Annotated[Optional[str], typer.Option("--hypernet", help="HyperStyle file: hypernetwork + its generator "
                                                    "(e.g. hypernet.pt from gantune train hypernet).",
                                                    show_default=False)] = None,
    data: Annotated[str, typer.Option("--data", help="synthetic-faces (held-out DCGAN faces) or a folder of images "
                                      "(its first --count files, sorted).")] = "synthetic-faces",
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Held-out images.")] = 16,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX - 10_000_000, help="Held-out seed S: synthetic faces are drawn with torch seed "
                                      "10_000_000 + S, which training (torch seed = gantune train --seed, and seed + 1) "
                                      "never uses.")] = 0,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimization steps K for W+ optim and "
                                                 "overparam optim (default: the projector's default, 1000).",
                                                 show_default=False)] = None,
    batch_size: BatchOpt = 4,
    device: DeviceOpt = "auto",
    out: ReportOpt = None,
) -> None:
    """Reconstruction quality of W-encoder, HyperStyle (1 and 5 iterations), W+ optimization and overparameterized
    optimization on the same held-out images: L2, LPIPS, MS-SSIM (mean ± std over images) and seconds per image, at
    the generator resolution (LPIPS inputs below 64 px are upsampled to 64 px). Without the ImageNet AlexNet backbone,
    LPIPS uses a random AlexNet trunk (seed 0) and says so. Rows whose inputs are missing are skipped with a note.

    Example: gantune eval reconstruction --weights runs/g/network-final.safetensors --overparam-weights
    runs/go/network-final.safetensors --encoder runs/enc/w_encoder.pt --hypernet runs/hyper/hypernet.pt
    --data synthetic-faces --count 32 --seed 0 --steps 200 -o eval.json
    """
    from ..evaluation.reconstruction import evaluate_reconstruction
    from ..evaluation.report import (caption, ordering_lines, reconstruction_cells, reconstruction_columns,
                                     reconstruction_markdown)

    check_output_file(out, inputs=[weights, overparam_weights, encoder, hypernet], what=".json file")
    report = evaluate_reconstruction(weights=weights, overparam_weights=overparam_weights, encoder=encoder,
                                     hypernet=hypernet, data=data, count=count, seed=seed, steps=steps, device=device,
                                     batch_size=batch_size, log=console.print)
    # the terminal table names LPIPS in short and in full below it; the markdown table has the full name in its header
    lp = report["metrics"]["lpips"]
    cols = reconstruction_columns(report)
    cols[cols.index(lp["label"] + " ↓")] = ("LPIPS* ↓" if lp["substitute"] else "LPIPS ↓")
    console.print(_rich_table("Reconstruction", cols, reconstruction_cells(report),
                              caption=lp["label"]))
    console.print(caption(report))
    for line in ordering_lines(report):
        console.print(line)
    for s in report["skipped"]:
        console.print(f"skipped {s['method']}: {s['reason']}")
    for n in report["notes"]:
        console.print(f"note: {n}")
    typer.echo(reconstruction_markdown(report))
    _write_report(report, out)


@eval_app.command("detection")
def detection_command(
    weights: Annotated[Optional[list[str]], typer.Option("--weights", "-w", help="Generator (repeatable).",
                                                         show_default=False)] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Samples per generator (seeds S … S+N−1).")] = 100,
    upscale: Annotated[int, typer.Option("--upscale", min=16, help="Resize every image (LANCZOS) to this side "
                                         "before detection.")] = 256,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX - 10_000_000, help="First seed S (the source "
                                      "faces: held-out torch seed 10_000_000 + S).")] = 0,
    truncation: Annotated[float, typer.Option("--truncation", callback=finite_in("--truncation", 0.0, 2.0),
                                              help="Truncation psi of the generator samples, 0 to 2.")] = 1.0,
    source_too: Annotated[bool, typer.Option("--source-too", help="Also the DCGAN synthetic-faces source (held-out "
                                             "torch seed 10_000_000 + S), resized the same way.")] = False,
    device: DeviceOpt = "auto",
    out: ReportOpt = None,
) -> None:
    """Face-detection rate of dlib's frontal HOG detector (as gantune align) on generator samples, next to the
    DCGAN source faces with --source-too: a check that a generator draws faces.

    Example: gantune eval detection --weights runs/g/network-final.safetensors --count 200 --upscale 256 --source-too
    """
    from ..evaluation.detection import evaluate_detection
    from ..evaluation.report import detection_cells, detection_columns, detection_markdown

    check_output_file(out, inputs=weights or [], what=".json file")
    report = evaluate_detection(weights or [], count=count, upscale=upscale, seed=seed, truncation=truncation,
                                source_too=source_too, device=device, log=console.print)
    console.print(_rich_table("Face detection", detection_columns(), detection_cells(report)))
    console.print(f"detector: {report['detector']}")
    typer.echo(detection_markdown(report))
    _write_report(report, out)


@eval_app.command("interpolation")
def interpolation_command(
    folders: Annotated[list[Path], typer.Argument(help="One folder of inversion records per row (e.g. the same faces "
                                                  "inverted by each method); a row is named after its folder.",
                                                  show_default=False)],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Generator (default: the one each "
                                                   "folder's records name).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    out: ReportOpt = None,
) -> None:
    """Editability along interpolation paths (Overparameterized StyleGAN §4.3): for consecutive records of each
    folder (sorted by name), the perceptual path length over 5 segments and the realism of the midpoint (dlib face
    detection; identity distance to both ends with dlib's face-recognition ResNet). Substitutes are named in the
    report where the ImageNet LPIPS backbone or an FID network is not available.

    Example: gantune eval interpolation inv-wplus/ inv-overparam-W/ inv-overparam-Wplus/ -o interp.json
    """
    from ..evaluation.interpolation import interpolation_cells, interpolation_columns, interpolation_markdown, \
        evaluate_interpolation
    from ..runtime import resolve_device

    groups = {}
    for f in folders:
        recs = sorted(f.glob("*.safetensors")) if f.is_dir() else []
        if len(recs) < 2:
            raise InputError(f"{f}: needs a folder with at least two records", "give folders written by gantune invert")
        groups[f.name] = recs
    check_output_file(out, inputs=[weights, *(r for recs in groups.values() for r in recs)], what=".json file")
    report = evaluate_interpolation(groups, weights=weights, device=resolve_device(device), log=console.print)
    console.print(_rich_table("Interpolation", interpolation_columns(report), interpolation_cells(report)))
    typer.echo(interpolation_markdown(report))
    _write_report(report, out)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
