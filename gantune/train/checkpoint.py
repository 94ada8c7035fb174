"""Run-folder checkpoints.

* ``network-<nimg>.safetensors``: the EMA generator in gantune's native format (what every other command loads),
  with training provenance (data, licence, images seen, options) in its metadata;
* ``training-state-<nimg>.pt``: everything needed to continue bit-exactly — G, D, G_ema, both optimizers,
  the path-length mean, counters and every RNG state — as plain tensors and containers, so it loads with
  ``torch.load(weights_only=True)``.

``<nimg>`` is the number of real images shown so far (9 digits), so names sort in training order. Both files are
written atomically; the newest ``keep`` training states and the newest ``keep`` network snapshots are kept.

A run killed mid-write leaves no half file (atomic writes), and :func:`gantune.io.atomic.exit_on_sigterm` turns SIGTERM into a normal
exit so the temporary file being written is removed; :func:`remove_stale_temp_files` removes what a hard kill
(SIGKILL, power loss) left, when a run starts or resumes.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from ..errors import InputError
from ..io.atomic import atomic_write

STATE_RE = re.compile(r"^training-state-(\d{9})\.pt$")
NETWORK_RE = re.compile(r"^network-(\d{9})\.safetensors$")
# temporary files of the atomic writes of a run folder's files (gantune.io.atomic: ".<name>.<random>.tmp")
TEMP_RE = re.compile(r"^\.(training-state-\d{9}\.pt|network-\d{9}\.safetensors|fakes-\d{9}\.png|w_encoder\.pt|"
                     r"hypernet\.pt|train_state\.pt)\..+\.tmp$")


def network_path(run_dir: Path, nimg: int) -> Path:
    return Path(run_dir) / f"network-{nimg:09d}.safetensors"


def state_path(run_dir: Path, nimg: int) -> Path:
    return Path(run_dir) / f"training-state-{nimg:09d}.pt"


def save_state(path: Path, state: dict) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path


def load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--resume {path}: no such training state", hint="use --resume auto, none or a training-state-*.pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
        raise InputError(f"{path.name} is not a readable training state ({str(e).splitlines()[0][:160]})",
                         hint="resume from an earlier training-state-*.pt in the run folder") from None
    if not isinstance(state, dict) or state.get("kind") != "gantune-train-generator":
        raise InputError(f"{path.name} is not a gantune generator training state")
    return state


def list_states(run_dir: str | Path) -> list[Path]:
    return _matching(run_dir, STATE_RE)


def _matching(run_dir: str | Path, pattern: re.Pattern) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if pattern.match(p.name))


def latest_state(run_dir: str | Path) -> Path | None:
    states = list_states(run_dir)
    return states[-1] if states else None


def prune_states(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` training states and the newest ``keep`` network snapshots."""
    for pattern in (STATE_RE, NETWORK_RE):
        for p in _matching(run_dir, pattern)[:-keep] if keep > 0 else []:
            p.unlink(missing_ok=True)


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files that a killed run left in the run folder (returns them)."""
    stale = _matching(run_dir, TEMP_RE)
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """``auto`` (newest state in the run folder, if any), ``none``, or a path."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_state(run_dir)
    return Path(resume)
