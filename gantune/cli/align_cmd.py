"""``gantune align`` (FFHQ face crops with a manifest) and ``gantune paste`` (put an aligned face back)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import InputsArg, OutDirOpt, Progress, ShardOpt, console

SizeOpt = Annotated[int, typer.Option("--size", "-s", help="Output side in pixels, a power of two (1024 for FFHQ models, 256 for e4e/pSp).")]
FacesOpt = Annotated[str, typer.Option("--faces", help="Which faces: largest (one crop, <stem>.png), all (<stem>_face1.png, _face2… largest first) or a face number N (1 = largest).")]
DetectorOpt = Annotated[str, typer.Option("--detector", help="hog (dlib frontal detector, fast) or cnn (dlib MMOD CNN: finds more faces, slow on CPU).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes (each loads the models once).")]


def align_command(
    inputs: InputsArg,
    out: OutDirOpt,
    size: SizeOpt = 1024,
    faces: FacesOpt = "largest",
    detector: DetectorOpt = "hog",
    workers: WorkersOpt = 1,
    upsample: Annotated[int, typer.Option("--upsample", min=0, help="Detector upsampling passes (1 finds faces down to ~40 px).")] = 1,
    min_score: Annotated[float, typer.Option("--min-score", help="Ignore detections with a lower detector confidence.")] = 0.0,
    detect_max_side: Annotated[int, typer.Option("--detect-max-side", min=64, help="Detect on a copy downscaled to this longest side; landmarks use the full photo.")] = 1024,
    shard: ShardOpt = None,
) -> None:
    """FFHQ-align the faces in photos. Writes <stem>.png per photo (or <stem>_faceN.png with --faces all) and
    manifest.jsonl (status, faces found, landmarks, quad, output per input). Exits 0 only if every photo gave a crop.

    Example: gantune align photos/ -o aligned/ --size 1024 --faces all
    """
    from ..align import FaceAligner
    from ..align.batch import align_files, output_stems
    from ..io.atomic import atomic_write
    from ..io.images import IMAGE_SUFFIXES
    from ..io.inputs import expand_inputs, parse_shard, take_shard
    from ..io.manifest import Manifest

    aligner = FaceAligner(size=size, detector=detector, faces=faces, upsample=upsample, min_score=min_score,
                          detect_max_side=detect_max_side)
    paths = expand_inputs(inputs, suffixes=IMAGE_SUFFIXES)
    stems = output_stems(paths)  # from the full list, so shards and failures never change a name
    shard_i, shard_n = parse_shard(shard)
    jobs = take_shard(list(zip(paths, stems)), (shard_i, shard_n))
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / ("manifest.jsonl" if shard_n == 1 else f"manifest.shard{shard_i}of{shard_n}.jsonl")
    with atomic_write(manifest_path) as f:  # a fresh manifest per run
        f.write(b"")
    manifest = Manifest(manifest_path)
    with Progress(len(jobs), "align") as bar:

        def on_result(entry: dict) -> None:
            manifest.write(entry)
            if entry["status"] == "ok":
                extra = f" ({entry['faces_found']} faces found)" if entry["faces_found"] > 1 else ""
                bar.advance(f"{entry['input']} -> {', '.join(entry['outputs'])}{extra}")
            else:
                bar.advance(f"[red]failed[/]: {entry['input']}: {entry['reason']}")

        align_files([p for p, _ in jobs], out, aligner, stems=[s for _, s in jobs], workers=workers,
                    on_result=on_result)
    console.print(f"{manifest.ok} aligned, {manifest.failed} failed; manifest: {manifest_path}")
    if manifest.failed:
        raise typer.Exit(1)


def paste_command(
    edited: Annotated[Path, typer.Argument(help="The aligned face (edited or reconstructed; any square size).", show_default=False)],
    transform: Annotated[Path, typer.Option("--transform", "-t", help="The align manifest.jsonl, an inversion record (.safetensors) or a transform .json.", show_default=False)],
    onto: Annotated[Optional[Path], typer.Option("--onto", help="The original photo the face was aligned from (default: the path the transform names).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output image file, or a folder (then <edited stem>_pasted.png).")] = Path("."),
    face: Annotated[Optional[int], typer.Option("--face", min=1, help="Face number when the photo had several aligned faces (default: from the _faceN file name).")] = None,
    feather: Annotated[float, typer.Option("--feather", min=0.0, max=0.5, help="Soft-edge width as a fraction of the crop side (0 = hard edge).")] = 0.1,
) -> None:
    """Warp an aligned face back into the original photo with a soft feathered edge, at the photo's size.

    Example: gantune paste edited/me.png --onto photos/me.jpg --transform aligned/manifest.jsonl -o me_edited.jpg
    """
    from ..align import paste_back
    from ..align.transform_io import load_transform
    from ..errors import InputError
    from ..io.images import IMAGE_SUFFIXES, load_image, save_image

    t = load_transform(transform, crop=edited, original=onto, face=face)
    if onto is None:
        if not t.get("source"):
            raise InputError("the transform does not name the original photo", "give it with --onto PHOTO")
        onto = Path(t["source"])
    face_img = load_image(edited, min_side=8)
    photo = load_image(onto)
    result = paste_back(face_img, photo, t, feather=feather)
    target = out if out.suffix.lower() in IMAGE_SUFFIXES else out / f"{edited.stem}_pasted.png"
    save_image(result, target, **({"quality": 95} if target.suffix.lower() in (".jpg", ".jpeg") else {}))
    console.print(f"wrote {target} ({result.width}x{result.height})")


def register(app: typer.Typer) -> None:
    app.command("align")(align_command)
    app.command("paste")(paste_command)
