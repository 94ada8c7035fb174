"""The reports as text: the reconstruction and detection tables (cells for the terminal, markdown to paste), the
caption and the ordering lines."""

from __future__ import annotations

import math
from pathlib import Path

from ..train.data import SYNTHETIC_FACES
from .data import HELDOUT_SEED_OFFSET
from .lpips import LPIPS_MIN_SIDE


def fmt_stat(s: dict, digits: int = 4) -> str:
    if not s or s.get("n", 0) == 0 or not math.isfinite(s["mean"]):
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def fmt_seconds(s: float) -> str:
    return f"{s:.3g}"


def reconstruction_columns(report: dict) -> list[str]:
    return ["method", "generator", "px", "L2 ↓", report["metrics"]["lpips"]["label"] + " ↓", "MS-SSIM ↑", "ID dist ↓",
            "s / image"]


def reconstruction_cells(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        m = r["metrics"]
        out.append([r["method"], Path(str(r["generator"]["spec"]).split(" (")[0]).name, str(r["resolution"]),
                    fmt_stat(m.get("l2", {})), fmt_stat(m.get("lpips", {})), fmt_stat(m.get("ms_ssim", {})),
                    fmt_stat(m.get("identity", {}), 3), fmt_seconds(r["seconds_per_image"])])
    return out


def caption(report: dict) -> str:
    d = report["data"]
    if d["source"] == SYNTHETIC_FACES:
        src = (f"{d['count']} held-out synthetic-faces images (DCGAN, torch seed {HELDOUT_SEED_OFFSET:_} + {d['seed']}, "
               "a seed training never uses)")
    else:
        src = f"{d['count']} images from {d['source']}"
    px = "/".join(str(r) for r in report["compared_at"]) or "–"
    lp = report["metrics"]["lpips"]
    lp_txt = "LPIPS* = " + ("random-trunk substitute" if lp["substitute"] else "LPIPS-alex")
    return (f"{src}; compared at the generator resolution ({px} px; LPIPS inputs upsampled to {LPIPS_MIN_SIDE} px when "
            f"smaller); mean ± std over images; optimizations: {report['steps']} steps, loss "
            f"{(report['optim_loss'] or '–').split(' (')[0]}; device {report['device']}."
            + ("" if not lp["substitute"] else f" {lp_txt}: not comparable to published LPIPS."))


def ordering_lines(report: dict) -> list[str]:
    return [f"Expected ({o['source']}): {o['claim']} — measured: {o['verdict']}." for o in report["orderings"]]


def markdown_table(columns: list[str], cells: list[list[str]]) -> str:
    def esc(s):
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def reconstruction_markdown(report: dict) -> str:
    parts = [markdown_table(reconstruction_columns(report), reconstruction_cells(report)), "", caption(report), ""]
    parts += [f"- {line}" for line in ordering_lines(report)]
    for s in report["skipped"]:
        parts.append(f"- {s['method']}: not run ({s['reason']}).")
    parts += [f"- Note: {n}." for n in report["notes"]]
    return "\n".join(parts)



def detection_columns() -> list[str]:
    return ["images", "px", "upscaled to", "faces found", "rate"]


def detection_cells(report: dict) -> list[list[str]]:
    return [[r["images"], str(r["resolution"]), str(report["upscale"]), f"{r['found']} / {r['count']}",
             f"{r['rate']:.1%}"] for r in report["rows"]]


def detection_markdown(report: dict) -> str:
    return "\n".join([markdown_table(detection_columns(), detection_cells(report)), "",
                      f"Detector: {report['detector']}; images resized ({report['resize']}) to {report['upscale']} px."])
