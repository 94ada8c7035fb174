"""Inversion records: HyperStyle's shared offsets stored in their exact compact form (same images as the full form,
a fraction of the size), old full-form records still load, non-finite tensors are refused, a record never makes
gantune fetch a URL."""

from __future__ import annotations

import pytest
import torch

from gantune.editing import record_generator_spec, render_record
from gantune.editing.adapt import adapt_render
from gantune.errors import InputError
from gantune.io.record import InversionRecord, RecordError, SharedOffsets, expand_shared
from gantune.methods.hyper.hypernet import HyperNetwork
from gantune.methods.hyper.method import HyperStyle
from gantune.methods.hyper.wencoder import WEncoder
from support import TINY64, tiny_generator


def make_hyper(width: int):
    G = tiny_generator(3, perturb=True, **TINY64)
    hn = HyperNetwork.from_specs(G.specs, width=width, input_size=64).eval()
    with torch.no_grad():  # visible offsets
        hn.shared_fc.w1.mul_(0.5)
        for lyr in hn.layers:
            if lyr.head != "shared":
                hn.heads[lyr.name.replace(".", "_")].output[-1].weight.mul_(20)
    enc = WEncoder(num_ws=G.num_ws, w_dim=G.cfg.w_dim, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    hs = HyperStyle(G, hn, enc, torch.zeros(G.num_ws, G.cfg.w_dim), iters=3)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    results = [hs(x[i : i + 1], [name])[0] for i, name in enumerate(["a", "b"])]  # batch 1, as a record renders
    return G, hn, results


@pytest.fixture(scope="module")
def hyper():
    """A hypernetwork whose code (z = 64) is narrower than its 32-channel layers' full offsets: compact pays."""
    return make_hyper(8)


def full_form(rec: InversionRecord) -> InversionRecord:
    """The same record with every offset written out in full, as records were written before the compact form."""
    return InversionRecord(latent=rec.latent, latent_kind=rec.latent_kind, method=rec.method,
                           deltas={k: v.clone() for k, v in rec.offsets().items()}, meta=dict(rec.meta))


def test_shared_offsets_are_compact_and_sum_of_passes(hyper):
    G, hn, results = hyper
    res = results[1]
    shared_layers = [lyr.name for lyr in hn.layers if lyr.head == "shared"]
    assert res.shared is not None and sorted(res.shared.h) == sorted(shared_layers) and res.shared.count == 3
    assert not set(res.deltas) & set(shared_layers)  # no full copy kept beside the compact form
    # the compact form is the affine structure: Σ_t (h_t w1 + b1) == (Σ_t h_t) w1 + T b1
    h = res.shared.h["b16.conv0"]
    assert h.shape == (32, hn.shared_fc.z_dim)
    full = res.shared.expand("b16.conv0")
    assert full.shape == (32, 32, 3, 3) and full.abs().mean() > 1e-3
    parts = [h / 3, h / 3, h - 2 * (h / 3)]  # any split of the summed code gives the same offsets up to rounding
    summed = sum(hn.shared_fc.expand(p[None])[0] for p in parts)
    torch.testing.assert_close(summed, full, rtol=1e-5, atol=1e-6)


def test_compact_record_renders_bit_identically_to_full_form(hyper, tmp_path):
    G, _, results = hyper
    for res in results:
        rec = res.to_record()
        compact = InversionRecord.load(rec.save(tmp_path / f"{res.name}.safetensors"))
        full = InversionRecord.load(full_form(rec).save(tmp_path / f"{res.name}_full.safetensors"))
        assert compact.shared is not None and full.shared is None
        a, b = render_record(G, compact), render_record(G, full)
        assert torch.equal(a, b)
        assert torch.equal(a[0], res.image)  # and it is the image the inversion produced
        lat = compact.latent[None] + 0.5  # an edit
        assert torch.equal(render_record(G, compact, latents=lat), render_record(G, full, latents=lat))
        ad_c, layers_c = adapt_render(G, compact, layers="all")
        ad_f, layers_f = adapt_render(G, full, layers="all")
        assert layers_c == layers_f and torch.equal(ad_c, ad_f)
        assert (tmp_path / f"{res.name}.safetensors").stat().st_size < (tmp_path / f"{res.name}_full.safetensors").stat().st_size


def test_wide_code_on_small_layers_is_written_in_full_exactly(tmp_path):
    G, hn, results = make_hyper(64)  # z = 512 > what 32x32 layers need: the full form is smaller
    res = results[0]
    assert res.shared is not None
    rec = InversionRecord.load(res.to_record().save(tmp_path / "r.safetensors"))
    assert rec.shared is None and rec.deltas["b16.conv0"].shape == (32, 32, 3, 3)
    assert torch.equal(rec.deltas["b16.conv0"], res.shared.expand("b16.conv0"))
    assert torch.equal(render_record(G, rec)[0], res.image)


def test_fp16_compact_record_is_smaller_and_close(hyper, tmp_path):
    G, _, results = hyper
    res = results[0]
    exact = res.to_record().save(tmp_path / "exact.safetensors")
    half = res.to_record(delta_dtype=torch.float16).save(tmp_path / "half.safetensors")
    r16 = InversionRecord.load(half)
    assert r16.shared.h["b16.conv0"].dtype == torch.float16 and r16.shared.w1.dtype == torch.float16
    assert half.stat().st_size < 0.6 * exact.stat().st_size
    diff = (render_record(G, r16) - render_record(G, InversionRecord.load(exact))).abs().max()
    assert 0 < float(diff) < 0.05


def test_1024_record_size_is_under_20_mb(tmp_path):
    """The official 1024 px layout: six 512x512 shared layers, eight per-channel layers (claimed 14)."""
    from gantune.core import GeneratorConfig, layer_specs
    from gantune.methods.hyper.hypernet import default_heads

    specs = layer_specs(GeneratorConfig())
    layers = default_heads(specs, shared_size=512)
    shared = {lyr.name: torch.randn(512, 512) for lyr in layers if lyr.head == "shared"}
    deltas = {lyr.name: torch.randn(lyr.out_ch, lyr.in_ch) for lyr in layers if lyr.head != "shared"}
    assert len(shared) == 6 and len(deltas) == 8
    so = SharedOffsets(shared, torch.randn(512, 512 * 9), torch.randn(512 * 9), 5)
    rec = InversionRecord(latent=torch.randn(18, 512), latent_kind="w+", method="hyperstyle", deltas=deltas, shared=so)
    p = rec.save(tmp_path / "r.safetensors")
    mb = p.stat().st_size / 1e6
    assert mb <= 20, mb
    back = InversionRecord.load(p)
    assert torch.equal(back.offsets()["b64.conv0"], expand_shared(shared["b64.conv0"], so.w1, so.b1, 5, 3))


def test_old_full_form_records_still_load(hyper, tmp_path):
    G, _, results = hyper
    rec = results[0].to_record()
    old = full_form(rec)
    p = old.save(tmp_path / "old.safetensors")
    back = InversionRecord.load(p)
    assert back.shared is None and back.deltas["b16.conv0"].shape == (32, 32, 3, 3)
    assert torch.equal(render_record(G, back)[0], results[0].image)


@pytest.mark.parametrize("bad", ["latent", "delta", "shared", "inf"])
def test_non_finite_tensors_are_refused_naming_the_tensor(hyper, tmp_path, bad):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    p = results_path = hyper[2][0].to_record().save(tmp_path / "r.safetensors")
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    t = load_file(str(results_path))
    key = {"latent": "latent", "delta": "delta.b64.conv0", "shared": "shared.h.b16.conv1", "inf": "shared.w1"}[bad]
    t[key] = t[key].clone()
    t[key].view(-1)[3] = float("inf") if bad == "inf" else float("nan")
    save_file(t, str(p), metadata=meta)
    with pytest.raises(RecordError) as e:
        InversionRecord.load(p)
    assert key in str(e.value) and "non-finite" in str(e.value) and "\n" not in e.value.one_line()


def test_incomplete_shared_offsets_are_refused(hyper, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    p = hyper[2][0].to_record().save(tmp_path / "r.safetensors")
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    t = load_file(str(p))
    del t["shared.w1"]
    save_file(t, str(p), metadata=meta)
    with pytest.raises(RecordError, match="incomplete shared offsets"):
        InversionRecord.load(p)


# --- a record is untrusted: it never makes gantune fetch a URL ---------------------------------------------------------
def _rec(gen: dict) -> InversionRecord:
    return InversionRecord(latent=torch.zeros(1, 8), latent_kind="w", method="optim", meta={"generator": gen})


def test_record_generator_url_is_never_used():
    with pytest.raises(InputError) as e:
        record_generator_spec(_rec({"spec": "http://127.0.0.1:9/evil.pt"}))
    assert "--weights" in e.value.one_line() and "never fetched" in str(e.value)
    with pytest.raises(InputError):
        record_generator_spec(_rec({"spec": "file:///etc/passwd", "path": "https://x.example/g.pt"}))
    # a local path or registry name in the record is used, even when a URL is also given
    assert record_generator_spec(_rec({"spec": "https://x.example/g.pt", "name": "ffhq-1024"})) == "ffhq-1024"
    assert record_generator_spec(_rec({"path": "/data/g.safetensors"})) == "/data/g.safetensors"
    assert record_generator_spec(_rec({})) is None


def test_api_edit_with_url_record_sends_no_request(tmp_path):
    """End to end through the API: a record naming a loopback URL must not produce a single request."""
    import http.server
    import threading

    import gantune

    hits = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/generator.pt"
        p = _rec({"spec": url}).save(tmp_path / "r.safetensors")
        with pytest.raises(InputError) as e:
            gantune.edit(str(p), torch.zeros(8), 1.0)
        assert "--weights" in e.value.one_line()
    finally:
        srv.shutdown()
    assert hits == []


def test_bf16_refinement_expands_its_last_pass_as_a_record_does(hyper, monkeypatch):
    """On a CPU with bf16 in hardware the passes before the last expand their shared offsets in bf16 (they only feed
    the hypernetwork); the last pass's, which make the image, are the record's float32 expansion, bit for bit."""
    from gantune.methods.hyper import inference

    G, hn, _ = hyper
    monkeypatch.setattr(inference, "bf16_expansion", lambda device, dtype: dtype == torch.bfloat16)
    seen, real = [], inference.shared_offsets

    def spy(hypernet, hidden, count, dtype=torch.float32):
        seen.append((count, dtype))
        return real(hypernet, hidden, count, dtype)

    monkeypatch.setattr(inference, "shared_offsets", spy)
    codes = torch.randn(1, G.num_ws, G.cfg.w_dim) * 0.5
    out = inference.refine(torch.rand(1, 3, 64, 64) * 2 - 1, G=G, hypernet=hn, codes=codes, iters=3,
                           dtype=torch.bfloat16)
    assert {d for c, d in seen if c < 3} == {torch.bfloat16} and {d for c, d in seen if c == 3} == {torch.float32}
    fc = hn.shared_fc
    assert out.shared
    for name, h in out.shared.items():
        record_form = expand_shared(h[0].float(), fc.w1.float(), fc.b1.float(), 3, fc.kernel)
        assert out.deltas[name].dtype == torch.float32 and torch.equal(out.deltas[name][0], record_form)
