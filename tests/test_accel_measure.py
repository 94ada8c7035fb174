"""Measured per-machine choices (gantune.accel.measure): Winograd tiles and the folded path's upsampling form, each
chosen only where clearly faster, written under GANTUNE_HOME keyed by the machine, read back by settings_for, and
followed over the built-in rule."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from gantune.accel import accelerate, folded, measure, settings_for, winograd
from gantune.accel.machine import Choices, choices_path, load_choices, machine_key
from gantune.errors import InputError
from support import run_cli, tiny_generator

CL = torch.channels_last


def test_winograd_only_where_it_measured_clearly_faster(monkeypatch):
    times = {(512, 32): {0: 1.0, 2: 0.5, 4: 0.6}, (256, 64): {0: 1.0, 2: 0.97, 4: 0.99}, (64, 128): {0: 1.0}}
    monkeypatch.setattr(measure, "time_shape", lambda c, s, reps, grad=None: times[c, s])
    rows = measure.measure(shapes=tuple(times), reps=1, upconv_shapes=(), grad_shapes=(), grad_layouts=False)["winograd"]
    assert [r["tile"] for r in rows] == [2, 0, 0]  # 3 % faster is within the margin: direct


def test_passes_with_gradients_are_measured_apart(monkeypatch):
    """Each mode (input differentiated; weight too) gets its own rows from its own timings, apart from inference."""
    times = {None: {0: 1.0, 2: 0.8, 4: 0.5}, "x": {0: 1.0, 2: 2.0, 4: 1.5}, "w": {0: 1.0, 2: 0.9, 4: 0.7}}
    asked = []
    monkeypatch.setattr(measure, "time_shape", lambda c, s, reps, grad=None: asked.append(grad) or times[grad])
    choices = measure.measure(shapes=((128, 128),), reps=1, upconv_shapes=(), grad_shapes=((128, 128),),
                              grad_layouts=False)
    assert sorted(asked, key=str) == sorted([None, "x", "w"], key=str)
    assert [r["tile"] for r in choices["winograd"]] == [4]
    assert [(r["grad"], r["tile"]) for r in choices["winograd_grad"]] == [("x", 0), ("w", 4)]


def test_a_gradient_mode_runs_channels_last_only_where_it_measured_clearly_faster(monkeypatch):
    times = {"x": {"nchw": 1.0, "channels_last": 0.8}, "w": {"nchw": 1.0, "channels_last": 0.97}}
    monkeypatch.setattr(measure, "time_grad_layouts", lambda mode, tiles, forms, reps: times[mode])
    rows = measure.measure_grad_layouts((), (), reps=1)
    assert [(r["grad"], r["layout"]) for r in rows] == [("x", "channels_last"), ("w", "nchw")]


def test_time_grad_layouts_times_both_layouts_of_a_real_pass():
    t = measure.time_grad_layouts("w", (), (("float32", 16, 8, "transposed"),), resolution=16, reps=1)
    assert set(t) == {"nchw", "channels_last"} and all(0 < v < float("inf") for v in t.values())


def test_time_shape_differentiates_what_its_mode_says():
    """The timed passes really run backward: a tiny shape in each mode takes time and leaves the tensors as asked."""
    for grad in (None, "x", "w"):
        t = measure.time_shape(16, 8, reps=1, grad=grad)
        assert set(t) == {0, 2, 4} and all(v > 0 for v in t.values())


def test_transposed_upsampling_only_where_it_measured_clearly_faster(monkeypatch):
    times = {(512, 16): {"phases": 1.0, "transposed": 0.6}, (128, 256): {"phases": 1.0, "transposed": 0.97},
             (64, 512): {"phases": 0.5, "transposed": 1.0}}
    monkeypatch.setattr(measure, "time_upconv", lambda c, o, s, dtype, reps, grad=False: times[c, s])
    rows = measure.measure_upconv(shapes=((512, 512, 16), (128, 64, 256), (64, 32, 512)), reps=1)
    assert [r["form"] for r in rows if r["dtype"] == "float32"] == ["transposed", "phases", "phases"]


def test_upsampling_with_gradients_is_measured_apart_in_float32(monkeypatch):
    asked = []
    t = {False: {"phases": 1.0, "transposed": 1.2}, True: {"phases": 1.0, "transposed": 0.6}}
    monkeypatch.setattr(measure, "time_upconv",
                        lambda c, o, s, dtype, reps, grad=False: asked.append((dtype, grad)) or t[grad])
    rows = measure.measure_upconv(shapes=((128, 64, 256),), reps=1, grad=True)
    assert [(r["dtype"], r["form"]) for r in rows] == [("float32", "transposed")]
    assert asked == [(torch.float32, True)]
    assert set(measure.time_upconv(16, 8, 8, torch.float32, reps=1, grad=True)) == {"phases", "transposed"}


def test_choices_round_trip_through_gantune_home_and_settings_for():
    table = ((256, 32, 0), (64, 64, 2))
    forms = (("float32", 64, 512, "transposed"), ("bfloat16", 512, 16, "phases"))
    grad = (("x", 128, 128, 0), ("w", 512, 64, 4))
    choices = {"machine": machine_key(), "winograd": [{"in_ch": c, "side": s, "tile": m} for c, s, m in table],
               "upconv": [{"dtype": d, "in_ch": c, "side": s, "form": f} for d, c, s, f in forms],
               "winograd_grad": [{"grad": g, "in_ch": c, "side": s, "tile": m} for g, c, s, m in grad],
               "grad_layout": [{"grad": "x", "layout": "channels_last"}, {"grad": "w", "layout": "nchw"}],
               "upconv_grad": [{"dtype": "float32", "in_ch": 128, "side": 256, "form": "transposed"}]}
    path = measure.save(choices)
    assert path == choices_path() and path.is_file()
    settings_for.cache_clear()
    try:
        cpu = settings_for("cpu")
        assert cpu.winograd_tiles == table and cpu.upconv_forms == forms and cpu.winograd_grad_tiles == grad
        assert cpu.grad_channels_last == ("x",) and cpu.upconv_grad_forms == (("float32", 128, 256, "transposed"),)
    finally:
        settings_for.cache_clear()
    path.write_text(json.dumps(dict(choices, winograd_grad=[{"grad": "both", "in_ch": 1, "side": 2, "tile": 4}])))
    up_grad = (("float32", 128, 256, "transposed"),)
    assert load_choices() == Choices(table, forms, (), ("x",), up_grad)  # an unknown mode is not followed
    path.write_text(json.dumps(dict(choices, winograd_grad=[{"grad": "x", "in_ch": "many"}], grad_layout=[{}],
                                    upconv_grad=[{"form": "phases"}])))
    assert load_choices() == Choices(table, forms)  # nor a row that does not parse
    other = dict(choices, machine="cpu-another")
    path.write_text(json.dumps(other))
    assert load_choices() == Choices()  # another machine's table is not followed
    path.write_text("{not json")
    assert load_choices() == Choices()


def test_the_measured_table_overrides_the_rule():
    cpu = replace(settings_for("cpu"), winograd_tiles=())
    x32 = torch.zeros(1, 256, 32, 32).contiguous(memory_format=CL)
    x64 = torch.zeros(1, 64, 64, 64).contiguous(memory_format=CL)
    assert winograd.tile_size(x32, 256, 3, cpu) == 4 and winograd.tile_size(x64, 64, 3, cpu) == 0  # the rule
    table = replace(cpu, winograd_tiles=((256, 32, 0), (64, 64, 2)))
    assert winograd.tile_size(x32, 256, 3, table) == 0 and winograd.tile_size(x64, 64, 3, table) == 2
    assert winograd.tile_size(x32, 256, 3, replace(table, winograd=False)) == 0  # off stays off
    assert winograd.tile_size(x32.double(), 256, 3, table) == 0  # float32 CPU only


def test_passes_with_gradients_follow_their_own_table():
    """A pass with gradients follows the rows measured in its mode, else the rule, never the inference table; an
    inference pass never follows the gradient rows."""
    x = torch.zeros(1, 256, 32, 32)
    cpu = replace(settings_for("cpu"), winograd_tiles=((256, 32, 2),),
                  winograd_grad_tiles=(("x", 256, 32, 0), ("w", 256, 32, 2)))
    assert winograd.tile_size(x, 256, 3, cpu) == 2  # inference: its own table
    assert winograd.tile_size(x, 256, 3, cpu, grad="x") == 0 and winograd.tile_size(x, 256, 3, cpu, grad="w") == 2
    only_inference = replace(cpu, winograd_grad_tiles=())
    assert winograd.tile_size(x, 256, 3, only_inference, grad="x") == 4  # the rule, not the inference row's 2
    assert winograd.tile_size(x, 256, 3, replace(cpu, winograd_tiles=()), grad=None) == 4


def test_grad_mode_names_what_a_pass_differentiates():
    x, w = torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 3, 3)
    styles = torch.ones(1, 4, requires_grad=True)
    assert winograd.grad_mode(x, w, None) is None
    assert winograd.grad_mode(x.requires_grad_(True), w) == "x"
    assert winograd.grad_mode(x, w, styles) == "w"
    with torch.no_grad():
        assert winograd.grad_mode(x, w, styles) is None


def test_the_measured_upsampling_form_is_followed_and_both_forms_agree(monkeypatch):
    """Every upsampling layer of a 64 px, 32-channel generator by phases (the rule on its large maps) and by the
    transposed convolution (a table that says so): both within float rounding of the reference core."""
    config = dict(resolution=64, channel_base=2048)
    reference = tiny_generator(0, perturb=True, **config)
    G = tiny_generator(0, perturb=True, **config)
    cpu = replace(settings_for("cpu"), winograd_tiles=(), upconv_forms=())
    ups = [s for s in G.specs if s.kind == "conv" and s.up == 2]
    transposed = tuple(("float32", s.in_ch, s.res // 2, "transposed") for s in ups)
    calls, real = [], folded.transposed_conv_phases
    monkeypatch.setattr(folded, "transposed_conv_phases", lambda *a: calls.append(a[0].shape) or real(*a))
    g = torch.Generator().manual_seed(3)
    ws = G.map(torch.randn(2, G.cfg.z_dim, generator=g))
    deltas = {s.name: 0.2 * torch.randn(2, s.out_ch, s.in_ch, generator=g) for s in G.specs if s.kind == "conv"}
    with torch.no_grad():
        ref = reference.synthesis(ws, deltas=deltas)
        by_rule = accelerate(G, cpu).synthesis(ws, deltas=deltas)
        n_rule = len(calls)
        by_table = accelerate(G, replace(cpu, upconv_forms=transposed)).synthesis(ws, deltas=deltas)
    assert n_rule > 0 and len(calls) == n_rule  # the rule took phases somewhere; the table took none
    for got in (by_rule, by_table):
        assert (got - ref).abs().max() <= 2e-5 * ref.abs().max()


def test_one_setting_overrides_the_measured_choices(monkeypatch, tmp_path):
    """GANTUNE_CHOICES=rule ignores this machine's file; a named file is followed whichever machine wrote it; a
    named file that cannot be read is a one-line error that says what to set."""
    mine = {"machine": machine_key(), "winograd": [{"in_ch": 256, "side": 32, "tile": 0}],
            "upconv": [{"dtype": "float32", "in_ch": 64, "side": 512, "form": "transposed"}]}
    measure.save(mine)
    assert load_choices().tiles == ((256, 32, 0),)
    monkeypatch.setenv("GANTUNE_CHOICES", "rule")
    assert load_choices() == Choices()
    other = tmp_path / "pinned.json"
    other.write_text(json.dumps({"machine": "cpu-another", "winograd": [{"in_ch": 512, "side": 16, "tile": 4}],
                                 "upconv": [{"dtype": "bfloat16", "in_ch": 128, "side": 256, "form": "phases"}]}))
    monkeypatch.setenv("GANTUNE_CHOICES", str(other))
    assert load_choices() == Choices(((512, 16, 4),), (("bfloat16", 128, 256, "phases"),))
    for bad in (tmp_path / "missing.json", tmp_path / "broken.json"):
        if bad.name == "broken.json":
            bad.write_text("{not json")
        monkeypatch.setenv("GANTUNE_CHOICES", str(bad))
        with pytest.raises(InputError, match="GANTUNE_CHOICES=") as err:
            load_choices()
        assert "unset it" in err.value.one_line() and "\n" not in err.value.one_line()


def test_the_command_refuses_an_unreadable_choices_setting_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GANTUNE_CHOICES", str(tmp_path / "missing.json"))
    code, lines = run_cli(["generate", "--weights", "demo-faces", "--seeds", "0", "-o", tmp_path / "out"], capsys)
    assert code == 2 and len(lines) == 1 and "GANTUNE_CHOICES=" in lines[0] and "unset it" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["x", "w"])
def test_a_pass_with_gradients_takes_winograd_as_its_rows_say(monkeypatch, mode):
    """The projectors' pass (a frozen generator differentiated through W+: mode "x") and PTI's (the weights train:
    mode "w") run Winograd exactly where the rows of their mode say so, whatever the inference table says, and get
    the direct pass's gradients to float rounding either way."""
    G = tiny_generator(0, perturb=True, resolution=64, channel_base=2048)
    G.requires_grad_(mode == "w")
    sides = sorted({s.res for s in G.specs if s.kind == "conv" and s.up == 1 and s.kernel == 3})
    ch = G.specs[0].in_ch
    last = [s.name for s in G.specs if s.kind == "conv" and s.up == 1][-1]
    cpu = replace(settings_for("cpu"), winograd_tiles=tuple((ch, s, 2) for s in sides), upconv_forms=(),
                  images_per_pass=0)
    calls, real = [], winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    ws = G.map(torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(1))).detach()

    def gradient(settings):
        calls.clear()
        G.zero_grad()
        w = ws.clone().requires_grad_(True)
        accelerate(G, settings).synthesis(w).square().mean().backward()
        return (G.synthesis.layer(last).weight.grad if mode == "w" else w.grad).clone(), len(calls)

    direct, n_direct = gradient(replace(cpu, winograd=False))
    by_rows_direct, n_rows_direct = gradient(replace(cpu, winograd_grad_tiles=tuple((mode, ch, s, 0) for s in sides)))
    by_rows_wino, n_rows_wino = gradient(replace(cpu, winograd_grad_tiles=tuple((mode, ch, s, 2) for s in sides)))
    other_mode = "w" if mode == "x" else "x"
    _, n_other = gradient(replace(cpu, winograd_grad_tiles=tuple((other_mode, ch, s, 2) for s in sides)))
    assert n_direct == 0 and n_rows_direct == 0 and n_other == 0  # the inference rows are not followed
    assert n_rows_wino > 0
    assert torch.equal(by_rows_direct, direct)
    assert (by_rows_wino - direct).abs().max() <= 1e-4 * direct.abs().max() and direct.abs().max() > 0


@pytest.mark.parametrize("mode", ["x", "w"])
def test_a_pass_with_gradients_takes_the_layout_measured_for_its_mode(monkeypatch, mode):
    """The projectors' pass ("x") and PTI's ("w") run channels-last maps exactly where the measured modes say, NCHW
    otherwise, and get NCHW's gradients to float rounding; passes without gradients keep the inference layout."""
    G = tiny_generator(0, perturb=True, resolution=32)
    G.requires_grad_(mode == "w")
    cpu = replace(settings_for("cpu"), winograd_tiles=(), upconv_forms=(), images_per_pass=0)
    seen, layer = [], G.synthesis.layer(G.specs[-2].name)
    layer.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=CL)
                                                              and not a[0].is_contiguous()))
    ws = G.map(torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(1))).detach()

    def gradient(settings):
        seen.clear()
        G.zero_grad()
        w = ws.clone().requires_grad_(mode == "x")
        accelerate(G, settings).synthesis(w).square().mean().backward()
        return (G.synthesis.layer(G.specs[-2].name).weight.grad if mode == "w" else w.grad).clone(), seen[-1]

    nchw, nchw_layout = gradient(replace(cpu, grad_channels_last=()))
    other, other_layout = gradient(replace(cpu, grad_channels_last=("w" if mode == "x" else "x",)))
    cl, cl_layout = gradient(replace(cpu, grad_channels_last=(mode,)))
    assert (nchw_layout, other_layout, cl_layout) == (False, False, True)
    assert torch.equal(other, nchw) and (cl - nchw).abs().max() <= 1e-5 * nchw.abs().max()
    with torch.no_grad():
        accelerate(G, replace(cpu, grad_channels_last=())).synthesis(ws)
    assert seen[-1]  # inference: channels-last, as the CPU settings say


def test_a_pass_with_gradients_takes_the_upsampling_form_of_its_rows(monkeypatch):
    """PTI's folded pass with gradients follows the upsampling rows measured with gradients, not the inference rows,
    and the rule where it has none; both forms give the same gradients to float rounding."""
    G = tiny_generator(0, perturb=True, resolution=64, channel_base=2048).requires_grad_(True)
    ups = [s for s in G.specs if s.kind == "conv" and s.up == 2]
    form = lambda f: tuple(("float32", s.in_ch, s.res // 2, f) for s in ups)  # noqa: E731
    cpu = replace(settings_for("cpu"), winograd_tiles=(), upconv_forms=form("phases"), images_per_pass=0)
    calls, real = [], folded.transposed_conv_phases
    monkeypatch.setattr(folded, "transposed_conv_phases", lambda *a: calls.append(1) or real(*a))
    ws = G.map(torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(2))).detach()
    name = ups[-1].name

    def gradient(settings):
        calls.clear()
        G.zero_grad()
        accelerate(G, settings).synthesis(ws).square().mean().backward()
        return G.synthesis.layer(name).weight.grad.clone(), len(calls)

    by_grad_rows, n_transposed = gradient(replace(cpu, upconv_grad_forms=form("transposed")))
    by_rule, n_rule = gradient(replace(cpu, upconv_grad_forms=()))
    by_phase_rows, n_phases = gradient(replace(cpu, upconv_forms=form("transposed"),
                                               upconv_grad_forms=form("phases")))
    assert n_transposed == 0 and n_rule > 0 and n_phases == len(ups)
    for g in (by_rule, by_phase_rows):
        assert (g - by_grad_rows).abs().max() <= 1e-5 * by_grad_rows.abs().max()
