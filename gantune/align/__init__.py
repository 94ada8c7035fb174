"""Face alignment: dlib detection + 68 landmarks, the FFHQ crop transform, and pasting crops back into the photo.

Public API (used by ``gantune align`` / ``paste`` and by ``invert --align``)::

    aligner = FaceAligner(size=1024, detector="hog", faces="largest")
    faces = aligner.align(load_image("photo.jpg"))       # list[AlignedFace]; NoFaceError when there is none
    record.meta[RECORD_META_KEY] = faces[0].transform_dict()
    photo = paste_back(edited_face, original_photo, faces[0].transform_dict(), feather=0.1)
"""

from __future__ import annotations

from PIL import Image

from ..errors import GantuneError
from .aligner import (
    MIN_SIDE,
    RECORD_META_KEY,
    AlignedFace,
    AlignError,
    FaceAligner,
    NoFaceError,
    check_size,
    parse_faces,
)
from .ffhq import align_quad, canonical_eyes, ffhq_quad, from_aligned, to_aligned
from .ffhq import paste_back as _paste


def paste_back(face: Image.Image, original: Image.Image, transform: "dict | AlignedFace", feather: float = 0.1
               ) -> Image.Image:
    """Warp an aligned (edited / reconstructed) face back into its original photo with a soft feathered edge.

    ``transform``: an :class:`AlignedFace` or its :meth:`~AlignedFace.transform_dict` (as stored in a manifest entry
    or in an inversion record's ``meta["align"]``). ``feather``: soft-edge width as a fraction of the crop side.
    The photo must be the one that was aligned (EXIF-rotated the same way), or a resized copy of it.
    """
    if isinstance(transform, AlignedFace):
        transform = transform.transform_dict()
    if not isinstance(transform, dict) or "quad" not in transform:
        raise AlignError("the transform has no 'quad'", "pass a manifest entry, record metadata or transform_dict()")
    try:
        return _paste(face, original, transform, feather=feather)
    except (ValueError, KeyError, TypeError) as e:
        raise AlignError(f"cannot paste back: {e}") from None


__all__ = [
    "MIN_SIDE",
    "RECORD_META_KEY",
    "AlignError",
    "AlignedFace",
    "FaceAligner",
    "GantuneError",
    "NoFaceError",
    "align_quad",
    "canonical_eyes",
    "check_size",
    "ffhq_quad",
    "from_aligned",
    "paste_back",
    "parse_faces",
    "to_aligned",
]
