"""The FFHQ alignment transform and its inverse, in plain numpy + PIL (no detector, no files).

Coordinates. Points (landmarks, the quad) are in *pixel-index* coordinates, as dlib returns them: the centre of pixel
(i, j) is the point (x=j, y=i). PIL's continuous coordinates put that centre at (j + 0.5, i + 0.5); the conversion
happens only where PIL is called.

The quad (FFHQ ``recreate_aligned_images``): from the 68 landmarks take the eye centres and mouth corners, build an
oriented square ``[c-x-y, c-x+y, c+x+y, c+x-y]`` (top-left, bottom-left, bottom-right, top-right of the crop) around
``c = eye_avg + 0.1·eye_to_mouth`` with half-side ``max(2|eye_to_eye|, 1.8|eye_to_mouth|)``. The square is mapped onto
the output image, so the map original -> aligned is a similarity (rotation, uniform scale, shift):

    p = q0 + (q3 - q0)·X/S + (q1 - q0)·Y/S        (p: original index coords, X, Y: aligned *continuous* coords)

Resampling follows the FFHQ recipe (shrink huge photos, crop around the quad, reflect-pad with blur where the quad
leaves the photo, quad transform), with two changes: the quad transform runs at ``supersample × size`` and is then
reduced with LANCZOS, so small outputs are not aliased; and all coordinate updates are exact (no half-pixel drift).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

# 68-point (iBUG 300-W) landmark index ranges used by the FFHQ quad
LEFT_EYE = slice(36, 42)  # the eye on the image's left
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def eye_mouth_points(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Eye centres, eye midpoint and mouth midpoint of a (68, 2) landmark array (index coordinates)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    eye_left = lm[LEFT_EYE].mean(0)
    eye_right = lm[RIGHT_EYE].mean(0)
    mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) * 0.5
    return {
        "eye_left": eye_left,
        "eye_right": eye_right,
        "eye_avg": (eye_left + eye_right) * 0.5,
        "mouth_avg": mouth_avg,
    }


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square (4, 2) in the photo's index coordinates: top-left, bottom-left, bottom-right, top-right."""
    p = eye_mouth_points(landmarks)
    eye_to_eye = p["eye_right"] - p["eye_left"]
    eye_to_mouth = p["mouth_avg"] - p["eye_avg"]
    # x: the crop's horizontal axis, halfway between the eye line and the eye->mouth line turned by -90°
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]  # x turned by +90° (image y points down)
    c = p["eye_avg"] + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]).astype(np.float64)


def quad_side(quad: np.ndarray) -> float:
    """Side length of the crop square in original pixels."""
    q = np.asarray(quad, dtype=np.float64)
    return float(np.hypot(*(q[3] - q[0])))


def _basis(quad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin q0, 2x2 matrix A with columns q3-q0 and q1-q0)."""
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    return q[0], np.stack([q[3] - q[0], q[1] - q[0]], axis=1)


def to_aligned(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Map (N, 2) original index coordinates into the aligned crop's index coordinates (crop of ``size`` px)."""
    q0, A = _basis(quad)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    xy = np.linalg.solve(A, (pts - q0).T).T * size  # continuous aligned coords
    return xy - 0.5


def from_aligned(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`to_aligned`: aligned index coordinates -> original index coordinates."""
    q0, A = _basis(quad)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return q0 + ((pts + 0.5) / size) @ A.T


def canonical_eyes(landmarks: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Where FFHQ alignment puts the eye centres and mouth midpoint of these landmarks in a ``size`` crop.

    Closed form of the quad construction (not via the warp): with e = eye_to_eye, m = eye_to_mouth, the crop axes
    are u = (e - rot(m)) / |e - rot(m)| and v = u turned by +90°, half-side h = max(2|e|, 1.8|m|), and a point p
    lands at ``size · (0.5 + ((p - c)·u, (p - c)·v) / 2h)`` (continuous), c = eye_avg + 0.1·m. For a frontal face
    with 2|e| >= 1.8|m| the eyes land at x = 3/8 and 5/8 of the width, the classic FFHQ layout.
    """
    p = eye_mouth_points(landmarks)
    e = p["eye_right"] - p["eye_left"]
    m = p["mouth_avg"] - p["eye_avg"]
    u = e - np.array([-m[1], m[0]])
    u = u / np.hypot(*u)
    v = np.array([-u[1], u[0]])
    h = max(2.0 * np.hypot(*e), 1.8 * np.hypot(*m))
    c = p["eye_avg"] + 0.1 * m
    out = {}
    for k in ("eye_left", "eye_right", "mouth_avg"):
        d = p[k] - c
        out[k] = size * (0.5 + np.array([d @ u, d @ v]) / (2.0 * h)) - 0.5
    return out


def _gaussian_blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Blur an (H, W, 3) float image channel-wise (PIL's Gaussian on 8 bits: the result only fills padding)."""
    u8 = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(radius=sigma)), dtype=np.float32)


def align_quad(img: Image.Image, quad: np.ndarray, size: int, *, supersample: int | None = None,
               enable_padding: bool = True) -> Image.Image:
    """Warp the ``quad`` (original index coords) of an RGB image to a ``size``×``size`` crop, FFHQ style.

    ``supersample``: the quad transform runs at ``size·supersample`` and is reduced with LANCZOS (None: enough to
    cover the quad's own resolution, at most 4; 1: the HyperStyle scripts' direct bilinear transform).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    qc = np.asarray(quad, dtype=np.float64).reshape(4, 2) + 0.5  # PIL continuous coordinates
    qsize = quad_side(quad)
    if supersample is None:
        supersample = int(min(4, max(1, math.ceil(qsize / size))))
    transform_size = size * int(supersample)

    # 1. shrink very large faces (LANCZOS) so the crop and padding work on at most ~4x the output size
    shrink = int(math.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (max(1, int(round(img.width / shrink))), max(1, int(round(img.height / shrink))))
        scale = np.array([rsize[0] / img.width, rsize[1] / img.height])
        img = img.resize(rsize, Image.LANCZOS)
        qc = qc * scale
        qsize = qsize * float(scale.mean())

    # 2. crop to the quad's bounding box plus a border
    border = max(int(round(qsize * 0.1)), 3)
    lo = np.floor(qc.min(0)).astype(int)
    hi = np.ceil(qc.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, img.width), min(hi[1] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        if crop[2] <= crop[0] or crop[3] <= crop[1]:  # the quad lies entirely outside the photo
            raise ValueError("the face quad does not overlap the image")
        img = img.crop(crop)
        qc = qc - np.array(crop[:2], dtype=np.float64)

    # 3. reflect-pad where the quad leaves the photo, blurring and flattening the padding towards the border
    lo = np.floor(qc.min(0)).astype(int)
    hi = np.ceil(qc.max(0)).astype(int)
    pad = [max(-lo[0] + border, 0), max(-lo[1] + border, 0), max(hi[0] - img.width + border, 0),
           max(hi[1] - img.height + border, 0)]
    if enable_padding and max(pad) > border - 4:
        pad = [max(p, int(round(qsize * 0.3))) for p in pad]
        arr = np.pad(np.asarray(img, dtype=np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        h, w = arr.shape[:2]
        yy, xx = np.ogrid[:h, :w]
        with np.errstate(divide="ignore", invalid="ignore"):
            mx = 1.0 - np.minimum(np.float32(xx) / max(pad[0], 1e-8), np.float32(w - 1 - xx) / max(pad[2], 1e-8))
            my = 1.0 - np.minimum(np.float32(yy) / max(pad[1], 1e-8), np.float32(h - 1 - yy) / max(pad[3], 1e-8))
        mask = np.maximum(mx, my)[..., None].astype(np.float32)  # 0 inside the photo, rising to 1 at the far edge
        blur = qsize * 0.02
        arr += (_gaussian_blur(arr, blur) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
        qc = qc + np.array(pad[:2], dtype=np.float64)

    # 4. the quad transform, then antialiased reduction to the output size
    out = img.transform((transform_size, transform_size), Image.QUAD, tuple(qc.flatten()), Image.BILINEAR)
    if transform_size != size:
        out = out.resize((size, size), Image.LANCZOS)
    return out


def _fit_transform(transform: dict, original_size: tuple[int, int]) -> np.ndarray:
    """The quad of ``transform`` in the coordinates of a photo of ``original_size`` (rescaled if it was resized)."""
    quad = np.asarray(transform["quad"], dtype=np.float64).reshape(4, 2)
    src = transform.get("image_size")
    if src is None or tuple(src) == tuple(original_size):
        return quad
    sw, sh = original_size[0] / src[0], original_size[1] / src[1]
    if abs(sw / sh - 1.0) > 0.01:
        raise ValueError(
            f"the photo is {original_size[0]}x{original_size[1]} but the face was aligned from a "
            f"{src[0]}x{src[1]} photo (different aspect ratio)")
    return (quad + 0.5) * [sw, sh] - 0.5


def feather_mask(size: int, feather: float) -> Image.Image:
    """An 'L' mask of the crop: 1 inside, falling smoothly (smoothstep) to 0 over ``feather``·size at the edges."""
    idx = np.arange(size, dtype=np.float64) + 0.5
    d = np.minimum(idx, size - idx)  # distance of each pixel centre to the nearer edge
    width = max(feather * size, 1e-6)
    t = np.clip(d / width, 0.0, 1.0)
    ramp = t * t * (3.0 - 2.0 * t)
    m = np.minimum(ramp[:, None], ramp[None, :])
    return Image.fromarray(np.rint(m * 255.0).astype(np.uint8), "L")


def paste_back(face: Image.Image, original: Image.Image, transform: dict, *, feather: float = 0.1) -> Image.Image:
    """Warp an aligned (possibly edited or reconstructed) face back into the photo it was aligned from.

    ``transform``: :meth:`AlignedFace.transform_dict` (needs ``quad``; ``image_size`` lets a resized copy of the
    photo be used). The face may have any square size (e.g. a 256 px reconstruction of a 1024 px crop).
    ``feather``: width of the soft edge as a fraction of the crop side (0 gives a hard edge).
    Returns a new RGB image of the original's size.
    """
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5], got {feather}")
    original = original.convert("RGB") if original.mode != "RGB" else original
    face = face.convert("RGB") if face.mode != "RGB" else face
    if face.width != face.height:
        raise ValueError(f"the aligned face must be square, got {face.width}x{face.height}")
    quad = _fit_transform(transform, original.size)
    side = quad_side(quad)
    # a face much larger than its footprint in the photo is reduced first (LANCZOS), so the warp does not alias
    if face.width > 1.5 * side and side >= 8:
        n = max(8, int(math.ceil(side)))
        face = face.resize((n, n), Image.LANCZOS)
    S = face.width
    q0, A = _basis(quad)
    M = S * np.linalg.inv(A)  # original index offset -> aligned continuous coords
    t = -M @ (q0 + 0.5)  # PIL hands us continuous output coords x; index = x - 0.5
    coeffs = (M[0, 0], M[0, 1], t[0], M[1, 0], M[1, 1], t[1])
    warped = face.transform(original.size, Image.AFFINE, coeffs, Image.BILINEAR)
    mask = feather_mask(S, feather) if feather > 0 else Image.new("L", (S, S), 255)
    warped_mask = mask.transform(original.size, Image.AFFINE, coeffs, Image.BILINEAR)  # 0 outside the crop
    return Image.composite(warped, original, warped_mask)
