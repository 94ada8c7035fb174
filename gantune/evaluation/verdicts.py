"""The papers' expected orderings of the reconstruction rows, checked against the measured numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .stats import LOWER_IS_BETTER, METRICS

# The papers' expected orderings: (claim, source, better row, worse row)
ORDERINGS = (
    ("HyperStyle better than the W-encoder alone", "HyperStyle, Alaluf et al. CVPR 2022", "HyperStyle 5 iters", "W-encoder"),
    ("overparameterized latent better than W+", "Overparameterized StyleGAN, Poirier-Ginter et al. 2022", "overparam optim",
     "W+ optim"),
)


def ordering_verdict(better: dict, worse: dict, metrics: Sequence[str] = METRICS) -> dict:
    """Does the row ``better`` beat the row ``worse`` on each metric (means; L2 and LPIPS lower, MS-SSIM higher)?

    ``better``/``worse``: {metric: mean} or {metric: {"mean": …}}. Returns {"per_metric": {metric: bool},
    "holds": True (every metric) / False (none) / None (mixed or nothing to compare), "verdict": text}."""

    def mean(row, m):
        v = row.get(m)
        v = v.get("mean") if isinstance(v, dict) else v
        return None if v is None or not math.isfinite(float(v)) else float(v)

    per = {}
    for m in metrics:
        a, b = mean(better, m), mean(worse, m)
        if a is None or b is None:
            continue
        per[m] = a < b if LOWER_IS_BETTER[m] else a > b
    if not per:
        return {"per_metric": per, "holds": None, "verdict": "not measured"}
    if all(per.values()):
        return {"per_metric": per, "holds": True, "verdict": "holds (better on " + ", ".join(_short(m) for m in per) + ")"}
    if not any(per.values()):
        return {"per_metric": per, "holds": False,
                "verdict": "does not hold (not better on " + ", ".join(_short(m) for m in per) + ")"}
    yes = ", ".join(_short(m) for m, ok in per.items() if ok)
    no = ", ".join(_short(m) for m, ok in per.items() if not ok)
    return {"per_metric": per, "holds": None, "verdict": f"mixed (better on {yes}; not on {no})"}


def _short(metric: str) -> str:
    return {"l2": "L2", "lpips": "LPIPS", "ms_ssim": "MS-SSIM", "identity": "identity"}.get(metric, metric)


def orderings(rows: list[dict]) -> list[dict]:
    """The papers' expected orderings, checked against the measured rows."""
    by = {r["method"]: r for r in rows}
    out = []
    for claim, source, hi, lo in ORDERINGS:
        if hi in by and lo in by:
            v = ordering_verdict(by[hi]["metrics"], by[lo]["metrics"])
        else:
            missing = [m for m in (hi, lo) if m not in by]
            v = {"per_metric": {}, "holds": None, "verdict": f"not measured ({', '.join(missing)} not run)"}
        out.append({"claim": claim, "source": source, "better": hi, "worse": lo, **v})
    return out
