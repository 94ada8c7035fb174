"""The shared FC's column-major w2 (faster on CPU) gives the same hidden codes, survives the official export, and
releasing the pages of a memory-mapped source never changes what any tensor reads."""

from __future__ import annotations

import torch

from gantune.core.cpualloc import release_file_pages
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
