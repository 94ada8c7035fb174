"""The shared FC's column-major w2 (faster on CPU) gives the same hidden codes, survives the official export, and
releasing the pages of a memory-mapped source never changes what any tensor reads."""

from __future__ import annotations

import torch

from gantune.accel.memory import release_file_pages
from gantune.methods.hyper.hypernet import SharedFC


def test_packed_w2_same_codes_and_row_major_export():
    torch.manual_seed(0)
    fc = SharedFC(size=32, z_dim=16)
    code = torch.randn(5, 16)
    before = fc.hidden(code)
    w2 = fc.w2.detach().clone()
    fc.pack_()
    assert fc.w2.stride(0) == 1 and fc.w2.shape == (16, 32 * 16)
    assert torch.equal(fc.w2.detach(), w2)
    torch.testing.assert_close(fc.hidden(code), before, atol=1e-5, rtol=1e-5)
    assert fc.hidden(code).shape == (5, 32, 16)
    fc.pack_()  # idempotent
    assert fc.state_dict()["w2"].shape == (16, 512)


def test_packed_hypernet_exports_the_official_row_major_w2():
    from gantune.core import GeneratorConfig, layer_specs
    from gantune.methods.hyper.checkpoint import hypernet_to_official
    from gantune.methods.hyper.hypernet import HyperNetwork

    cfg = GeneratorConfig(resolution=64, z_dim=32, w_dim=32, mapping_layers=2, channel_base=2048, channel_max=32)
    torch.manual_seed(1)
    hn = HyperNetwork.from_specs(layer_specs(cfg), width=8, input_size=64).eval()
    assert hn.shared_fc is not None
    want = hypernet_to_official(hn)["shared_weight_hypernet.w2"].clone()
    hn.shared_fc.pack_()
    got = hypernet_to_official(hn)["shared_weight_hypernet.w2"]
    assert got.is_contiguous() and torch.equal(got, want)


def test_release_file_pages_only_touches_file_mappings(tmp_path):
    t = torch.arange(4 << 20, dtype=torch.float32)  # 16 MiB
    torch.save({"t": t}, tmp_path / "t.pt")
    mapped = torch.load(tmp_path / "t.pt", mmap=True, weights_only=True)["t"]
    assert torch.equal(mapped, t)  # pages now resident
    released = release_file_pages(mapped.data_ptr(), mapped.numel() * 4)
    assert released >= (4 << 20) * 4 - 2 * 4096
    assert torch.equal(mapped, t)  # read back from the file
    anon = t.clone()
    assert release_file_pages(anon.data_ptr(), anon.numel() * 4) == 0
    assert torch.equal(anon, t)


def test_cpu_layouts_copy_only_kxk_conv_weights():
    """k×k conv weights become channels-last; the large 1×1 head outputs are left in place (copying them would hold
    0.75 GB twice for the official network); the shared w2 is packed; values unchanged."""
    from gantune.core import GeneratorConfig, layer_specs
    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.inference import cpu_layouts

    cfg = GeneratorConfig(resolution=64, z_dim=32, w_dim=32, mapping_layers=2, channel_base=2048, channel_max=32)
    torch.manual_seed(2)
    hn = HyperNetwork.from_specs(layer_specs(cfg), width=8, input_size=64).eval()
    before = {k: (v.data_ptr(), v.clone()) for k, v in hn.state_dict().items()}
    cpu_layouts(hn)
    after = hn.state_dict()
    kxk = [k for k, v in after.items() if v.ndim == 4 and v.shape[-1] > 1]
    one = [k for k, v in after.items() if v.ndim == 4 and v.shape[-1] == 1]
    assert kxk and one
    assert all(after[k].is_contiguous(memory_format=torch.channels_last) for k in kxk)
    assert all(after[k].data_ptr() == before[k][0] for k in one)
    assert after["shared_fc.w2"].stride(0) == 1
    assert all(torch.equal(after[k], before[k][1]) for k in after)


def _rss_file_kib() -> int:
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("RssFile"))


def test_file_mapped_tensors_skip_written_pages_and_release_keeps_values(tmp_path):
    from gantune.accel.memory import file_mapped_tensors, release_tensor_pages

    a, b = torch.randn(1 << 20), torch.randn(1 << 20)  # 4 MiB each
    torch.save({"a": a, "b": b}, tmp_path / "ab.pt")
    sd = torch.load(tmp_path / "ab.pt", mmap=True, weights_only=True)
    m = torch.nn.Module()
    for k, v in sd.items():
        m.register_buffer(k, v)
    m.register_buffer("c", torch.randn(1 << 20))  # anonymous: never a candidate
    assert {id(t) for t in file_mapped_tensors(m)} == {id(sd["a"]), id(sd["b"])}
    sd["b"].mul_(2)  # a private copy of b's pages now holds the only record of this write
    found = file_mapped_tensors(m)
    assert [id(t) for t in found] == [id(sd["a"])]
    float(sd["a"].sum())
    rss = _rss_file_kib()
    assert release_tensor_pages(found) >= (4 << 20) - 2 * 4096
    assert _rss_file_kib() <= rss - 3000
    assert torch.equal(sd["a"], a) and torch.equal(sd["b"], b * 2)


def test_refine_with_released_heads_matches_and_drops_their_pages(tmp_path, monkeypatch):
    """refine from a memory-mapped official-layout checkpoint: the heads' output weights are read in slices whose pages
    are dropped after use, the W-encoder's after its pass; every output is identical to keeping them resident."""
    import gantune.methods.hyper.hypernet as H
    from gantune.bench.memory import write_official_files
    from gantune.methods.hyper.checkpoint import load_hyperstyle, load_w_encoder
    from gantune.methods.hyper.inference import refine

    from gantune.methods.hyper.hypernet import HyperNetwork
    from gantune.methods.hyper.wencoder import WEncoder
    from support import TINY64, tiny_generator

    G = tiny_generator(4, **TINY64)  # 16 channels at 64 px: per-channel heads there
    hn = HyperNetwork.from_specs(G.specs, width=8, input_size=64).eval()
    enc = WEncoder(num_ws=G.num_ws, w_dim=32, units=(1, 1, 1, 1), width=16, input_size=64).eval()
    p_hs, p_enc = write_official_files(tmp_path, models=(G, hn, enc))
    monkeypatch.setattr(H, "RELEASE_SLICE_BYTES", 4096 * 8)  # several slices per head even for tiny ones
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    outs = []
    import gantune.methods.hyper.inference as inference

    real_releaser = inference._page_releaser
    for keep in ("0", "1"):
        monkeypatch.setattr(inference, "_page_releaser", real_releaser if keep == "1" else lambda: None)
        m = load_hyperstyle(p_hs, hash_file=False)
        enc = load_w_encoder(p_enc, num_ws=m.G.num_ws)[0]
        heads = [h.output[-1].weight for h in m.hypernet.heads.values() if isinstance(h, H.ChannelHead)]
        assert heads
        out = refine(x, G=m.G, hypernet=m.hypernet, w_encoder=enc, latent_avg=m.latent_avg, iters=2,
                     own_modules=True)
        outs.append(out)
        if keep == "1":
            rss = _rss_file_kib()
            touched = sum(float(w.detach().sum()) for w in heads)  # reading them back brings their pages in again
            assert _rss_file_kib() > rss and touched == touched
    assert torch.equal(outs[0].images, outs[1].images)
    assert all(torch.equal(outs[0].deltas[k], outs[1].deltas[k]) for k in outs[0].deltas)
