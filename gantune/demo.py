"""``make demo``: the most complete real job that runs on a fresh machine with no download.

Every step is a real ``gantune`` command line (run in this process through the CLI entry point), so the demo
exercises exactly what a user types. Until the trained ``demo-faces`` model exists, the generator is a randomly
initialised StyleGAN2 written in the exact official rosinality ``.pt`` layout: its images are textures, not faces;
the demo shows the pipeline, the formats and the timings, not quality. Output: ``out/demo/`` and ``contact_sheet.png``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

PHOTO = Path(__file__).parent / "data" / "astronaut.jpg"  # NASA, public domain (also skimage.data.astronaut)


def gantune(*args: str) -> float:
    """Run one gantune command line; stop the demo if it fails. Returns seconds."""
    from .cli.app import main

    print(f"\n$ gantune {' '.join(shlex.quote(a) for a in args)}", flush=True)
    t0 = time.perf_counter()
    try:
        main(list(args))
    except SystemExit as e:
        if e.code not in (0, None):
            sys.exit(f"demo step failed (exit {e.code}): gantune {' '.join(args)}")
    return time.perf_counter() - t0


def random_official_generator(path: Path, resolution: int, seed: int = 0) -> None:
    """A random StyleGAN2 (rosinality channel multiplier 0.5, 8 mapping layers) saved as an official-layout .pt."""
    from .core import Generator, GeneratorConfig
    from .weights.rosinality import save_rosinality

    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(resolution=resolution, channel_base=8192, channel_max=256)).eval()
    with torch.no_grad():
        for n, p in G.named_parameters():
            if n.endswith("noise_strength"):
                p.fill_(0.1)
        G.mapping.w_avg.copy_(G.compute_w_avg(2000))
    save_rosinality(G, path)


def labelled(img: Image.Image, text: str, side: int) -> Image.Image:
    im = img.convert("RGB").resize((side, side), Image.LANCZOS)
    canvas = Image.new("RGB", (side, side + 16), "white")
    canvas.paste(im, (0, 16))
    ImageDraw.Draw(canvas).text((3, 2), text, fill="black")
    return canvas


def contact_sheet(rows: list[list[tuple[str, Path]]], path: Path, side: int = 160) -> None:
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * (side + 4), len(rows) * (side + 20)), "white")
    for y, row in enumerate(rows):
        for x, (label, p) in enumerate(row):
            if p.exists():
                sheet.paste(labelled(Image.open(p), label, side), (x * (side + 4), y * (side + 20)))
    sheet.save(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="optimization steps per inversion")
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    res, steps = args.resolution, str(args.steps)
    times = {}

    times["align"] = gantune("align", str(PHOTO), "-o", str(out / "aligned"), "--size", str(res))
    aligned = out / "aligned" / "astronaut.png"

    print("\n# a random generator in the exact official rosinality .pt layout (stand-in for stylegan2-ffhq-config-f.pt)")
    random_official_generator(out / "random-official.pt", res)
    times["weights info"] = gantune("weights", "info", str(out / "random-official.pt"))
    times["weights import"] = gantune("weights", "import", str(out / "random-official.pt"), "-o", str(out / "generator.safetensors"))
    gen = str(out / "generator.safetensors")

    times["generate"] = gantune("generate", "--weights", gen, "--seeds", "0-3", "--truncation", "0.7", "-o", str(out / "samples"),
                                "--device", "cpu")
    common = ["--weights", gen, "--steps", steps, "--loss", "l2", "--device", "cpu", "--w-avg-samples", "2000"]
    times["invert-optim (W+)"] = gantune("invert-optim", str(aligned), "--space", "w+", "-o", str(out / "optim"), *common)
    times["invert-overparam"] = gantune("invert-overparam", str(aligned), "-o", str(out / "overparam"), *common)
    times["directions ganspace"] = gantune("directions", "ganspace", "--weights", gen, "-o", str(out / "ganspace.pt"),
                                           "--samples", "2000", "--device", "cpu")
    times["edit"] = gantune("edit", str(out / "optim" / "astronaut.safetensors"), "--direction", f"{out / 'ganspace.pt'}:0",
                            "--strength", "-3:3:5", "-o", str(out / "edits"), "--weights", gen, "--device", "cpu")
    times["paste"] = gantune("paste", str(out / "optim" / "astronaut.png"), "--transform", str(out / "aligned" / "manifest.jsonl"),
                             "-o", str(out / "pasted.png"))

    from .io.manifest import read_manifest

    edits = [Path(p) for p in read_manifest(out / "edits" / "manifest.jsonl")[0]["images"]]  # in strength order
    rows = [
        [("photo", PHOTO), ("aligned", aligned), ("W+ optim", out / "optim" / "astronaut.png"),
         ("overparam W", out / "overparam" / "astronaut.png"), ("pasted back", out / "pasted.png")],
        [(f"sample seed {i}", out / "samples" / f"seed{i:04d}.png") for i in range(4)],
        [(f"edit {p.stem.rsplit('_', 1)[-1]}", p) for p in edits],
    ]
    contact_sheet(rows, out / "contact_sheet.png")
    print("\n== demo summary (random official-layout generator: textures, not faces)")
    for k, v in times.items():
        print(f"  {k:22s} {v:7.1f} s")
    print(f"  contact sheet: {out / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
