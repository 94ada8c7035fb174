"""One meaning per option name across every command of ``gantune`` (issue #28): a long name that two commands
declare has the same type and the same help there, a short flag stands for the same long option, or the name is in
:data:`SAME_MEANING` (the same meaning in other words; then only the type has to agree). Hidden options, the old
spellings kept for one release, do not count.

The renamed options work under their old spellings for one release with a one-line note; the tests below give each
old spelling and check the note and that its value reaches the command (the work itself replaced by a stub)."""

from __future__ import annotations

import re
import typing
from collections import defaultdict
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gantune.cli.app import app

runner = CliRunner()

# names shared with one meaning in different words: why they mean the same
SAME_MEANING = {
    "--out": "where the output goes: a folder, a file or a report, as the command writes",
    "--weights": "the generator checkpoint (eval detection takes several)",
    "--batch-size": "images per batch (a trainer's batch is its step)",
    "-n": "how many: --samples, --count, --images or --frames, as the command counts",
    "--count": "how many held-out samples or images",
    "--samples": "how many generator samples",
    "--seed": "the random seed (or the first of consecutive sample seeds)",
    "--steps": "optimizer steps",
    "--lr": "the optimizer's learning rate",
    "--iters": "HyperStyle refinement passes",
    "--truncation": "truncation psi toward the mean w",
    "--threads": "CPU threads for torch",
    "--resume": "auto, none or a training state file",
    "--data": "the training or evaluation images: synthetic-faces or a folder",
    "--encoder": "the W-encoder file",
    "--clip": "the CLIP model",
    "--onto": "the original photo that aligned faces are pasted onto",
    "--layers": "the generator layers the HyperStyle offsets cover",
    "--strength": "edit strengths: one, a list or START:STOP:COUNT",
    "--w-avg-samples": "z samples for the mean w",
}


def _commands(cmd, path=()):
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def _kind(param) -> str:
    """The option's value type (a repeatable option's element type) and whether it is an on/off flag."""
    t = param.type_descriptor.annotation
    while typing.get_origin(t) in (typing.Union, list) or type(t).__name__ == "UnionType":
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return f"{getattr(t, '__name__', t)}{' flag' if param.is_flag else ''}"


def option_uses() -> dict[str, list[tuple[str, str, str]]]:
    """Every visible option name: (command, type, meaning) for each command that declares it; the meaning of a long
    name is its help, of a short flag the long names it stands for."""
    uses = defaultdict(list)
    for path, cmd in _commands(typer.main.get_command(app)):
        for p in cmd.params:
            if p.param_type_name != "option" or p.hidden:
                continue
            names = p.opts + p.secondary_opts
            longs = " ".join(n for n in names if n.startswith("--"))
            for name in names:
                meaning = " ".join((p.help or "").split()) if name.startswith("--") else longs
                uses[name].append((path, _kind(p), meaning))
    return uses


def test_one_meaning_per_option_name():
    clashes = []
    for name, uses in sorted(option_uses().items()):
        kinds = {k for _, k, _ in uses}
        helps = {h for _, _, h in uses}
        if len(kinds) > 1 or (len(helps) > 1 and name not in SAME_MEANING):
            clashes.append(f"{name}: " + "; ".join(f"{c} ({k}) {h[:60]!r}" for c, k, h in uses))
    assert not clashes, "option names with more than one meaning:\n" + "\n".join(clashes)


def test_the_same_meaning_list_names_shared_options_only():
    uses = option_uses()
    assert sorted(n for n in SAME_MEANING if len(uses.get(n, ())) < 2) == []


# --- the old spellings ---------------------------------------------------------------------------------------------

class _Reached(Exception):
    """The stub's call: the command got this far, with these arguments."""


def _stub(monkeypatch, target: str):
    def stop(*args, **kw):
        raise _Reached(args, kw)

    monkeypatch.setattr(target, stop)


def _invoke(argv):
    res = runner.invoke(app, [str(a) for a in argv])
    assert isinstance(res.exception, _Reached), res.output
    notes = [ln for ln in res.output.splitlines() if ln.startswith("note: -")]
    return res.exception.args, notes


def _note(old: str, new: str, value: str = "") -> list[str]:
    return [f"note: {old} is now {new}{f' ({new} {value})' if value else ''}; the old name goes in the next release"]


def test_train_generator_old_spellings(monkeypatch, tmp_path):
    _stub(monkeypatch, "gantune.cli.train_cmd._train_generator")
    base = ["train", "generator", "--data", "synthetic-faces", "-o", tmp_path / "g"]
    (settings, _, _, seconds), _ = _invoke(base)[0]
    assert (settings.noise, settings.keep, seconds) == (None, 2, 30.0)
    (settings, _, _, seconds), _ = _invoke([*base, "--no-noise-inputs", "--keep-last", "3", "--log-seconds", "5"])[0]
    assert (settings.noise, settings.keep, seconds) == (False, 3, 5.0)
    for old, new, value, got in (("--noise", "--noise-inputs", "", lambda a: a[0].noise is True),
                                 ("--no-noise", "--no-noise-inputs", "", lambda a: a[0].noise is False),
                                 ("--keep", "--keep-last", "4", lambda a: a[0].keep == 4),
                                 ("--log-every", "--log-seconds", "7.5", lambda a: a[3] == 7.5)):
        (args, _), notes = _invoke([*base, old, *([value] if value else [])])
        assert got(args) and notes == _note(old, new, value)
    res = runner.invoke(app, [*map(str, base), "--keep", "4", "--keep-last", "3"])
    assert "give --keep-last only" in res.exception.one_line()
    assert not re.search(r"--(no-)?noise(?![\w-])|--keep(?![\w-])|--log-every",
                         runner.invoke(app, ["train", "generator", "--help"]).output)


@pytest.mark.parametrize("command", ["w-encoder", "hypernet"])
def test_encoder_trainers_log_every_is_log_steps(command, monkeypatch, tmp_path):
    _stub(monkeypatch, "gantune.cli.train_enc_cmd._setup")
    base = ["train", command, "-g", "demo-faces", "-e", "enc.pt", "-o", tmp_path / "e"]
    if command == "w-encoder":
        base = [a for a in base if a not in ("-e", "enc.pt")]
    (args, _), notes = _invoke([*base, "--log-steps", "3"])
    assert args[3].log_steps == 3 and notes == []
    (args, _), notes = _invoke([*base, "--log-every", "4"])
    assert args[3].log_steps == 4 and notes == _note("--log-every", "--log-steps", "4")


def test_interpolate_steps_is_frames(monkeypatch):
    monkeypatch.setattr("gantune.io.inputs.expand_inputs", lambda *a, **kw: [Path("a.safetensors"), Path("b.safetensors")])
    monkeypatch.setattr("gantune.editing.interpolate.load_compatible", lambda paths, stems: [None, None])
    monkeypatch.setattr("gantune.io.hashing.sha256_file", lambda path: "0" * 64)
    _stub(monkeypatch, "gantune.io.runner.Batch")
    argv = ["interpolate", "a.safetensors", "b.safetensors"]
    (_, kw), notes = _invoke([*argv, "--frames", "5"])
    assert kw["params"]["steps"] == 5 and notes == []  # the manifest's key of before: earlier runs resume
    (_, kw), notes = _invoke([*argv, "--steps", "6"])
    assert kw["params"]["steps"] == 6 and notes == _note("--steps", "--frames", "6")
    assert "--steps" not in runner.invoke(app, ["interpolate", "--help"]).output


def _command(*path):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _adapt_batch(monkeypatch):
    monkeypatch.setattr("gantune.cli.adapt_cmd.input_items", lambda *a, **kw: [])
    return "gantune.io.runner.Batch"


@pytest.mark.parametrize("argv, target, got, note", [
    (["align", "x.png", "-s", "256"], "gantune.align.FaceAligner", lambda a, kw: kw["size"] == 256, ("-s", "--size", "256")),
    (["align", "x.png", "-s512"], "gantune.align.FaceAligner", lambda a, kw: kw["size"] == 512, ("-s", "--size", "512")),
    (["edit", "r.safetensors", "-t", "a smiling face"], "gantune.cli.edit_cmd._check_edit_kind",
     lambda a, kw: a[1] == "a smiling face", ("-t", "--text", "a smiling face")),
    (["adapt", "r.safetensors", "-t", "toonify"], _adapt_batch, lambda a, kw: kw["params"]["target"] == "toonify",
     ("-t", "--target", "toonify")),
    (["directions", "ganspace", "-w", "demo-faces", "-o", "g.pt", "-k", "4"], "gantune.editing.ganspace.compute_ganspace",
     lambda a, kw: kw["components"] == 4, ("-k", "--components", "4")),
])
def test_dropped_short_flags_still_work_with_a_note(argv, target, got, note, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _stub(monkeypatch, target if isinstance(target, str) else target(monkeypatch))
    (args, kw), notes = _invoke(argv)
    assert notes == _note(*note) and got(args, kw)
    res = runner.invoke(app, [*argv, note[1], note[2]])  # both spellings
    assert f"give {note[1]} only" in res.exception.one_line()
    command = _command(*argv[:2 if argv[0] == "directions" else 1])
    assert note[0] not in {o for p in command.params for o in p.opts}  # gone from the command and its help
