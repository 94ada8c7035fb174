"""Fitting InterFaceGAN directions on any generator (Shen et al. 2020): sample the generator, measure an attribute
on each image, fit a linear boundary in W, keep its unit normal.

Attributes come from dlib's 68 landmarks (the shipped ``shape_predictor_68_face_landmarks.dat``; images are upscaled
to 256 px first, and images without a detected face are left out and counted):

* ``pose``: yaw, the nose tip's horizontal offset from the midpoint of the outer eye corners over the inter-ocular
  distance (positive: the nose is right of the eyes' midpoint in the image);
* ``smile``: mouth width (outer corners) over the inter-ocular distance;
* ``mouth-open``: inner-lip gap over mouth width;
* ``eyes-open``: eye aspect ratio, (|p37 p41| + |p38 p40|) / 2|p36 p39|, mean of both eyes.

The boundary: the samples in the top and bottom ``fraction`` of the attribute are labelled 1 / 0 (values with exactly
two distinct levels, such as 0/1 labels, are the two classes themselves, every sample used) and an L2-regularised logistic regression on standardised w is fitted (InterFaceGAN uses a linear SVM on the extremes; any
linear classifier's normal serves). The direction is the unit normal mapped back to W and is written as InterFaceGAN
writes its boundaries: a (1, w_dim) tensor (``edit --direction FILE.pt``).

The accuracy reported is held out, as InterFaceGAN reports its validation accuracy: a fixed 20% of each class
(a permutation drawn from seed 0, so the same data give the same split) is left out of a first fit and classified by
it; the direction written is then fitted on all the extremes. With fewer samples than w dimensions any labels,
random ones included, are separated perfectly on the training samples; the held-out accuracy of random labels stays
near 0.5. :meth:`BoundaryFit.warning` says so when the held-out accuracy is below 0.5 + 1/sqrt(held-out samples)
(two standard errors of a coin flip above chance).

Labels files (``--labels``): UTF-8 CSV, one ``SEED_OR_RECORD,VALUE`` row per line; only the first row may be a header
(a row whose value is not a number); blank lines are skipped; any other row that is not exactly a seed (an integer
torch accepts as a seed) or a record path, and a finite number, is refused naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..align.landmarks import detect_faces
from ..errors import GantuneError, InputError
from ..io.atomic import atomic_write
from ..io.images import tensor_to_pil
from ..sampling import seed_c, seed_z, seeds_c
from .render import load_record

ATTRIBUTES = ("pose", "smile", "mouth-open", "eyes-open")
MEASURE_SIDE = 256
HELD_OUT_SHARE = 0.2  # of each class, left out of the fit that measures the held-out accuracy
SEED_RANGE = (-(2**63), 2**64 - 1)  # the seeds torch.Generator.manual_seed takes
LABELS_HINT = "one row per seed or record: SEED_OR_RECORD,VALUE"


def _dist(p, a: int, b: int) -> float:
    return float(np.linalg.norm(p[a] - p[b]))


def attribute_value(landmarks: np.ndarray, attribute: str) -> float:
    """The attribute from 68 landmarks (x, y) (see the module docstring)."""
    p = np.asarray(landmarks, dtype=np.float64)
    iod = _dist(p, 36, 45)
    if iod <= 0:
        raise ValueError("degenerate landmarks")
    if attribute == "pose":
        return float((p[30, 0] - (p[36, 0] + p[45, 0]) / 2) / iod)
    if attribute == "smile":
        return _dist(p, 48, 54) / iod
    if attribute == "mouth-open":
        return _dist(p, 62, 66) / max(_dist(p, 60, 64), 1e-6)
    if attribute == "eyes-open":
        left = (_dist(p, 37, 41) + _dist(p, 38, 40)) / (2 * max(_dist(p, 36, 39), 1e-6))
        right = (_dist(p, 43, 47) + _dist(p, 44, 46)) / (2 * max(_dist(p, 42, 45), 1e-6))
        return (left + right) / 2
    raise InputError(f"unknown attribute {attribute!r}", f"choose one of {', '.join(ATTRIBUTES)}")


def measure(image: Image.Image, attributes: tuple[str, ...]) -> dict[str, float] | None:
    """The attributes of the largest face in ``image`` (upscaled to 256 px), or None when no face is found."""
    img = image.convert("RGB")
    if min(img.size) < MEASURE_SIDE:
        s = MEASURE_SIDE / min(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
    faces = detect_faces(img, upsample=1)
    if not faces:
        return None
    return {a: attribute_value(faces[0].landmarks, a) for a in attributes}


@dataclass
class BoundaryFit:
    """A fitted boundary: its unit normal in W and how well it separates the classes."""

    normal: torch.Tensor  # (w_dim,) unit normal, fitted on all the extremes (and made orthogonal to ``keep``)
    accuracy: float  # held-out: the first fit, without the held-out samples, classifying them
    train_accuracy: float  # of the final fit on the samples it was fitted on (1.0 whenever samples <= w_dim)
    used: int  # extremes in the two classes
    held_out: int  # of them, left out of the first fit

    @property
    def chance_bound(self) -> float:
        """Held-out accuracies below this are within two standard errors of a coin flip: 0.5 + 1/sqrt(held_out)."""
        return 0.5 + 1.0 / math.sqrt(self.held_out)

    def warning(self) -> str | None:
        """One line when the held-out accuracy is near chance (the direction is then likely noise), else None."""
        if self.accuracy >= self.chance_bound:
            return None
        dims = self.normal.numel()
        return (f"warning: held-out accuracy {self.accuracy:.1%} on {self.held_out} samples is near chance (below "
                f"{min(self.chance_bound, 1.0):.1%}): the direction may be noise; check the labels, or give more "
                f"samples than the {self.used} used for {dims} w dimensions")


def check_two_values(values: np.ndarray) -> None:
    """Refuse values that are all the same: no boundary separates one class."""
    if len(values) and np.all(values == values[0]):
        raise InputError(f"every one of the {len(values)} values is {float(values[0]):g}: a direction needs two "
                         "classes", "give values that differ, e.g. 0 and 1 labels for the two sides")


def _classes(v: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the two classes: with exactly two distinct values, the samples of each; otherwise the bottom and
    top ``fraction`` of ``v``. One-line refusals: too few samples, one value only, classes that overlap."""
    n = len(v)
    distinct = torch.unique(v)
    check_two_values(v.numpy())
    if len(distinct) == 2:
        low, high = torch.nonzero(v == distinct[0])[:, 0], torch.nonzero(v == distinct[1])[:, 0]
        if min(len(low), len(high)) < 2:
            rare = distinct[0] if len(low) < 2 else distinct[1]
            raise InputError(f"only one of the {n} values is {float(rare):g}: each class needs at least 2 samples",
                             "label more samples of the rarer class")
        return low, high
    k = max(2, int(round(fraction * n)))
    if 2 * k > n:
        raise InputError(f"{n} measured samples are too few to fit a direction", "use more --samples")
    order = torch.argsort(v, stable=True)
    low, high = order[:k], order[-k:]
    if float(v[low].max()) >= float(v[high].min()):
        raise InputError(f"the bottom and top {fraction:.0%} of the values overlap (both hold {float(v[high].min()):g})",
                         "give a smaller --fraction")
    return low, high


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float):
    """L2-regularised logistic regression on standardised ``x``: (coef, bias, mean, std)."""
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mu) / sd
    coef = torch.zeros(xs.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([coef, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ coef + bias, y) + l2 * coef.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return coef.detach(), bias.detach(), mu, sd


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    coef, bias, mu, sd = model
    return float(((((x - mu) / sd) @ coef + bias > 0).double() == y).double().mean())


def _split(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A class's indices to fit on and to hold out (at least one each): a fixed permutation (seed 0)."""
    perm = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))]
    h = min(len(idx) - 1, max(1, int(round(HELD_OUT_SHARE * len(idx)))))
    return perm[h:], perm[:h]


def _labelled(ws: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w of both classes, labels 0 for ``low`` and 1 for ``high``)."""
    return ws[torch.cat([low, high])], torch.cat([torch.zeros(len(low)), torch.ones(len(high))]).double()


def _orthogonal_to(normal: torch.Tensor, keep) -> torch.Tensor:
    """``normal`` made orthogonal to every ``keep`` direction (refused when zero, non-finite, or when they leave
    nothing of it), unit length."""
    if not float(normal.norm()) > 1e-12:
        raise InputError("the two classes cannot be told apart by w (their samples have the same w)",
                         "label different seeds or records")
    for i, other in enumerate(keep):
        o = other.double().flatten()
        size = float(o.norm())
        if not math.isfinite(size) or size == 0:
            raise InputError(f"--keep direction {i + 1} is {'zero' if size == 0 else 'not finite'}; it has no "
                             "orientation to keep", "give directions with finite, non-zero values")
        o = o / size
        normal = normal - (normal @ o) * o
    size = float(normal.norm())
    if not size > 1e-9:
        raise InputError("the --keep directions leave nothing of the fitted direction (it lies in their span)",
                         "keep fewer directions")
    return normal / size


def fit_direction(ws: torch.Tensor, values: np.ndarray, *, fraction: float = 0.25, l2: float = 1e-2,
                  keep: list[torch.Tensor] = ()) -> BoundaryFit:
    """A logistic regression separating the top from the bottom ``fraction`` of ``values``: its unit normal in W
    (with ``keep``, orthogonal to those directions: InterFaceGAN's conditional manipulation) and its held-out and
    training accuracies (see the module docstring)."""
    ws = ws.double()
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if len(v) != len(ws):
        raise ValueError(f"{len(ws)} w for {len(v)} values")
    low, high = _classes(v, fraction)
    (low_fit, low_held), (high_fit, high_held) = _split(low), _split(high)
    first = _logistic(*_labelled(ws, low_fit, high_fit), l2)
    held = _accuracy(first, *_labelled(ws, low_held, high_held))
    x, y = _labelled(ws, low, high)
    final = _logistic(x, y, l2)
    normal = _orthogonal_to(final[0] / final[3], keep)  # the classifier's normal in unstandardised coordinates
    return BoundaryFit(normal.float(), held, _accuracy(final, x, y), len(x), len(low_held) + len(high_held))


def fit_boundary(ws: torch.Tensor, values: np.ndarray, *, fraction: float = 0.25, l2: float = 1e-2,
                 keep: list[torch.Tensor] = ()) -> tuple[torch.Tensor, float, int]:
    """:func:`fit_direction` as (unit normal (w_dim,), held-out accuracy, number of samples used)."""
    fit = fit_direction(ws, values, fraction=fraction, l2=l2, keep=keep)
    return fit.normal, fit.accuracy, fit.used


def sample_and_measure(G, *, attributes: tuple[str, ...], samples: int, seed: int = 0, batch_size: int = 16,
                       truncation: float = 1.0, device="cpu",
                       progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, dict, int]:
    """w (M, w_dim) of the samples with a face, their attribute values {attribute: (M,)}, and how many had none."""
    if G.cfg.overparam:
        raise InputError("directions are fitted in W of a standard generator; this one is overparameterized",
                         "fit on the standard generator, or pass --labels for records")
    ws, vals, missing = [], {a: [] for a in attributes}, 0
    seeds = list(range(seed, seed + samples))
    with torch.no_grad():
        for i in range(0, samples, batch_size):
            chunk = seeds[i: i + batch_size]
            z = torch.cat([seed_z(G, s) for s in chunk]).to(device)
            c = seeds_c(G, chunk)
            lat = G.map(z, c=None if c is None else c.to(device), truncation=truncation)
            imgs = G.synthesis(lat, noise_mode="const")
            for w, img in zip(lat[:, 0], tensor_to_pil(imgs)):
                m = measure(img, attributes)
                if m is None:
                    missing += 1
                    continue
                ws.append(w.float().cpu())
                for a in attributes:
                    vals[a].append(m[a])
            if progress:
                progress(min(i + batch_size, samples), samples)
    if not ws:
        raise InputError(f"no face was found in {samples} samples", "is this a face generator? use --labels instead")
    return torch.stack(ws), {a: np.array(v) for a, v in vals.items()}, missing


_INTEGER = re.compile(r"^[+-]?\d+$")


def _label_rows(path: Path) -> list[tuple[int, int | Path, float]]:
    """(line, key, value) of every row of a labels file, all checked before anything is computed."""
    rows: list[tuple[int, int | Path, float]] = []
    seen: dict[int | Path, int] = {}  # key -> its line
    first = True
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                line = f"{path}:{reader.line_num}"
                if len(row) != 2:
                    raise InputError(f"{line}: {len(row)} field{'s' * (len(row) > 1)} ({','.join(row)[:40]!r}); a row "
                                     "has two", LABELS_HINT)
                key, text = row[0].strip(), row[1].strip()
                header, first = first and bool(key) and bool(text), False
                try:
                    value = float(text)
                except ValueError:
                    if header:
                        continue  # the first row, naming the columns
                    if not text:
                        raise InputError(f"{line}: the row has no value", LABELS_HINT) from None
                    raise InputError(f"{line}: {text!r} for {key or 'the row'} is not a number", LABELS_HINT) from None
                if not key:
                    raise InputError(f"{line}: the row names no seed or record", LABELS_HINT)
                if not math.isfinite(value):
                    raise InputError(f"{line}: the value for {key} is not finite", "give a finite number")
                rows.append((reader.line_num, _label_key(line, key, path.parent), value))
                if rows[-1][1] in seen:
                    raise InputError(f"{line}: {key} is labelled twice (also on line {seen[rows[-1][1]]})",
                                     "give each seed or record once")
                seen[rows[-1][1]] = reader.line_num
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file (byte {e.start})", "give a CSV of " + LABELS_HINT) from None
    except csv.Error as e:
        raise InputError(f"{path}: not a readable CSV file ({e})", "give a CSV of " + LABELS_HINT) from None
    return rows


def _label_key(line: str, key: str, base: Path) -> int | Path:
    """A row's key: a seed (int) or an existing record file (relative paths from the labels file's folder)."""
    if _INTEGER.match(key):
        seed = int(key)
        if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            raise InputError(f"{line}: seed {key} is out of range", "a seed is an integer from -2**63 to 2**64-1")
        return seed
    p = Path(key) if Path(key).is_absolute() else base / key
    if not p.is_file():
        raise InputError(f"{line}: {key} is neither a seed nor a record file", LABELS_HINT)
    return Path(os.path.realpath(p))


def _label_w(where: str, key: int | Path, G, device) -> torch.Tensor:
    """The w of one labels row: a seed's mapped z or a record's latent (the mean over layers for w+)."""
    if isinstance(key, int):
        if G.cfg.overparam:
            raise InputError(f"{where}: a seed of an overparameterized generator has no single w",
                             "fit on the standard generator, or label w / w+ records")
        with torch.no_grad():
            c = seed_c(G, key)
            return G.map(seed_z(G, key).to(device), c=None if c is None else c.to(device))[0, 0].float().cpu()
    try:
        rec = load_record(key)
    except (GantuneError, OSError) as e:
        raise InputError(f"{where}: {e.one_line() if isinstance(e, GantuneError) else e}") from None
    if rec.latent_kind not in ("w", "w+"):
        raise InputError(f"{where}: a {rec.latent_kind} record has no single w", "use w or w+ records")
    if rec.latent.shape[-1] != G.cfg.w_dim:
        raise InputError(f"{where}: the record's w has {rec.latent.shape[-1]} values, the generator's {G.cfg.w_dim}",
                         "label records of this generator")
    return rec.latent.float().reshape(-1, rec.latent.shape[-1]).mean(0)


def read_labels(path: Path, G, *, device="cpu") -> tuple[torch.Tensor, np.ndarray]:
    """``labels.csv`` rows ``seed_or_record,value`` -> (w (M, w_dim), values (M,)); see the module docstring for
    the rows taken. A record contributes its w (the mean over layers for w+); record paths are relative to the file."""
    rows = _label_rows(Path(path))
    if len(rows) < 4:
        raise InputError(f"{path}: {len(rows)} labelled rows; need at least 4", LABELS_HINT)
    check_two_values(np.array([v for _, _, v in rows]))
    ws = [_label_w(f"{path}:{line}", key, G, device) for line, key, _ in rows]
    return torch.stack(ws), np.array([v for _, _, v in rows])


def _json_safe(value):
    """``value`` with every float that is not finite (NaN, ±inf) replaced by None: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_direction(direction: torch.Tensor, path: Path, meta: dict) -> Path:
    """InterFaceGAN's layout: a (1, w_dim) float tensor (``torch.save``), written atomically; the fit's facts go to a
    ``.json`` beside it (strict JSON: a value that is not a finite number is written as null)."""
    with atomic_write(path) as f:
        torch.save(direction.reshape(1, -1).float().contiguous(), f)
    with atomic_write(path.with_suffix(".json"), "w") as f:
        json.dump(_json_safe(meta), f, indent=2, default=str, allow_nan=False)
        f.write("\n")
    return path


@torch.no_grad()
def check_direction(G, direction: torch.Tensor, *, strengths: list[float], count: int, seed: int,
                    attributes: tuple[str, ...] = ATTRIBUTES, device="cpu",
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Edit ``count`` samples (seeds ``seed`` …) along ``direction`` at each strength and measure every attribute.

    Per attribute, over the images with a face at three strengths or more (the strengths without one are skipped):
    the share whose value moves monotonically with the strength, the mean change from the lowest to the highest
    measured strength, and that change over the attribute's spread across the unedited images (so attributes on
    different scales compare). On an overparameterized generator the W direction moves every row of the latent
    matrix, as ``gantune edit`` applies it to W records."""
    n = direction.float().reshape(-1).to(device)
    per_image = []  # [strength][attribute] values, or None
    for k, s in enumerate(range(seed, seed + count)):
        c = seed_c(G, s)
        w = G.map(seed_z(G, s).to(device), c=None if c is None else c.to(device))
        rows = []
        for st in strengths:
            lat = {"wmat" if G.cfg.overparam else "ws": w + st * n}
            img = tensor_to_pil(G.synthesis(**lat, noise_mode="const")[0])
            rows.append(measure(img, attributes))
        per_image.append(rows)
        if progress:
            progress(k + 1, count)
    complete = [r for r in per_image if all(m is not None for m in r)]
    usable = [r for r in per_image if sum(m is not None for m in r) >= 3]  # a face at three strengths or more
    out = {"images": count, "with_face_at_every_strength": len(complete), "with_face_at_3_or_more": len(usable),
           "strengths": strengths, "attributes": {}}
    base_index = min(range(len(strengths)), key=lambda i: abs(strengths[i]))
    for a in attributes:
        if not usable:
            out["attributes"][a] = None
            continue
        mono, changes, rising = [], [], []
        for r in usable:  # over the strengths at which a face was found, in strength order
            v = np.array([m[a] for m in r if m is not None])
            d = np.diff(v)
            mono.append(bool(np.all(d > 0) or np.all(d < 0)))
            changes.append((v[-1] - v[0]))
            rising.append(v[-1] > v[0])
        base = [r[base_index][a] for r in per_image if r[base_index] is not None]
        spread = float(np.std(base)) if len(base) > 1 else float("nan")
        change = float(np.mean(changes))
        out["attributes"][a] = {"monotonic": float(np.mean(mono)), "mean_change": change,
                                "change_over_spread": change / spread if spread else float("nan"),
                                "increasing": float(np.mean(rising))}
    return out
