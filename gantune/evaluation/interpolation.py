"""How editable inversions are along the paths between them (Overparameterized StyleGAN, §4.3, Fig. 7).

For each consecutive pair of records in a group (records sorted by name):
* perceptual path length: LPIPS between consecutive images at t = 0, 1/5, …, 1, summed over the 5 segments;
* realism of the midpoint (t = 1/2): whether dlib's HOG detector finds a face, and the identity distance (dlib's
  face-recognition ResNet) of the midpoint to each end, next to the distance between the ends.
The paper scores realism with FID on the midpoints and LPIPS with the ImageNet backbone; where those are not
available here the report names its substitutes (LPIPS* with a random trunk; detection and identity for realism).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..editing import load_record
from ..editing.generators import GeneratorCache, generator_for
from ..editing.interpolate import check_compatible, interpolation_frames
from ..io.images import tensor_to_pil
from ..metrics.identity import SAME_PERSON, descriptor
from .lpips import lpips_metric
from .report import fmt_stat, markdown_table
from .stats import summarize

SEGMENTS = 5


def _pairs(paths: list[Path]) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(paths) - 1)]


@torch.no_grad()
def evaluate_path(G, a, b, lpips) -> dict:
    """The measures of one pair of records (see the module docstring)."""
    ts = [k / SEGMENTS for k in range(SEGMENTS + 1)] + [0.5]
    imgs = [img for _, img in interpolation_frames(G, a, b, ts)]
    path, mid = torch.stack(imgs[: SEGMENTS + 1]), imgs[-1]
    ppl = float(lpips(path[:-1], path[1:]).sum())
    da, db, dm = (descriptor(tensor_to_pil(x)) for x in (path[0], path[-1], mid))
    dist = lambda u, v: float(((u.vector - v.vector) ** 2).sum() ** 0.5)  # noqa: E731
    return {"ppl": ppl, "mid_detected": dm.detected, "ends_detected": [da.detected, db.detected],
            "id_mid_to_a": dist(dm, da), "id_mid_to_b": dist(dm, db), "id_a_to_b": dist(da, db)}


def evaluate_interpolation(groups: dict[str, list[Path]], *, weights: str | None = None, device="cpu",
                           log=None) -> dict:
    """{label: record paths} -> report: per group the summaries over its pairs, and every pair's numbers."""
    lpips = lpips_metric(device)
    cache = GeneratorCache(torch.device(device))
    rows = []
    for label, paths in groups.items():
        paths = sorted(paths, key=lambda p: Path(p).name)
        recs = [load_record(p) for p in paths]
        check_compatible(recs, [Path(p).stem for p in paths])
        G = generator_for(cache, weights, recs[0])
        pairs = []
        for i, j in _pairs(paths):
            m = evaluate_path(G, recs[i], recs[j], lpips)
            m["pair"] = [Path(paths[i]).name, Path(paths[j]).name]
            pairs.append(m)
            if log:
                log(f"{label}: {m['pair'][0]} -> {m['pair'][1]}: path length {m['ppl']:.4f}")
        mid_to_ends = [(p["id_mid_to_a"] + p["id_mid_to_b"]) / 2 for p in pairs]
        rows.append({
            "label": label, "kind": recs[0].latent_kind, "method": recs[0].method, "records": len(paths),
            "pairs": len(pairs),
            "ppl": summarize([p["ppl"] for p in pairs]),
            "mid_detected": sum(p["mid_detected"] for p in pairs) / max(1, len(pairs)),
            "ends_detected": sum(sum(p["ends_detected"]) for p in pairs) / max(1, 2 * len(pairs)),
            "id_mid_to_ends": summarize(mid_to_ends),
            "id_ends": summarize([p["id_a_to_b"] for p in pairs]),
            "mid_same_person_as_an_end": sum(min(p["id_mid_to_a"], p["id_mid_to_b"]) < SAME_PERSON
                                             for p in pairs) / max(1, len(pairs)),
            "per_pair": pairs,
        })
    return {"segments": SEGMENTS, "lpips": lpips.describe(), "rows": rows,
            "identity": "dlib face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat); same person < 0.6",
            "realism_note": "SUBSTITUTE for the paper's FID of midpoints: dlib HOG detection rate and identity "
                            "distances of the midpoints"}


def interpolation_columns(report: dict) -> list[str]:
    return ["inversions", "latent", "pairs", f"path length ({report['segments']} segments) ↓",
            "midpoint face found", "ends face found", "identity mid↔ends", "identity end↔end"]


def interpolation_cells(report: dict) -> list[list[str]]:
    return [[r["label"], r["kind"], str(r["pairs"]), fmt_stat(r["ppl"]), f"{r['mid_detected']:.0%}",
             f"{r['ends_detected']:.0%}", fmt_stat(r["id_mid_to_ends"], 3), fmt_stat(r["id_ends"], 3)]
            for r in report["rows"]]


def interpolation_markdown(report: dict) -> str:
    return markdown_table(interpolation_columns(report), interpolation_cells(report)) + (
        f"\n\nLPIPS: {report['lpips']['note']}. Realism: {report['realism_note']}; {report['identity']}.")
