"""Steadiness beside other work: a HyperStyle inversion (5 passes, batch 1, random official-size models) timed on a
quiet machine and beside one busy process that takes a whole core, for each OpenMP waiting policy.

OpenMP reads its waiting policy once, when torch loads, so every policy runs in a child process of its own
(``python -m gantune.bench.threads --child``) set up by :func:`gantune.process.configure_process` with that policy.
Each child prints one JSON line: the best of ``reps`` quiet times and the best of ``reps`` busy times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

# label -> OpenMP variables (libgomp, as torch's wheels use); "spin" is OpenMP's default: spin a while, then sleep
POLICIES = {"spin (OpenMP default)": {}, "passive": {"OMP_WAIT_POLICY": "passive"},
            "spin 10k, then sleep (gantune)": {"GOMP_SPINCOUNT": "10000"}}
BUSY = "while True: pass"  # one core's worth of other work (a second job, a browser tab)


def _time_inversion(resolution: int, reps: int, busy: bool) -> float:
    import torch

    from ..methods.hyper.inference import refine
    from .hyper import _random_models

    G, hn, enc = _random_models(resolution, "claimed14", 0)
    la = torch.zeros(G.num_ws, G.cfg.w_dim)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    refine(x, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=1, own_modules=True)  # warm-up (layouts)
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            refine(x, G=G, hypernet=hn, w_encoder=enc, latent_avg=la, iters=5, own_modules=True)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        if other is not None:
            other.kill()
            other.wait()


def _child(resolution: int, reps: int) -> None:
    quiet = _time_inversion(resolution, reps, busy=False)
    busy = _time_inversion(resolution, reps, busy=True)
    print(json.dumps({"quiet": quiet, "busy": busy}), flush=True)


def bench_threads(*, resolution: int = 256, reps: int = 2) -> list[str]:
    """One line per waiting policy: quiet seconds, seconds beside a busy process, and their ratio."""
    lines = [f"HyperStyle 5 passes {resolution}px batch 1, best of {reps}; 'busy' = beside one process spinning on a "
             f"core; threads {os.environ.get('OMP_NUM_THREADS', '(default)')}"]
    base = None
    for label, policy in POLICIES.items():
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env.update(policy)
        cmd = [sys.executable, "-m", "gantune.bench.threads", "--child", str(resolution), str(reps)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            lines.append(f"{label}: failed ({(run.stderr.strip().splitlines() or ['?'])[-1][:160]})")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        base = base or r["quiet"]
        lines.append(f"{label:<22}: quiet {r['quiet']:6.2f} s ({r['quiet'] / base:.2f} x spin), busy {r['busy']:6.2f} s "
                     f"= {r['busy'] / r['quiet']:.2f} x its quiet time (target <= 2.5)")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        from ..process import configure_process

        configure_process(spin_count=None)  # as the parent set OpenMP's variables for this policy
        _child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        for ln in bench_threads(resolution=int(sys.argv[1]) if len(sys.argv) > 1 else 256):
            print(ln, flush=True)
