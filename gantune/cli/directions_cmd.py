"""``gantune directions``: editing directions without labelled data (GANSpace PCA of sampled w)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, SeedOpt, WeightsOpt, console

directions_app = typer.Typer(help="Compute editing directions for a generator.", no_args_is_help=True)


@directions_app.command("ganspace")
def ganspace_command(
    weights: WeightsOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .pt file (the published GANSpace layout).")],
    samples: Annotated[int, typer.Option("--samples", "-n", min=2, help="Random z samples for the PCA.")] = 100_000,
    components: Annotated[int, typer.Option("--components", "-k", min=1, help="Principal components to keep.")] = 80,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """PCA of the generator's W space (GANSpace). The file works with
    `gantune edit REC --direction OUT.pt:K` (component K, additive, in σ) or `OUT.pt:K:START-END` / `OUT.pt:K:fine`.

    Example: gantune directions ganspace --weights demo-faces -o ganspace.pt --samples 100000 --components 80
    """
    from ..editing.ganspace import compute_ganspace
    from ..runtime import resolve_device
    from ..weights import load_generator

    dev = resolve_device(device)
    G, info = load_generator(weights, device=dev)
    gs = compute_ganspace(G.eval(), samples=samples, components=min(components, G.cfg.w_dim), seed=seed, device=dev)
    gs.meta["generator"] = {k: info.get(k) for k in ("name", "sha256", "path") if info.get(k) is not None}
    gs.meta["generator"]["spec"] = str(weights)
    gs.save(out)
    ev = gs.meta["explained_variance"]
    console.print(f"{gs.num_components} components from {samples} samples: first explains {ev[0]:.1%}, "
                  f"first 10 {sum(ev[:10]):.1%}; layer ranges {gs.layer_ranges}")
    console.print(f"wrote {out}; edit with: gantune edit RECORD --direction {out}:0 --strength -3:3:7")


def register(app: typer.Typer) -> None:
    app.add_typer(directions_app, name="directions")
