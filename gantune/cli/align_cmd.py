"""``gantune align`` (FFHQ face crops with a manifest) and ``gantune paste`` (put an aligned face back)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (InputsArg, OverwriteOpt, ShardOpt, dropped_short_flags, exit_with, input_items, OutDirOpt,
                     run_batch, shard_of, value)

from .validate import finite


class Detector(str, Enum):
    hog = "hog"
    cnn = "cnn"


SizeOpt = Annotated[int, typer.Option("--size", help="Output side in pixels, a power of two (1024 for FFHQ models, 256 for e4e/pSp).")]
FacesOpt = Annotated[str, typer.Option("--faces", help="Which faces: largest (one crop, <stem>.png), all (<stem>_face1.png, _face2… largest first) or a face number N (1 = largest).")]
DetectorOpt = Annotated[Detector, typer.Option("--detector", help="hog (dlib frontal detector, fast) or cnn (dlib MMOD CNN: finds more faces, slow on CPU).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes (each loads the models once).")]


def align_command(
    inputs: InputsArg,
    out: OutDirOpt = Path("out/align"),
    size: SizeOpt = 1024,
    faces: FacesOpt = "largest",
    detector: DetectorOpt = Detector.hog,
    workers: WorkersOpt = 1,
    upsample: Annotated[int, typer.Option("--upsample", min=0, help="Detector upsampling passes (1 finds faces down to ~40 px).")] = 1,
    min_score: Annotated[Optional[float], typer.Option("--min-score", callback=finite("--min-score"), help="Ignore detections with a lower detector confidence (default: the strongest face always counts, other HOG detections from 0.3).", show_default=False)] = None,
    detect_max_side: Annotated[int, typer.Option("--detect-max-side", min=64, help="Detect on a copy downscaled to this longest side; landmarks use the full photo.")] = 1024,
    shard: ShardOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """FFHQ-align the faces in photos. Writes <stem>.png per photo (or <stem>_faceN.png with --faces all) and
    manifest.jsonl (status, faces found, landmarks, quad, outputs per input). Exits 0 only if every photo gave a
    crop; a re-run skips photos already done.

    Example: gantune align photos/ -o aligned/ --size 1024 --faces all
    """
    from ..align import FaceAligner
    from ..align.batch import AlignPool, output_names
    from ..io.images import IMAGE_SUFFIXES
    from ..io.runner import Batch

    kw = {} if min_score is None else {"min_score": min_score}
    aligner = FaceAligner(size=size, detector=value(detector), faces=faces, upsample=upsample,
                          detect_max_side=detect_max_side, **kw)
    params = {"size": size, "faces": faces, "detector": value(detector), "upsample": upsample, "min_score": min_score,
              "detect_max_side": detect_max_side}
    batch = Batch("align", input_items(inputs, suffixes=IMAGE_SUFFIXES), out, params=params,
                  planned=lambda it: [] if faces == "all" else output_names(it.name, faces, 1), shard=shard_of(shard),
                  overwrite=overwrite)
    batch.prepare()

    def write(item, photo, outs) -> None:
        item.info.update(photo.info)
        for (i, img), name in zip(photo.crops, output_names(item.name, aligner.faces, photo.info["faces_found"])
                                   if aligner.faces == "all" else output_names(item.name, aligner.faces, 1)):
            p = outs.image(f"face{i}", name, img)
            item.info["faces"][i - 1]["output"] = p.name

    with AlignPool(aligner, workers) as pool:
        code = run_batch(batch, "aligned", process=pool, write=write, batch_size=max(1, workers))
    exit_with(code)


def paste_command(
    edited: Annotated[list[str], typer.Argument(help="Aligned faces (edited or reconstructed; any square size): files, folders, globs, or - to read paths from stdin.", show_default=False)],
    transform: Annotated[Path, typer.Option("--transform", "-t", help="The align manifest.jsonl, an inversion record (.safetensors) or a transform .json.", show_default=False)],
    onto: Annotated[Optional[Path], typer.Option("--onto", help="The original photo the faces were aligned from (default: the path the transform names).", show_default=False)] = None,
    out: OutDirOpt = Path("out/paste"),
    face: Annotated[Optional[int], typer.Option("--face", min=1, help="Face number when the photo had several aligned faces (default: from the _faceN file name).", show_default=False)] = None,
    feather: Annotated[float, typer.Option("--feather", min=0.0, max=0.5, help="Soft-edge width as a fraction of the crop side (0 = hard edge).")] = 0.1,
    overwrite: OverwriteOpt = False,
) -> None:
    """Warp aligned faces back into the original photo with a soft feathered edge, at the photo's size. Writes
    OUT/<stem>_pasted.png per face and manifest.jsonl.

    Example: gantune paste edited/me.png --onto photos/me.jpg --transform aligned/manifest.jsonl -o pasted/
    """
    from ..align import paste_back
    from ..align.transform_io import load_transform
    from ..errors import InputError
    from ..io.images import IMAGE_SUFFIXES, load_image
    from ..io.runner import Batch

    for f, what in ((transform, "give the align manifest.jsonl, a record .safetensors or a .json"),
                    (onto, "give the original photo")):
        if f is not None and not f.is_file():
            raise InputError(f"{f}: no such file", what)
    extra = [transform] + ([onto] if onto is not None else [])
    batch = Batch("paste", input_items(edited, suffixes=IMAGE_SUFFIXES), out, extra_inputs=extra,
                  params={"transform": str(transform), "onto": None if onto is None else str(onto), "face": face,
                          "feather": feather},
                  planned=lambda it: [f"{it.name}_pasted.png"], overwrite=overwrite)
    batch.prepare()

    def load(item):
        t = load_transform(transform, crop=item.input, original=onto, face=face)
        src = onto or (Path(t["source"]) if t.get("source") else None)
        if src is None:
            raise InputError("the transform does not name the original photo", "give it with --onto PHOTO")
        batch.forbidden.add(Path(os.path.realpath(src)))
        return load_image(item.input, min_side=8), load_image(src), t

    def write(item, data, outs) -> None:
        face_img, photo, t = data
        outs.image("image", f"{item.name}_pasted.png", paste_back(face_img, photo, t, feather=feather))

    exit_with(run_batch(batch, "pasted", load=load, write=write))


def register(app: typer.Typer) -> None:
    app.command("align", cls=dropped_short_flags(s="--size"))(align_command)  # -s: --strength elsewhere
    app.command("paste")(paste_command)
