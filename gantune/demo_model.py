"""The built-in ``demo-faces`` model: how it is trained, and how its files get into the package and the registry.

``make demo-model`` (= ``python -m gantune.demo_model train``) runs, in order, the same ``gantune`` command lines a user
would type; every step resumes where it stopped, so it can be interrupted and started again as often as needed:

1. ``train generator`` twice on ``synthetic-faces`` at 64 px (the source's own size): a standard StyleGAN2 (noise
   inputs) and an overparameterized one (latent matrix, no noise), both with 2 mapping layers and 64 channels, trained
   by distillation alone (``--distill``: the DCGAN source is a generator, so G learns to draw its image of the same
   latent; ``--distill-only`` beyond ``--kimg`` keeps the adversarial phase off);
2. ``train w-encoder`` (compact IR-SE, width 16, 64 px input) on the standard generator: first on its own samples
   (w known, so a latent loss helps), then continued on synthetic faces (the images it must invert); L2 + LPIPS (or
   its MS-SSIM substitute) only, no identity term (``--sim-lambda 0``: the reconstruction metrics do not use one, and
   dlib's network would cost ~40 % of each step);
3. ``train hypernet`` (compact ResNet34, width 16, 64 px input) with that encoder, on synthetic faces, with the
   paper's 5 refinement passes, the same losses and 15x the reference learning rate (at 1e-4 the loss had not moved
   after 500 steps);
4. ``directions ganspace`` on the standard generator;
5. ``publish``: copy the files into ``gantune/data/demo-faces/`` and write their sha256 and size into ``weights.toml``.

Everything is derived from the DCGAN faces of ``gan-face-generate`` (rendered DigiFace-1M faces): NON-COMMERCIAL.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = ROOT / "data" / "demo-faces"
REGISTRY = ROOT.parent / "weights.toml"
RUNS = Path("runs/demo-faces64")

# name in weights.toml -> file name in gantune/data/demo-faces/
FILES = {
    "demo-faces": "generator.safetensors",
    "demo-faces-overparam": "generator-overparam.safetensors",
    "demo-faces-w-encoder": "w_encoder.pt",
    "demo-faces-hypernet": "hypernet.pt",
    "demo-faces-ganspace": "ganspace.pt",
}

GENERATOR_ARGS = ["--data", "synthetic-faces", "-r", "64", "--channel-base", "2048", "--channel-max", "64",
                  "--z-dim", "128", "--mapping-layers", "2", "--batch", "16", "--snap", "4", "--log-seconds", "120",
                  "--style-mixing", "0.5", "--distill", "10", "--distill-only", "100"]
ENCODER_ARGS = ["--width", "16", "--input-size", "64", "--lpips-lambda", "0.8", "--sim-lambda", "0",
                "--log-steps", "50", "--save-every", "100"]
ENC_STEPS, HYP_STEPS = 2500, 4000  # in total (the W-encoder's count includes its steps on generator samples)
KIMG = (48.0, 44.0)  # (standard, overparameterized): what the published generators were trained for
HYP_LR = "0.0015"  # 15x the reference 1e-4: a compact network from random init on one CPU (README: the demo-faces model)
ENC_SYNTHETIC_STEPS = 600  # the W-encoder's first steps, on generator samples with known w


def recipe(runs: Path = RUNS, *, kimg: tuple[float, float] = KIMG, enc_steps: int = ENC_STEPS, hyp_steps: int = HYP_STEPS,
           hyp_iters: int = 5, threads: int = 1, device: str = "cpu") -> list[list[str]]:
    """The command lines (without the leading ``gantune``) that train the demo model from nothing."""
    std, over = runs / "generator-standard", runs / "generator-overparam"
    dev = ["--device", device]
    kinds = (("--standard", "--noise-inputs"), ("--overparam",))
    cmds = [
        *[["train", "generator", *GENERATOR_ARGS, *kind, "--kimg", f"{k:g}", "--threads", str(threads), *dev,
           "-o", str(d)] for kind, k, d in zip(kinds, kimg, (std, over))],
        *[["train", "w-encoder", "-g", "{latest:" + str(std) + "}", "--data", data, *ENCODER_ARGS, "--depth", "2,2,2,2",
           "--steps", str(n), "-b", "8",
           "--threads", str(threads), *dev, "-o", str(runs / "w-encoder"), "--resume-if-any"]
          for data, n in (("synthetic", min(ENC_SYNTHETIC_STEPS, enc_steps)), ("synthetic-faces", enc_steps))],
        ["train", "hypernet", "-g", "{latest:" + str(std) + "}", "-e", str(runs / "w-encoder" / "w_encoder.pt"),
         "--data", "synthetic-faces", *ENCODER_ARGS, "--iters", str(hyp_iters), "--steps", str(hyp_steps), "-b", "4",
         "--lr", HYP_LR,
         "--threads", str(threads), *dev, "-o", str(runs / "hypernet"), "--resume-if-any"],
        ["directions", "ganspace", "--weights", "{latest:" + str(std) + "}", "-o", str(runs / "ganspace.pt"),
         "--samples", "50000", "--components", "16", *dev],
    ]
    return cmds


def latest(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern))
    if not files:
        raise SystemExit(f"{folder}: no {pattern} yet; run the generator training first")
    return files[-1]


def expand(args: list[str]) -> list[str]:
    """Fill ``{latest:DIR}`` with the newest network snapshot, and turn ``--resume-if-any`` into ``--resume auto``
    when the run folder already has a training state."""
    out = []
    for a in args:
        m = re.fullmatch(r"\{latest:(.+)\}", a)
        if m:
            a = str(latest(Path(m.group(1)), "network-*.safetensors"))
        out.append(a)
    if "--resume-if-any" in out:
        out.remove("--resume-if-any")
        run_dir = Path(out[out.index("-o") + 1])
        if (run_dir / "train_state.pt").is_file():
            out += ["--resume", "auto"]
    return out


def set_entry_fields(text: str, name: str, fields: dict[str, str | int]) -> str:
    """Rewrite ``sha256``/``size``/… of one ``[[weights]]`` entry of weights.toml, leaving the rest untouched."""
    blocks = re.split(r"(?m)^(?=\[\[weights\]\]\s*$)", text)
    hit = False
    for i, b in enumerate(blocks):
        if re.search(rf'(?m)^name = "{re.escape(name)}"\s*$', b):
            hit = True
            for k, v in fields.items():
                val = f'"{v}"' if isinstance(v, str) else str(v)
                b, n = re.subn(rf"(?m)^{k} = .*$", f"{k} = {val}", b)
                if not n:
                    raise ValueError(f"weights.toml entry {name} has no {k} field")
            b = re.sub(r'(?m)^sha256_note = .*\n', "", b) if fields.get("sha256") else b
            blocks[i] = b
    if not hit:
        raise ValueError(f"weights.toml has no entry {name}")
    return "".join(blocks)


def publish(runs: Path = RUNS, registry: Path = REGISTRY, dest: Path = PACKAGE_DIR,
            names: list[str] | None = None) -> dict[str, Path]:
    """Copy the newest files of a demo run into the package and record their sha256 and size in the registry
    (``names``: only these entries, e.g. after re-training just the hypernetwork)."""
    from .io.atomic import atomic_path
    from .io.hashing import sha256_file

    std = runs / "generator-standard"
    where = {
        "demo-faces": lambda: latest(std, "network-*.safetensors"),
        "demo-faces-overparam": lambda: latest(runs / "generator-overparam", "network-*.safetensors"),
        "demo-faces-w-encoder": lambda: runs / "w-encoder" / "w_encoder.pt",
        "demo-faces-hypernet": lambda: runs / "hypernet" / "hypernet.pt",
        "demo-faces-ganspace": lambda: runs / "ganspace.pt",
    }
    unknown = sorted(set(names or ()) - set(where))
    if unknown:
        raise SystemExit(f"unknown demo file(s) {', '.join(unknown)}; choose from {', '.join(where)}")
    sources = {n: find() for n, find in where.items() if not names or n in names}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"not trained yet: {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    text = registry.read_text()
    out = {}
    for name, src in sources.items():
        target = dest / FILES[name]
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        text = set_entry_fields(text, name, {"sha256": sha256_file(target), "size": target.stat().st_size})
        out[name] = target
        print(f"{name:24s} {src} -> {target} ({target.stat().st_size / 1e6:.2f} MB)")
    with atomic_path(registry) as tmp:
        Path(tmp).write_text(text)
    total = sum(p.stat().st_size for p in out.values())
    print(f"total {total / 1e6:.1f} MB in {dest}; sha256 and size written to {registry}")
    return out


def main(argv=None) -> None:
    from .demo import gantune

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["train", "publish", "recipe"])
    ap.add_argument("--runs", type=Path, default=RUNS)
    ap.add_argument("--kimg", type=float, nargs=2, default=KIMG, metavar=("STD", "OVER"),
                    help="generator training length (thousands of images): standard, overparameterized")
    ap.add_argument("--enc-steps", type=int, default=ENC_STEPS,
                    help=f"W-encoder steps in total (the first {ENC_SYNTHETIC_STEPS} on generator samples)")
    ap.add_argument("--hyp-steps", type=int, default=HYP_STEPS)
    ap.add_argument("--hyp-iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--files", nargs="*", choices=list(FILES), help="publish: only these entries")
    ap.add_argument("--only", type=int, nargs="*", help="run only these commands (1-6, in recipe order)")
    args = ap.parse_args(argv)
    cmds = recipe(args.runs, kimg=tuple(args.kimg), enc_steps=args.enc_steps, hyp_steps=args.hyp_steps,
                  hyp_iters=args.hyp_iters, threads=args.threads, device=args.device)
    if args.action == "recipe":
        for c in cmds:
            print("gantune " + " ".join(shlex.quote(a) for a in c))
        return
    if args.action == "train":
        for i, c in enumerate(cmds, 1):
            if not args.only or i in args.only:
                gantune(*expand(c))
    publish(args.runs, names=args.files)


if __name__ == "__main__":
    main()
