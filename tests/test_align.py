"""FFHQ alignment: the transform maths (no detector), then the dlib pipeline on real photos shipped in scikit-image.

Photos are built at test time: ``skimage.data.astronaut()`` (one face, plus a weak false detection on her mission
patch), LFW faces (25x25 grey) upscaled x8-x11 with LANCZOS, a two-face composite, an EXIF-rotated copy, grey / RGBA /
palette / CMYK / 16-bit variants, a truncated JPEG, a non-image, a blank image, a tiny image and a fake huge PNG.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gantune.align import (
    AlignError,
    FaceAligner,
    NoFaceError,
    align_quad,
    canonical_eyes,
    ffhq_quad,
    from_aligned,
    paste_back,
    to_aligned,
)
from gantune.align.ffhq import eye_mouth_points, quad_side
from gantune.errors import InputError
from support import astronaut, lfw_face, two_faces
from gantune.io.images import ImageError

# --------------------------------------------------------------------------------------------------------------------
# photos


def with_exif_rotation(img: Image.Image) -> bytes:
    """JPEG whose pixels are rotated 90° counter-clockwise, with EXIF orientation 6 ('rotate 90° CW to view')."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def fake_huge_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG header claiming a huge image (the pixel data is never read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def aligner256():
    return FaceAligner(size=256).load()


def eyes_in_crop(crop: Image.Image) -> dict[str, np.ndarray]:
    """Run the detector + 68-point predictor again on an aligned crop and return eye/mouth centres."""
    from gantune.align.landmarks import detect_faces

    dets = detect_faces(crop)
    assert dets, "no face found again in the aligned crop"
    return eye_mouth_points(dets[0].landmarks)


def assert_ffhq_eyes(face, tol: float) -> None:
    """The crop's own landmarks (re-detected) sit where the FFHQ quad construction puts them."""
    want = canonical_eyes(face.landmarks, face.size)
    got = eyes_in_crop(face.image)
    for k in ("eye_left", "eye_right", "mouth_avg"):
        err = np.hypot(*(got[k] - want[k]))
        assert err < tol, f"{k}: re-detected at {got[k]}, FFHQ places it at {want[k]} ({err:.2f} px off)"
    # the classic FFHQ layout: eye midpoint centred, eyes level
    mid = (got["eye_left"] + got["eye_right"]) / 2
    assert abs(mid[0] - (face.size - 1) / 2) < 0.03 * face.size
    assert abs(got["eye_left"][1] - got["eye_right"][1]) < 0.03 * face.size


# --------------------------------------------------------------------------------------------------------------------
# transform maths (no detector)


def synthetic_landmarks(eye_dist: float, mouth_dist: float, centre=(0.0, 0.0), angle_deg: float = 0.0) -> np.ndarray:
    """68 landmarks of a frontal face: only eyes (36-47) and mouth corners (48, 54) matter for the quad."""
    lm = np.zeros((68, 2))
    ring = np.array([[np.cos(t), np.sin(t)] for t in np.linspace(0, 2 * np.pi, 6, endpoint=False)]) * 3.0
    lm[36:42] = ring + [-eye_dist / 2, 0]
    lm[42:48] = ring + [eye_dist / 2, 0]
    lm[48] = [-eye_dist / 3, mouth_dist]
    lm[54] = [eye_dist / 3, mouth_dist]
    a = np.deg2rad(angle_deg)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return lm @ R.T + np.asarray(centre)


def test_quad_of_frontal_face_is_the_ffhq_square():
    lm = synthetic_landmarks(60.0, 70.0, centre=(200.0, 150.0))
    q = ffhq_quad(lm)
    half = max(2 * 60.0, 1.8 * 70.0)  # 126: the mouth term wins here
    c = np.array([200.0, 150.0 + 0.1 * 70.0])
    np.testing.assert_allclose(q, [c + [-half, -half], c + [-half, half], c + [half, half], c + [half, -half]], atol=1e-9)
    lm2 = synthetic_landmarks(80.0, 60.0)  # eye term wins: side = 4·|eye_to_eye|
    assert quad_side(ffhq_quad(lm2)) == pytest.approx(4 * 80.0)


def test_quad_rotates_with_the_face():
    lm = synthetic_landmarks(50.0, 55.0, centre=(100.0, 120.0))
    a = np.deg2rad(23.0)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    rot = (lm - [100.0, 120.0]) @ R.T + [100.0, 120.0]
    np.testing.assert_allclose(ffhq_quad(rot), (ffhq_quad(lm) - [100.0, 120.0]) @ R.T + [100.0, 120.0], atol=1e-9)


def test_point_maps_are_inverse_and_match_the_closed_form():
    lm = synthetic_landmarks(40.0, 47.0, centre=(300.0, 210.0), angle_deg=-17.0)
    q = ffhq_quad(lm)
    pts = np.random.default_rng(0).uniform(0, 500, size=(20, 2))
    np.testing.assert_allclose(from_aligned(to_aligned(pts, q, 512), q, 512), pts, atol=1e-9)
    # the quad corners are the crop corners
    np.testing.assert_allclose(to_aligned(q, q, 512) + 0.5, [[0, 0], [0, 512], [512, 512], [512, 0]], atol=1e-9)
    ce = canonical_eyes(lm, 512)
    p = eye_mouth_points(lm)
    for k in ("eye_left", "eye_right", "mouth_avg"):
        np.testing.assert_allclose(ce[k], to_aligned(p[k], q, 512)[0], atol=1e-9)
    # frontal face with wide eyes: eyes at 3/8 and 5/8 of the width (pixel centres), level
    ce = canonical_eyes(synthetic_landmarks(80.0, 60.0), 1024)
    np.testing.assert_allclose([ce["eye_left"][0], ce["eye_right"][0]], [384 - 0.5, 640 - 0.5], atol=1e-9)
    assert ce["eye_left"][1] == pytest.approx(ce["eye_right"][1])


def blobs_image(w: int, h: int, points: np.ndarray, sigma: float) -> Image.Image:
    yy, xx = np.mgrid[:h, :w]
    acc = np.full((h, w), 30.0)
    for x, y in points:
        acc += 220.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    a = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([a, a, a], -1))


def blob_centroid(arr: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    x0, y0 = int(round(near[0])), int(round(near[1]))
    win = arr[max(y0 - radius, 0): y0 + radius + 1, max(x0 - radius, 0): x0 + radius + 1].astype(np.float64)
    win = np.clip(win - np.percentile(win, 50), 0, None)
    yy, xx = np.mgrid[: win.shape[0], : win.shape[1]]
    return np.array([(xx * win).sum() / win.sum() + max(x0 - radius, 0), (yy * win).sum() / win.sum() + max(y0 - radius, 0)])


@pytest.mark.parametrize(
    "case",
    [
        dict(w=400, h=300, scale=1.0, angle=12.0, centre=(200.0, 150.0), size=128),  # plain crop
        dict(w=300, h=260, scale=1.0, angle=-30.0, centre=(60.0, 200.0), size=128),  # quad leaves the photo: padding
        dict(w=1400, h=1200, scale=4.0, angle=8.0, centre=(700.0, 600.0), size=64),  # big face: shrink + supersample
    ],
)
def test_warp_puts_points_where_the_point_map_says(case):
    """Bright blobs at known places land at the pixel the point map predicts (sub-pixel; a half-pixel slip fails)."""
    s = case["scale"]
    lm = synthetic_landmarks(34.0 * s, 40.0 * s, centre=case["centre"], angle_deg=case["angle"])
    q = ffhq_quad(lm)
    size = case["size"]
    # blobs on a grid inside the crop, in original coordinates
    grid = np.array([[u, v] for u in (0.25, 0.5, 0.75) for v in (0.25, 0.5, 0.75)]) * size - 0.5
    pts = from_aligned(grid, q, size)
    # padding blurs up to ~pad/3 = 0.1·quad side into the photo (as FFHQ does): test blobs clear of that
    m = 0.15 * quad_side(q) + 6
    inside = (pts[:, 0] > m) & (pts[:, 0] < case["w"] - m) & (pts[:, 1] > m) & (pts[:, 1] < case["h"] - m)
    assert inside.sum() >= 4
    img = blobs_image(case["w"], case["h"], pts[inside], sigma=1.5 * quad_side(q) / size)
    crop = align_quad(img, q, size)
    assert crop.size == (size, size) and crop.mode == "RGB"
    arr = np.asarray(crop)[..., 0]
    for want in grid[inside]:
        got = blob_centroid(arr, want, radius=6)
        assert np.hypot(*(got - want)) < 0.2, (got, want)
    if not inside.all():  # the padded part is filled (reflection + blur), not black
        assert arr.min() > 20


def test_small_outputs_are_antialiased():
    """A 64 px crop from a large, detailed photo matches the LANCZOS-reduced 512 px crop much better than a direct
    bilinear transform (the HyperStyle scripts' way) does."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, size=(600, 600, 3), dtype=np.uint8))
    q = ffhq_quad(synthetic_landmarks(70.0, 80.0, centre=(300.0, 290.0), angle_deg=5.0))
    ref = np.asarray(align_quad(img, q, 512).resize((64, 64), Image.LANCZOS), dtype=np.float64)
    auto = np.asarray(align_quad(img, q, 64), dtype=np.float64)
    direct = np.asarray(align_quad(img, q, 64, supersample=1), dtype=np.float64)
    err_auto, err_direct = np.abs(auto - ref).mean(), np.abs(direct - ref).mean()
    assert err_auto < 0.5 * err_direct, (err_auto, err_direct)


def test_paste_back_round_trip_synthetic():
    from skimage import data

    photo = Image.fromarray(data.chelsea())  # 451x300 cat: detailed texture
    lm = synthetic_landmarks(30.0, 34.0, centre=(220.0, 130.0), angle_deg=14.0)
    q = ffhq_quad(lm)
    t = {"quad": q.tolist(), "size": 256, "image_size": list(photo.size)}
    crop = align_quad(photo, q, 256)
    back = paste_back(crop, photo, t, feather=0.1)
    a, b = np.asarray(photo, dtype=np.float64), np.asarray(back, dtype=np.float64)
    # pixels whose crop coordinates lie well inside the feathered edge
    yy, xx = np.mgrid[: photo.height, : photo.width]
    uv = to_aligned(np.stack([xx.ravel(), yy.ravel()], 1), q, 256).reshape(photo.height, photo.width, 2)
    core = (uv.min(-1) > 0.12 * 256) & (uv.max(-1) < 0.88 * 256)
    outside = (uv.min(-1) < -2) | (uv.max(-1) > 258)
    assert core.sum() > 2000
    assert np.abs(a - b)[core].mean() < 4.0
    assert np.array_equal(a[outside], b[outside])  # untouched outside the crop
    # a shifted transform (2 px) must do clearly worse: the test sees misregistration
    t2 = dict(t, quad=(q + [2.0, 0.0]).tolist())
    b2 = np.asarray(paste_back(crop, photo, t2), dtype=np.float64)
    assert np.abs(a - b2)[core].mean() > 1.5 * np.abs(a - b)[core].mean()
    # a smaller (e.g. 64 px reconstruction) face and a half-size copy of the photo both work
    small = paste_back(crop.resize((64, 64), Image.LANCZOS), photo, t)
    assert small.size == photo.size and np.abs(np.asarray(small, float) - a)[core].mean() < 12.0
    half = photo.resize((photo.width // 2 + 1, photo.height // 2), Image.LANCZOS)  # 226x150: same aspect within 1%
    assert paste_back(crop, half, t).size == half.size
    with pytest.raises(AlignError, match="aspect"):
        paste_back(crop, photo.crop((0, 0, 300, 300)), t)


# --------------------------------------------------------------------------------------------------------------------
# the dlib pipeline on real photos


def test_astronaut_eyes_land_where_ffhq_puts_them(aligner256):
    photo = astronaut()
    faces = aligner256.align(photo)
    assert len(faces) == 1
    f = faces[0]
    assert f.image.size == (256, 256)
    assert f.faces_found == 1  # her face; the weak false detection on the mission patch (0.12) is not counted
    assert 150 < f.box[0] < 200 and 50 < f.box[1] < 100
    assert_ffhq_eyes(f, tol=2.5)
    d = f.transform_dict()
    import json

    assert json.loads(json.dumps(d)) == d and d["image_size"] == [512, 512] and d["size"] == 256


def test_paste_back_of_unchanged_crop_reproduces_the_face(aligner256):
    photo = astronaut()
    f = aligner256.align(photo)[0]
    back = paste_back(f.image, photo, f.transform_dict())
    a, b = np.asarray(photo, dtype=np.float64), np.asarray(back, dtype=np.float64)
    l, t, r, btm = (int(v) for v in f.box)
    region = (slice(t, btm), slice(l, r))
    assert np.abs(a[region] - b[region]).mean() < 4.0
    psnr = 10 * np.log10(255.0**2 / ((a[region] - b[region]) ** 2).mean())
    assert psnr > 30.0, psnr


def test_lfw_grey_face_and_cnn_detector():
    face = lfw_face(3, 8)  # 200x200, mode L
    assert face.mode == "L"
    f_hog = FaceAligner(size=256).align(face)[0]
    assert_ffhq_eyes(f_hog, tol=3.0)
    f_cnn = FaceAligner(size=256, detector="cnn", upsample=0).align(face)[0]
    assert f_cnn.score > 0
    # both detectors' boxes differ, but the landmarks (and so the crop) agree closely
    np.testing.assert_allclose(f_cnn.quad, f_hog.quad, atol=3.0)


def test_two_faces_largest_all_and_index():
    photo, small_at, big_at = two_faces()
    largest = FaceAligner(size=128, faces="largest").align(photo)
    assert len(largest) == 1 and largest[0].faces_found == 2 and largest[0].index == 1
    cx = lambda f: (f.box[0] + f.box[2]) / 2  # noqa: E731
    assert cx(largest[0]) > big_at[0]  # the big face on the right, not the last detection
    both = FaceAligner(size=128, faces="all").align(photo)
    assert [f.index for f in both] == [1, 2]
    assert cx(both[0]) > big_at[0] and small_at[0] < cx(both[1]) < big_at[0]
    second = FaceAligner(size=128, faces=2).align(photo)
    np.testing.assert_allclose(second[0].quad, both[1].quad)
    with pytest.raises(AlignError, match="face 3 asked for, but only 2 found"):
        FaceAligner(size=128, faces=3).align(photo)


def test_large_photo_detected_downscaled_landmarks_full_res(aligner256):
    """A 2048 px photo is detected on a 1024 px copy; the landmarks come from the full photo and agree with
    aligning the 512 px original (scaled by 4)."""
    photo = astronaut()
    big = photo.resize((2048, 2048), Image.LANCZOS)
    f_small = aligner256.align(photo)[0]
    f_big = FaceAligner(size=256, detect_max_side=1024).align(big)[0]
    np.testing.assert_allclose((f_big.quad + 0.5) / 4 - 0.5, f_small.quad, atol=2.0)
    assert_ffhq_eyes(f_big, tol=2.5)


def test_exif_rotation_is_applied(tmp_path, aligner256):
    photo = astronaut()
    p = tmp_path / "rotated.jpg"
    p.write_bytes(with_exif_rotation(photo))
    with Image.open(p) as raw:  # the stored pixels are sideways: the frontal detector finds nothing in them
        assert not FaceAligner(size=256).detect(raw.convert("RGB"))
    image, faces = aligner256.align_file(p)
    assert image.size == photo.size and faces[0].transform_dict()["source"] == str(p)
    np.testing.assert_allclose(faces[0].quad, aligner256.align(photo)[0].quad, atol=3.0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_image_modes_are_converted(tmp_path, aligner256, mode):
    photo = astronaut()
    if mode == "I;16":
        grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(grey)  # uint16 -> mode I;16
        p = tmp_path / "x16.png"
    elif mode == "CMYK":
        img, p = photo.convert("CMYK"), tmp_path / "cmyk.jpg"
    elif mode == "RGBA":
        img = photo.convert("RGBA")
        img.putalpha(200)
        p = tmp_path / "rgba.png"
    else:
        img, p = photo.convert(mode), tmp_path / f"{mode}.png"
    img.save(p)
    with Image.open(p) as check:
        assert check.mode == mode
    image, faces = aligner256.align_file(p)
    assert image.mode == "RGB" and faces[0].image.mode == "RGB"
    assert 150 < faces[0].box[0] < 200


def test_bad_inputs_fail_with_a_reason(tmp_path, aligner256):
    buf = io.BytesIO()
    astronaut().save(buf, format="JPEG")
    cases = {
        "truncated.jpg": (buf.getvalue()[: len(buf.getvalue()) // 2], ImageError, "not a readable image"),
        "notes.jpg": (b"this is not an image\n", ImageError, "not a readable image"),
        "huge.png": (fake_huge_png(), ImageError, "too large"),
    }
    for name, (data, exc, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(exc, match=msg):
            aligner256.align_file(p)
    tiny = tmp_path / "tiny.png"
    lfw_face(0, 1).save(tiny)  # 25x25
    with pytest.raises(ImageError, match="too small"):
        aligner256.align_file(tiny)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 240), (200, 180, 160)).save(blank)
    with pytest.raises(NoFaceError, match="no face found"):
        aligner256.align_file(blank)


def test_option_validation():
    with pytest.raises(InputError, match="power of two"):
        FaceAligner(size=300)
    with pytest.raises(InputError, match="detector"):
        FaceAligner(detector="mtcnn")
    with pytest.raises(InputError, match="faces"):
        FaceAligner(faces="biggest")
    with pytest.raises(InputError, match="start at 1"):
        FaceAligner(faces=0)
