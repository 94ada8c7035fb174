"""Option names of the encoder trainers (``train w-encoder``, ``train hypernet``): ``--identity-loss auto|dlib|off``
and ``--resume auto|none|FILE`` (as ``train generator``), and their old spellings, which work for one release with a
one-line note naming the new one: ``--identity VALUE``, ``--resume`` without a value and ``--no-resume``. The trainers
are replaced by stubs that record what the command gives them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import gantune.train.encoders as encoders
from gantune.cli.app import app
from gantune.errors import InputError

runner = CliRunner()
SMALL = ["-g", "demo-faces", "--width", "16", "--input-size", "64", "--device", "cpu"]


class _Result:
    step, model_path, state_path = 0, "model.pt", "train_state.pt"


@pytest.fixture
def trained(monkeypatch):
    """What the last command passed to the trainer: its options and resume."""
    seen = {}

    def stub(*args, opts, resume, **kw):
        seen.update(identity=opts.identity, steps=opts.steps, resume=resume)
        return _Result()

    monkeypatch.setattr(encoders, "train_w_encoder", stub)
    monkeypatch.setattr(encoders, "train_hypernet", stub)
    return seen


def _run(command: str, out: Path, *extra: str):
    args = ["train", command, *SMALL, "-o", str(out), *extra]
    if command == "w-encoder":
        args += ["--depth", "1,1,1,1"]
    else:
        args += ["-e", "demo-faces-w-encoder"]
    res = runner.invoke(app, args)
    notes = [ln for ln in res.output.splitlines() if ln.startswith("note: --")]
    return res, notes


@pytest.mark.parametrize("command", ["w-encoder", "hypernet"])
def test_identity_loss_and_its_old_name(command, trained, tmp_path):
    res, notes = _run(command, tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert trained["identity"] == "auto" and notes == []  # the default is unchanged
    res, notes = _run(command, tmp_path / "a", "--identity-loss", "off")
    assert res.exit_code == 0 and trained["identity"] == "off" and notes == []
    res, notes = _run(command, tmp_path / "a", "--identity", "dlib")
    assert res.exit_code == 0 and trained["identity"] == "dlib"
    assert notes == ["note: --identity is now --identity-loss (--identity-loss dlib); the old name goes in the next "
                     "release"]
    assert "--identity " not in runner.invoke(app, ["train", command, "--help"]).output  # hidden
    res, _ = _run(command, tmp_path / "a", "--identity", "off", "--identity-loss", "dlib")
    assert isinstance(res.exception, InputError) and "give --identity-loss only" in res.exception.one_line()


@pytest.mark.parametrize("command", ["w-encoder", "hypernet"])
def test_resume_takes_auto_none_or_a_file(command, trained, tmp_path):
    out = tmp_path / "run"
    state = out / encoders.STATE_FILE
    res, notes = _run(command, out)
    assert res.exit_code == 0 and trained["resume"] is False and notes == []  # default: a fresh run, as before
    res, _ = _run(command, out, "--resume", "auto")
    assert res.exit_code == 0 and trained["resume"] is False  # nothing to resume yet
    # a state file elsewhere: copied into the run folder, which the trainer continues from
    other = tmp_path / "elsewhere.pt"
    other.write_bytes(b"a state")
    res, notes = _run(command, out, "--resume", str(other))
    assert res.exit_code == 0, res.output
    assert trained["resume"] is True and state.read_bytes() == b"a state" and notes == []
    res, _ = _run(command, out, "--resume", "auto")
    assert res.exit_code == 0 and trained["resume"] is True
    res, _ = _run(command, out, "--resume", "none")
    assert res.exit_code == 0 and trained["resume"] is False
    res, _ = _run(command, out, "--resume", str(state))  # the folder's own state, named
    assert res.exit_code == 0 and trained["resume"] is True
    res, _ = _run(command, out, "--resume", str(other))  # the same state again (a rerun)
    assert res.exit_code == 0 and trained["resume"] is True
    # the folder's own state is never replaced by another; a missing file is refused
    other.write_bytes(b"another state")
    res, _ = _run(command, out, "--resume", str(other))
    assert isinstance(res.exception, InputError) and "give --resume auto to continue it" in res.exception.one_line()
    assert state.read_bytes() == b"a state"
    res, _ = _run(command, out, f"--resume={tmp_path / 'missing.pt'}")
    assert isinstance(res.exception, InputError)
    assert res.exception.one_line() == (f"--resume {tmp_path / 'missing.pt'}: no such training state (use --resume "
                                        "auto, none or a train_state.pt file)")


@pytest.mark.parametrize("command", ["w-encoder", "hypernet"])
def test_the_old_resume_flag_still_works_with_a_note(command, trained, tmp_path):
    out = tmp_path / "run"
    state = out / encoders.STATE_FILE
    # --resume alone meant "continue from OUT/train_state.pt": at the end, or before another option
    for extra in (["--resume"], ["--resume", "--steps", "3"]):
        res, notes = _run(command, out, *extra)
        assert res.exit_code == 0, res.output
        assert trained["resume"] is True
        assert notes == [f"note: --resume without a value is the old spelling of --resume {state}; it goes in the "
                         "next release"]
    assert trained["steps"] == 3
    res, notes = _run(command, out, "--no-resume")
    assert res.exit_code == 0 and trained["resume"] is False
    assert notes == ["note: --no-resume is the old spelling of --resume none; it goes in the next release"]
    assert "--no-resume" not in runner.invoke(app, ["train", command, "--help"]).output  # hidden
    res, _ = _run(command, out, "--resume", "--resume", "auto")
    assert isinstance(res.exception, InputError) and "give --resume once" in res.exception.one_line()


def test_a_real_run_continues_from_a_state_file_and_with_the_old_flag(tmp_path):
    """Not stubbed: a W-encoder trained 1 step in A continues in B from A's state (--resume FILE), then in B with the
    old flag (--resume alone), each from the step the state holds."""
    base = ["train", "w-encoder", *SMALL, "--depth", "1,1,1,1", "-b", "1", "--identity-loss", "off"]
    a, b = tmp_path / "a", tmp_path / "b"
    res = runner.invoke(app, [*base, "--steps", "1", "-o", str(a)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--steps", "2", "-o", str(b), "--resume", str(a / encoders.STATE_FILE)])
    assert res.exit_code == 0, res.output
    assert "resumed at step 1" in res.output and "2 steps; W-encoder" in res.output
    res = runner.invoke(app, [*base, "--steps", "3", "-o", str(b), "--resume"])
    assert res.exit_code == 0, res.output
    assert "resumed at step 2" in res.output and "3 steps; W-encoder" in res.output
