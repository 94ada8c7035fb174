"""Peak memory of the product command: ``gantune invert --method hyperstyle`` on one image, in a fresh process.

The issue's figure is "load + one 1024 px HyperStyle image", so it is measured as a user meets it: random models in
the official file layouts (HyperStyle checkpoint with its decoder, W-encoder file) are written to a temporary folder,
then a separate ``python -m gantune invert`` process loads them and inverts one photo with 5 iterations, writing its
image, record and manifest. Its peak resident set size is the child's own high-water mark (``VmHWM``), so nothing the
benchmark itself allocated counts. Weights are memory-mapped from the files: their pages count as resident once
read (``RssFile``), like the private memory (``RssAnon``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TARGET_MB = 2500  # the bound for load + one 1024 px image: 2.5 GB (10^6-byte MB), 2,384 MiB


def write_official_files(folder: Path, resolution: int = 1024, seed: int = 0, *, models=None) -> tuple[Path, Path]:
    """(hyperstyle.pt, w_encoder.pt): random models in the official key layouts, as published files are laid out;
    ``models`` = (G, hypernet, W-encoder) writes those instead (compact ones record their input size in opts)."""
    from ..methods.hyper.checkpoint import layers_to_tune, write_hyperstyle_file, write_w_encoder_file
    from .hyper import _random_models

    G, hn, enc = models or _random_models(resolution, "claimed14", seed)
    la = torch.randn(1, G.cfg.w_dim).expand(G.num_ws, -1).clone() * 0.1
    p_hs = write_hyperstyle_file(folder / "hyperstyle.pt", G, hn, la, opts={
        "layers_to_tune": layers_to_tune(hn), "output_size": G.cfg.resolution, "input_nc": 6,
        "encoder_type": "SharedWeightsHyperNetResNet", **_compact(hn)})
    p_enc = write_w_encoder_file(folder / "w_encoder.pt", enc, la[0], G=G,
                                 opts={"encoder_type": "WEncoder", **_compact(enc)})
    return p_hs, p_enc


def _compact(net) -> dict:
    """What gantune's compact encoders add to the official opts (nothing for the official 256 px input)."""
    return {} if net.input_size == 256 else {"input_size": net.input_size}


# The child reads its own high-water mark (VmHWM, per address space, reset by exec). ``ru_maxrss`` from wait4 would
# also count the parent's pages the child held between fork and exec.
_CHILD = """
import sys
from pathlib import Path
from gantune.cli.app import main
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code
else:
    code = 0
keys = ("VmHWM", "RssAnon", "RssFile")
status = {ln.split(":")[0]: ln.split()[1] for ln in open("/proc/self/status") if ln.split(":")[0] in keys}
Path(sys.argv[1]).write_text(" ".join(status[k] for k in keys))
sys.exit(code)
"""


def invert_peak_rss(p_hs: Path, p_enc: Path, photo: Path, out: Path, *, iters: int = 5,
                    threads: int | None = None) -> tuple[tuple[float, float, float], float, int]:
    """((peak RSS, private RSS at exit, file-backed RSS at exit) in MiB, seconds, exit code) of one
    ``gantune invert --method hyperstyle`` in a fresh process."""
    env = dict(os.environ, GANTUNE_PROGRESS_EVERY="3600")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    report = out.parent / "peak_rss_kib.txt"
    args = ["invert", str(photo), "--method", "hyperstyle", "--weights", str(p_hs), "--encoder", str(p_enc),
            "--iters", str(iters), "--device", "cpu", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(report), *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    seconds = time.perf_counter() - t0
    if proc.returncode or not report.is_file():
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
        return (float("nan"),) * 3, seconds, proc.returncode or 1
    peak, anon, file = (int(v) / 1024.0 for v in report.read_text().split())
    return (peak, anon, file), seconds, 0


def bench_memory(*, resolution: int = 1024, quick: bool = False) -> list[str]:
    from PIL import Image

    if sys.platform != "linux":
        return ["peak RSS: measured on Linux only (ru_maxrss units differ elsewhere)"]
    res = 256 if quick else resolution
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        p_hs, p_enc = write_official_files(folder, res)
        t_write = time.perf_counter() - t0
        photo = folder / "photo.png"
        Image.effect_noise((300, 300), 64).convert("RGB").save(photo)
        rss, seconds, rc = invert_peak_rss(p_hs, p_enc, photo, folder / "out")
        size = sum(p.stat().st_size for p in (p_hs, p_enc)) / 2**20
    if rc:
        return [f"gantune invert failed (exit {rc}); no memory figure"]
    target = (f" = {rss[0] * 2**20 / 1e9:.2f} GB (target <= {TARGET_MB / 1000:.1f} GB = {TARGET_MB * 1e6 / 2**20:,.0f} MiB)"
              if res == 1024 else "")
    return [f"official-layout files written in {t_write:.1f} s ({size:,.0f} MiB: HyperStyle checkpoint with its "
            f"decoder, W-encoder file)",
            f"gantune invert --method hyperstyle, {res} px, 1 image, 5 iterations, fresh process: peak RSS "
            f"{rss[0]:,.0f} MiB{target}, {seconds:.1f} s including load; at exit {rss[1]:,.0f} MiB private + "
            f"{rss[2]:,.0f} MiB file-backed (memory-mapped weights and libraries: clean pages the kernel can drop)"]
