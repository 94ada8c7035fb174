"""Fitting InterFaceGAN directions on any generator (Shen et al. 2020): sample the generator, measure an attribute
on each image, fit a linear boundary in W, keep its unit normal.

Attributes come from dlib's 68 landmarks (the shipped ``shape_predictor_68_face_landmarks.dat``; images are upscaled
to 256 px first, and images without a detected face are left out and counted):

* ``pose``: yaw, the nose tip's horizontal offset from the midpoint of the outer eye corners over the inter-ocular
  distance (positive: the nose is right of the eyes' midpoint in the image);
* ``smile``: mouth width (outer corners) over the inter-ocular distance;
* ``mouth-open``: inner-lip gap over mouth width;
* ``eyes-open``: eye aspect ratio, (|p37 p41| + |p38 p40|) / 2|p36 p39|, mean of both eyes.

The boundary: the samples in the top and bottom ``fraction`` of the attribute are labelled 1 / 0 and an
L2-regularised logistic regression on standardised w is fitted (InterFaceGAN uses a linear SVM on the extremes; any
linear classifier's normal serves). The direction is the unit normal mapped back to W and is written as InterFaceGAN
writes its boundaries: a (1, w_dim) tensor (``edit --direction FILE.pt``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

ATTRIBUTES = ("pose", "smile", "mouth-open", "eyes-open")
MEASURE_SIDE = 256


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
    from ..align.landmarks import detect_faces

    img = image.convert("RGB")
    if min(img.size) < MEASURE_SIDE:
        s = MEASURE_SIDE / min(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
    faces = detect_faces(img, upsample=1)
    if not faces:
        return None
    return {a: attribute_value(faces[0].landmarks, a) for a in attributes}


def fit_boundary(ws: torch.Tensor, values: np.ndarray, *, fraction: float = 0.25, l2: float = 1e-2,
                 keep: list[torch.Tensor] = ()) -> tuple[torch.Tensor, float, int]:
    """Unit normal (w_dim,) of a logistic regression separating the top from the bottom ``fraction`` of ``values``;
    with ``keep``, projected orthogonal to those directions (InterFaceGAN's conditional manipulation). Returns the
    normal, the training accuracy and the number of samples used."""
    ws = ws.double()
    v = torch.as_tensor(values, dtype=torch.float64)
    n = len(v)
    k = max(2, int(round(fraction * n)))
    if 2 * k > n:
        raise InputError(f"{n} measured samples are too few to fit a direction", "use more --samples")
    order = torch.argsort(v)
    idx = torch.cat([order[:k], order[-k:]])
    x, y = ws[idx], torch.cat([torch.zeros(k), torch.ones(k)]).double()
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
    with torch.no_grad():
        acc = float(((xs @ coef + bias > 0).double() == y).double().mean())
        normal = coef / sd  # back to W: the classifier's normal in unstandardised coordinates
        for other in keep:
            o = other.double().flatten()
            o = o / o.norm()
            normal = normal - (normal @ o) * o
        normal = normal / normal.norm()
    return normal.float(), acc, 2 * k


def sample_and_measure(G, *, attributes: tuple[str, ...], samples: int, seed: int = 0, batch_size: int = 16,
                       truncation: float = 1.0, device="cpu",
                       progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, dict, int]:
    """w (M, w_dim) of the samples with a face, their attribute values {attribute: (M,)}, and how many had none."""
    from ..io.images import tensor_to_pil
    from ..sampling import seed_z

    if G.cfg.overparam:
        raise InputError("directions are fitted in W of a standard generator; this one is overparameterized",
                         "fit on the standard generator, or pass --labels for records")
    ws, vals, missing = [], {a: [] for a in attributes}, 0
    seeds = list(range(seed, seed + samples))
    with torch.no_grad():
        for i in range(0, samples, batch_size):
            chunk = seeds[i: i + batch_size]
            z = torch.cat([seed_z(G, s) for s in chunk]).to(device)
            lat = G.map(z, truncation=truncation)
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


def read_labels(path: Path, G, *, device="cpu") -> tuple[torch.Tensor, np.ndarray]:
    """``labels.csv`` rows ``seed_or_record,value`` (a header row is skipped) -> (w (M, w_dim), values (M,)).
    A record contributes its w (the mean over layers for w+)."""
    from ..editing import load_record
    from ..sampling import seed_z

    ws, vals = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip():
                continue
            key, text = row[0].strip(), row[1].strip()
            try:
                value = float(text)
            except ValueError:
                if not ws:
                    continue  # a header
                raise InputError(f"{path}: {text!r} for {key} is not a number") from None
            if not np.isfinite(value):
                raise InputError(f"{path}: the value for {key} is not finite")
            if key.lstrip("-").isdigit():
                with torch.no_grad():
                    w = G.map(seed_z(G, int(key)).to(device))[0, 0].float().cpu()
            else:
                p = Path(key) if Path(key).is_absolute() else path.parent / key
                rec = load_record(p)
                if rec.latent_kind not in ("w", "w+"):
                    raise InputError(f"{p}: a {rec.latent_kind} record has no single w", "use w or w+ records")
                w = rec.latent.float().reshape(-1, rec.latent.shape[-1]).mean(0)
            ws.append(w)
            vals.append(value)
    if len(ws) < 4:
        raise InputError(f"{path}: {len(ws)} labelled rows; need at least 4", "one row per seed or record: KEY,VALUE")
    return torch.stack(ws), np.array(vals)


def save_direction(direction: torch.Tensor, path: Path, meta: dict) -> Path:
    """InterFaceGAN's layout: a (1, w_dim) float tensor (``torch.save``), written atomically; the fit's facts go to a
    ``.json`` beside it."""
    import json

    from ..io.atomic import atomic_write

    with atomic_write(path) as f:
        torch.save(direction.reshape(1, -1).float().contiguous(), f)
    with atomic_write(path.with_suffix(".json"), "w") as f:
        json.dump(meta, f, indent=2, default=str)
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
    different scales compare)."""
    from ..io.images import tensor_to_pil
    from ..sampling import seed_z

    n = direction.float().reshape(-1).to(device)
    per_image = []  # [strength][attribute] values, or None
    for k, s in enumerate(range(seed, seed + count)):
        w = G.map(seed_z(G, s).to(device))
        rows = []
        for st in strengths:
            img = tensor_to_pil(G.synthesis(w + st * n, noise_mode="const")[0])
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
