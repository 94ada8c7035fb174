"""Files: image <-> tensor conversion (one place), inversion records, inputs, outputs and manifests."""

from .atomic import atomic_path, atomic_write
from .images import ImageError, image_grid, load_image, pil_to_tensor, save_image, tensor_to_pil, tensor_to_uint8
from .record import InversionRecord, RecordError

__all__ = [
    "ImageError",
    "InversionRecord",
    "RecordError",
    "atomic_path",
    "atomic_write",
    "image_grid",
    "load_image",
    "pil_to_tensor",
    "save_image",
    "tensor_to_pil",
    "tensor_to_uint8",
]
