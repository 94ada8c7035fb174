"""The identity metric of edits and adaptations: dlib's face-recognition distance of each image to the record's
unedited reconstruction (below 0.6 dlib calls it the same person), rounded to 4 places as the manifests hold it."""

from __future__ import annotations

from PIL import Image

from ..io.images import tensor_to_pil
from ..io.record import InversionRecord
from ..io.render import render_record
from ..metrics.identity import Descriptor, descriptor, identity_distance


def reconstruction_descriptor(G, record: InversionRecord, *, noise_mode: str | None = None) -> Descriptor:
    """dlib's descriptor of ``record`` rendered unedited with ``G`` (``noise_mode`` None: the record's own)."""
    return descriptor(tensor_to_pil(render_record(G, record, noise_mode=noise_mode)[0]))


def identity_to(reference: Descriptor, image: Image.Image) -> float:
    """The distance of ``image`` to the reconstruction ``reference`` describes, rounded to 4 places."""
    return round(identity_distance(reference, image), 4)
