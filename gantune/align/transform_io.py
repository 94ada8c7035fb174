"""Finding the alignment transform of a crop: in an ``align`` manifest, a JSON file, or an inversion record."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import InputError
from ..io.manifest import read_manifest
from ..io.record import InversionRecord
from .aligner import RECORD_META_KEY

_FACE_RE = re.compile(r"_face(\d+)")


def _is_transform(d) -> bool:
    return isinstance(d, dict) and "quad" in d and "size" in d


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return pa.resolve() == pb.resolve()
    except OSError:
        pass
    return False


def _from_manifest(path: Path, *, crop: Path | None, original: Path | None, face: int | None) -> dict:
    """The face's transform dict, with ``source`` (the entry's input photo) added."""
    entry, f = _find_in_manifest(path, crop=crop, original=original, face=face)
    return {**f, "source": f.get("source", entry["input"])}


def _plain_entry(e: dict, base: Path) -> dict:
    """An align manifest entry with absolute paths: ``input`` (str), ``stem``, ``faces`` with ``output``. Reads the
    runner's schema (input {path, sha256}, name, info.faces, paths relative to the manifest) and the older flat one."""
    if not isinstance(e.get("input"), dict):
        return e
    faces = [{**f, "output": str(base / f["output"])} if "output" in f else f
             for f in ((e.get("info") or {}).get("faces") or [])]
    return {"status": e.get("status"), "input": str(base / e["input"]["path"]), "stem": e.get("name"), "faces": faces}


def _find_in_manifest(path: Path, *, crop: Path | None, original: Path | None, face: int | None) -> tuple[dict, dict]:
    try:
        entries = [_plain_entry(e, path.parent) for e in read_manifest(path) if isinstance(e, dict)]
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable manifest ({e})") from None
    ok = [e for e in entries if e.get("status") == "ok" and any(_is_transform(f) for f in e.get("faces", []))]
    if not ok:
        raise InputError(f"{path}: the manifest has no aligned face")
    # 1. the crop itself (or a file named like it) appears as an output
    if crop is not None and face is None:
        for e in ok:
            for f in e["faces"]:
                if _is_transform(f) and "output" in f and (_same_file(f["output"], crop) or Path(f["output"]).name == crop.name):
                    return e, f
    # 2. the entry of the original photo (by file, then by name), else the only entry
    cands = ok
    if original is not None:
        same = [e for e in ok if _same_file(e["input"], original)] or [e for e in ok if Path(e["input"]).name == original.name]
        if same:
            cands = same
    if len(cands) > 1:
        if crop is not None:  # the crop's stem starts with the photo's output stem
            by_stem = [e for e in cands if crop.stem.startswith(e.get("stem", Path(e["input"]).stem))]
            if len(by_stem) >= 1:
                cands = sorted(by_stem, key=lambda e: -len(e.get("stem", "")))[:1]
    if len(cands) > 1:
        raise InputError(f"{path}: {len(cands)} photos in the manifest and none matches",
                         "give the original with --onto as it was aligned, or a record / single-entry transform")
    faces = [f for f in cands[0]["faces"] if _is_transform(f)]
    if face is None and crop is not None and len(faces) > 1:
        m = _FACE_RE.search(crop.stem)
        face = int(m.group(1)) if m else None
    if face is not None:
        for f in faces:
            if f.get("index") == face:
                return cands[0], f
        raise InputError(f"{path}: no aligned face {face} for {cands[0]['input']}")
    if len(faces) > 1:
        raise InputError(f"{path}: {cands[0]['input']} has {len(faces)} aligned faces", "say which with --face N")
    return cands[0], faces[0]


def load_transform(path: str | os.PathLike, *, crop: str | os.PathLike | None = None,
                   original: str | os.PathLike | None = None, face: int | None = None) -> dict:
    """The transform dict for ``crop`` (a file name hint), aligned from ``original``, out of:

    * an ``align`` manifest (``.jsonl``): matched by crop file name, then the original's path/name, then ``face``;
    * a JSON file holding a transform (or ``{"align": transform}``);
    * an inversion record (``.safetensors``) with the transform in ``meta["align"]``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file", "give the align manifest.jsonl, a record .safetensors or a .json")
    crop_p = Path(crop) if crop is not None else None
    orig_p = Path(original) if original is not None else None
    if p.suffix == ".safetensors":
        meta = InversionRecord.load(p).meta
        t = meta.get(RECORD_META_KEY)
        if not _is_transform(t):
            raise InputError(f"{p}: the record has no alignment transform",
                             "it was inverted from an already aligned crop; use the align manifest instead")
        return t
    if p.suffix == ".jsonl":
        return _from_manifest(p, crop=crop_p, original=orig_p, face=face)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        # a manifest under another name?
        return _from_manifest(p, crop=crop_p, original=orig_p, face=face)
    if _is_transform(data):
        return data
    if isinstance(data, dict) and _is_transform(data.get(RECORD_META_KEY)):
        return data[RECORD_META_KEY]
    if isinstance(data, dict) and "faces" in data:  # one manifest entry saved as JSON
        faces = [f for f in data["faces"] if _is_transform(f)]
        if face is not None:
            faces = [f for f in faces if f.get("index") == face]
        if len(faces) == 1:
            return faces[0]
    raise InputError(f"{p}: no alignment transform found in this JSON")
