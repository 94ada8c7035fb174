"""Non-finite numbers are refused where they enter (options, directions) and where they leave (8-bit images)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from gantune.cli.validate import finite, finite_float
from gantune.editing import load_direction, parse_strengths
from gantune.errors import GantuneError, InputError, RenderError
from gantune.io.images import ImageError, load_image, save_image, tensor_to_pil, tensor_to_uint8


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "", "  ", "nan,1", "1,inf", "-3:nan:5", "1e400:0:3",
                                  "-1e308:1e308:3", "1,,2", ","])
def test_parse_strengths_refuses_non_finite_and_empty(text):
    with pytest.raises(InputError) as e:
        parse_strengths(text)
    line = e.value.one_line()
    assert "\n" not in line and "--strength" in line and "-3:3:7" in line  # says what to give


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parse_strengths_refuses_non_finite_numbers(value):
    with pytest.raises(InputError, match="not a finite number"):
        parse_strengths(value)


def test_parse_strengths_still_parses_finite_values():
    assert parse_strengths("-3:3:7") == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert parse_strengths(" 1e300 ") == [1e300] and parse_strengths("-1, 0.5") == [-1.0, 0.5]
    assert parse_strengths("2:2:1") == [2.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_load_direction_refuses_non_finite_values_naming_the_file(tmp_path, bad, suffix):
    v = torch.randn(1, 8)
    v[0, 3] = bad
    p = tmp_path / f"smile{suffix}"
    torch.save(v, p) if suffix == ".pt" else np.save(p, v.numpy())
    with pytest.raises(InputError) as e:
        load_direction(p)
    line = e.value.one_line()
    assert str(p) in line and "NaN or infinite" in line and "\n" not in line


def test_load_direction_refuses_a_ganspace_component_that_overflows(tmp_path):
    gs = {"mean": torch.zeros(1, 4), "std": torch.tensor([3e38, 1.0]), "comp": torch.tensor([[[10.0, 0, 0, 0]],
                                                                                           [[0, 1.0, 0, 0]]])}
    p = tmp_path / "gs.pt"
    torch.save(gs, p)
    assert torch.equal(load_direction(f"{p}:1").vector, torch.tensor([0, 1.0, 0, 0]))
    with pytest.raises(InputError, match="NaN or infinite"):
        load_direction(f"{p}:0")  # 3e38 * 10 overflows float32


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_render_cannot_become_an_image(tmp_path, bad):
    x = torch.zeros(2, 3, 8, 8)
    assert tensor_to_uint8(x).shape == (2, 8, 8, 3)
    x[1, 0, 2, 2] = bad
    with pytest.raises(RenderError) as e:
        tensor_to_uint8(x)
    assert "NaN or inf" in e.value.one_line() and isinstance(e.value, GantuneError)
    with pytest.raises(RenderError):
        tensor_to_pil(x)
    with pytest.raises(RenderError):
        save_image(x[1], tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_finite_float_and_typer_callback():
    assert finite_float("0.7", "--truncation") == 0.7 and finite_float(2, "--x") == 2.0
    for bad in ("nan", "inf", "1e400", "", "abc", float("nan"), True):
        with pytest.raises(InputError) as e:
            finite_float(bad, "--truncation")
        assert e.value.one_line().startswith("--truncation") and "finite number" in e.value.one_line()

    app = typer.Typer()

    @app.command()
    def cmd(truncation: Annotated[float, typer.Option("--truncation", callback=finite("--truncation"))] = 0.7,
            other: Annotated[float | None, typer.Option("--other", callback=finite("--other"))] = None) -> None:
        print(f"ok {truncation} {other}")

    r = CliRunner().invoke(app, ["--truncation", "0.5"])
    assert r.exit_code == 0 and "ok 0.5 None" in r.output
    for bad in ("nan", "inf", "1e400"):
        r = CliRunner().invoke(app, ["--truncation", bad])
        assert isinstance(r.exception, InputError), r.output
        assert r.exception.one_line().startswith(f"--truncation {float(bad)!r}")


def test_image_error_is_a_project_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(GantuneError) as e:
        load_image(tmp_path / "x.png")
    assert isinstance(e.value, ImageError) and not isinstance(e.value, ValueError)
    assert e.value.one_line() == str(e.value) and e.value.one_line().startswith(f"{tmp_path / 'x.png'}: not a readable")
