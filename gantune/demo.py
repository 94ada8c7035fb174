"""``make demo``: the whole product on the built-in ``demo-faces`` model, on a fresh machine with no download.

Every step is a real ``gantune`` command line (run in this process through the CLI entry point), so the demo
exercises exactly what a user types: align the bundled photo (dlib, FFHQ alignment), invert it with HyperStyle,
the W+ projector and the overparameterized latent, edit the HyperStyle inversion along a GANSpace direction, paste it
back into the photo, do the same inversions for a few held-out in-domain faces (synthetic faces the model never saw
in training), interpolate between two of them, and write one ``contact_sheet.png`` with all of it. The demo model is
a small StyleGAN2 trained by gantune on CPU on synthetic faces (``make demo-model``; non-commercial): expect small,
soft faces; the astronaut photo is out of its domain, the held-out faces are in it.

``--random`` runs the same kind of pipeline on a random generator in the exact official rosinality ``.pt`` layout
instead (it needs no model files). Output: ``out/demo/``.
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


def strength_label(p: Path) -> str:
    """``astronaut_c0_m1.5.png`` -> ``-1.5`` (edit writes m/p for the sign)."""
    v = p.stem.rsplit("_", 1)[-1]
    return ("-" + v[1:]) if v.startswith("m") else ("+" + v[1:]) if v.startswith("p") else v


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


def demo_model_present() -> bool:
    from .weights import registry

    return all(registry.get(n).package_path() is not None for n in
               ("demo-faces", "demo-faces-overparam", "demo-faces-w-encoder", "demo-faces-hypernet", "demo-faces-ganspace"))


def faces_demo(out: Path, steps: str) -> dict[str, float]:
    """The main job on the trained demo-faces model."""
    times = {}
    photo = str(PHOTO)
    times["align"] = gantune("align", photo, "-o", str(out / "aligned"), "--size", "256")
    aligned = str(out / "aligned" / "astronaut.png")
    times["generate (standard)"] = gantune("generate", "--weights", "demo-faces", "--seeds", "0-5", "-o", str(out / "samples"),
                                           "--device", "cpu")
    times["generate (overparam)"] = gantune("generate", "--weights", "demo-faces-overparam", "--seeds", "0-5", "-o",
                                            str(out / "samples-overparam"), "--device", "cpu")
    times["invert hyperstyle"] = gantune("invert", aligned, "--method", "hyperstyle", "--weights", "demo-faces-hypernet",
                                         "--encoder", "demo-faces-w-encoder", "--iters", "5", "-o", str(out / "hyperstyle"),
                                         "--device", "cpu", "--save-intermediate")
    common = ["--steps", steps, "--loss", "l2", "--device", "cpu", "--w-avg-samples", "5000"]
    times["invert-optim (W+)"] = gantune("invert-optim", aligned, "--weights", "demo-faces", "--space", "w+",
                                         "-o", str(out / "optim"), *common)
    times["invert-overparam"] = gantune("invert-overparam", aligned, "--weights", "demo-faces-overparam",
                                        "-o", str(out / "overparam"), *common)
    times["edit (GANSpace)"] = gantune("edit", str(out / "hyperstyle" / "astronaut.safetensors"), "--direction",
                                       "demo-faces-ganspace:0", "--strength", "-3:3:5", "-o", str(out / "edits"),
                                       "--device", "cpu")
    times["paste"] = gantune("paste", str(out / "hyperstyle" / "astronaut.png"), "--transform",
                             str(out / "aligned" / "manifest.jsonl"), "-o", str(out / "pasted"))

    # in-domain: held-out synthetic faces, each inverted by every method, and a path between two of them
    faces = write_heldout_faces(out / "heldout", HELDOUT)
    folder = str(out / "heldout")
    times["invert hyperstyle (held-out)"] = gantune("invert", folder, "--method", "hyperstyle", "--weights", "demo-faces-hypernet",
                                                    "--encoder", "demo-faces-w-encoder", "--iters", "5", "-o",
                                                    str(out / "heldout-hyperstyle"), "--device", "cpu")
    times["invert-optim (held-out)"] = gantune("invert-optim", folder, "--weights", "demo-faces", "--space", "w+",
                                               "-o", str(out / "heldout-optim"), *common)
    times["invert-overparam (held-out)"] = gantune("invert-overparam", folder, "--weights", "demo-faces-overparam",
                                                   "-o", str(out / "heldout-overparam"), *common)
    a, b = (str(out / "heldout-hyperstyle" / f"{f.stem}.safetensors") for f in faces[:2])
    times["interpolate"] = gantune("interpolate", a, b, "--frames", "6", "-o", str(out / "interpolate"), "--device", "cpu")

    from .io.manifest import read_manifest

    entry = read_manifest(out / "edits" / "manifest.jsonl")[0]
    edits = [out / "edits" / p for role, p in entry["outputs"].items() if role != "sheet"]  # in strength order
    inter = sorted((out / "hyperstyle" / "intermediate").glob("*/astronaut.png"))
    path = sorted((out / "interpolate" / f"{faces[0].stem}_to_{faces[1].stem}").glob("*.png"))
    rows = [
        [("photo", PHOTO), ("aligned", Path(aligned)), ("HyperStyle", out / "hyperstyle" / "astronaut.png"),
         ("W+ optim", out / "optim" / "astronaut.png"), ("overparam", out / "overparam" / "astronaut.png"),
         ("pasted back", out / "pasted" / "astronaut_pasted.png")],
        [(f"HyperStyle iter {p.parent.name}", p) for p in inter][:6],
        [(f"GANSpace c0 {strength_label(p)}", p) for p in edits],
        *[[(f"held-out {f.stem[-1]}", f), ("HyperStyle", out / "heldout-hyperstyle" / f"{f.stem}.png"),
           ("W+ optim", out / "heldout-optim" / f"{f.stem}.png"), ("overparam", out / "heldout-overparam" / f"{f.stem}.png")]
          for f in faces],
        [(f"path {i}/{len(path) - 1}", p) for i, p in enumerate(path)],
        [(f"sample seed {i}", out / "samples" / f"seed{i:04d}.png") for i in range(6)],
        [(f"overparam seed {i}", out / "samples-overparam" / f"seed{i:04d}.png") for i in range(6)],
    ]
    contact_sheet([r for r in rows if r], out / "contact_sheet.png")
    return times


HELDOUT = 3  # in-domain faces shown beside the photo


def write_heldout_faces(folder: Path, count: int) -> list[Path]:
    """The first ``count`` held-out synthetic faces of ``gantune eval`` (DCGAN source, torch seed 10 000 000 + S, a
    stream training never draws), written as PNGs at the source's own 64 px."""
    from .evaluation.data import HeldOutImages
    from .io.images import save_image

    print(f"\n# {count} held-out synthetic faces (never seen in training) -> {folder}")
    held = HeldOutImages(count=count)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{name}.png" for name in held.names]
    for f, x in zip(files, held.at(64)):
        save_image(x, f)
    return files


def random_demo(out: Path, res: int, steps: str) -> dict[str, float]:
    """The pipeline on a random generator in the official rosinality layout (no trained model needed)."""
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
                             "-o", str(out / "pasted"))

    from .io.manifest import read_manifest

    entry = read_manifest(out / "edits" / "manifest.jsonl")[0]
    edits = [out / "edits" / p for role, p in entry["outputs"].items() if role != "sheet"]  # in strength order
    rows = [
        [("photo", PHOTO), ("aligned", aligned), ("W+ optim", out / "optim" / "astronaut.png"),
         ("overparam W", out / "overparam" / "astronaut.png"), ("pasted back", out / "pasted" / "astronaut_pasted.png")],
        [(f"sample seed {i}", out / "samples" / f"seed{i:04d}.png") for i in range(4)],
        [(f"edit {p.stem.rsplit('_', 1)[-1]}", p) for p in edits],
    ]
    contact_sheet(rows, out / "contact_sheet.png")
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--steps", type=int, default=200, help="optimization steps per inversion")
    ap.add_argument("--random", action="store_true", help="the pipeline on a random official-layout generator instead")
    ap.add_argument("--resolution", type=int, default=128, help="with --random: generator resolution")
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    use_model = not args.random and demo_model_present()
    if not args.random and not use_model:
        print("the demo-faces model files are not installed (gantune/data/demo-faces); running --random instead")
    if use_model:
        times = faces_demo(out, str(args.steps))
        from .weights import load_generator

        res = load_generator("demo-faces", progress=False)[0].cfg.resolution
        what = f"demo-faces: {res} px StyleGAN2 trained by gantune on synthetic faces (non-commercial)"
    else:
        times = random_demo(out, args.resolution, str(args.steps))
        what = "random official-layout generator: textures, not faces"
    print(f"\n== demo summary ({what})")
    for k, v in times.items():
        print(f"  {k:30s} {v:7.1f} s")
    print(f"  contact sheet: {out / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
