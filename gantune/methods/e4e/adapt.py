"""The official domain-adaptation recipe's codes: ReStyle-e4e (or e4e) W+ codes of a record's source photo, put in
place of the record's latent while its HyperStyle offsets stay (``run_domain_adaptation`` in HyperStyle's
``utils/domain_adaptation_utils.py``: ReStyle-e4e codes + the offsets HyperStyle predicted from its W-encoder codes).

The photo is the one the record names (``source.path``, checked against ``source.sha256``), brought to the image the
inversion saw: the stored alignment quad warped again, or the stored centre crop / edge padding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import InputError
from ...io.record import InversionRecord
from .checkpoint import StyleEncoderModel
from .method import check_pair, encode_e4e, encode_restyle
from ...align import RECORD_META_KEY
from ...align.ffhq import align_quad
from ...io.hashing import sha256_file
from ...io.images import load_image, pil_to_tensor
from ..pipeline import make_square


def record_source_image(record: InversionRecord, base: Path | None = None) -> Image.Image:
    """The image the record was inverted from (before resizing), rebuilt from its source photo and metadata."""
    src = record.meta.get("source") if isinstance(record.meta.get("source"), dict) else {}
    path = src.get("path")
    if not path:
        raise InputError("the record does not name its source photo, so it cannot be encoded again",
                         "use --codes record, or invert the photo again with gantune invert")
    p = Path(path)
    if not p.is_file() and base is not None and (base / p).is_file():
        p = base / p
    if not p.is_file():
        raise InputError(f"the record's source photo {path} is not there", "run adapt from the folder you ran invert in")
    want = src.get("sha256")
    if want and sha256_file(p) != want:
        raise InputError(f"the record's source photo {p} has changed since the inversion (sha256 differs)",
                         "invert the photo again, or use --codes record")
    img = load_image(p)
    t = record.meta.get(RECORD_META_KEY)
    if isinstance(t, dict) and t.get("quad") is not None:
        return align_quad(img, np.asarray(t["quad"], dtype=np.float64), int(t.get("size", 1024)),
                          supersample=t.get("supersample"))
    fit = record.meta.get("fit")
    if isinstance(fit, dict) and fit.get("mode") in ("crop", "pad"):
        return make_square(img, fit["mode"])[0]
    return img


@torch.no_grad()
def recode_record(record: InversionRecord, model: StyleEncoderModel, G, *, iters: int, noise_mode: str = "const",
                  base: Path | None = None) -> InversionRecord:
    """The record with its latent replaced by the encoder's W+ codes of its source photo (offsets unchanged).
    ``G``: the record's own (source) generator, which ReStyle's iterations render with."""
    check_pair(model, G, f"the {model.kind} encoder")
    x = pil_to_tensor(record_source_image(record, base), model.encoder.input_size).to(G.w_avg.device)
    if model.kind == "e4e":
        codes = encode_e4e(model, x, G)
    else:
        codes = encode_restyle(model, x, G, iters=iters, noise_mode=noise_mode).codes
    meta = {**record.meta, "codes": {"kind": model.kind, **({"iters": iters} if model.kind == "restyle-e4e" else {}),
                                     **{k: v for k, v in model.info.items() if k in ("spec", "sha256")}}}
    return dataclasses.replace(record, latent=codes[0].float().cpu(), latent_kind="w+", meta=meta)
