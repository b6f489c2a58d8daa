"""NaN and infinity in a float option are one-line errors naming the option, for every float
option of every command (checked in one place, :func:`defectforge._cliconfig.check_finite`),
before the command does anything: ``--threshold nan`` used to flag no image, ``--lr nan`` to
train a model whose weights were all NaN."""

from __future__ import annotations

import typer.main
import pytest
from badinput_kit import invoke, one_line_error

from defectforge.cli import app


def _float_options():
    """``(command words, option, required parameters)`` for every float option of every command."""
    out = []

    def walk(cmd, words):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, (*words, name))
            return
        required = [p for p in cmd.params if p.required]
        for p in cmd.params:
            if "float" in str(p.type_descriptor.annotation):
                out.append((words, next(o for o in p.opts if o.startswith("--")), required))

    walk(typer.main.get_command(app), ())
    return out


FLOAT_OPTIONS = _float_options()


def test_the_walk_finds_the_float_options():
    found = {(" ".join(w), o) for w, o, _ in FLOAT_OPTIONS}
    assert {("detect predict", "--threshold"), ("detect predict", "--pixel-threshold"),
            ("train-detector", "--lr"), ("experiment", "--lr"), ("experiment", "--ratio"),
            ("recipe search", "--min-gain"), ("filter select", "--min-diversity")} <= found
    assert len(found) >= 20


def _args(tmp_path, required):
    """Placeholder values for the required parameters (the check runs before any is used)."""
    f = tmp_path / "in.txt"
    f.write_text("x")
    args = []
    for p in required:
        value = str(tmp_path / "out") if "out" in p.name else str(f)
        if p.param_type_name == "option":
            args += [p.opts[0], value]
        else:
            args.append(value)
    return args


@pytest.mark.parametrize("words,option,required", FLOAT_OPTIONS,
                         ids=[f"{' '.join(w)} {o}" for w, o, _ in FLOAT_OPTIONS])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite(tmp_path, words, option, required, value):
    res = invoke(*words, *_args(tmp_path, required), option, value)
    one_line_error(res, option, "must be a finite number")
    assert not (tmp_path / "out").exists()


def test_non_finite_value_from_a_config_file_names_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: .nan\n")
    res = invoke("train-detector", tmp_path, "-o", tmp_path / "out", "--config", cfg)
    one_line_error(res, "c.yaml", "--lr must be a finite number")


def test_finite_values_still_pass_the_check(tmp_path):
    from defectforge.errors import ConfigError
    from defectforge.filter.select import SelectionPolicy
    from defectforge.report.panels import run_thresholds
    from defectforge.supervised.train import TrainConfig

    SelectionPolicy(min_diversity=0.5)
    TrainConfig(lr=0.01).check_values()
    for bad in (lambda: SelectionPolicy(min_diversity=float("nan")),
                lambda: TrainConfig(lr=float("nan")).check_values(),
                lambda: run_thresholds(None, float("nan"))):
        with pytest.raises(ConfigError, match="nan"):
            bad()


def test_diffusion_kind_is_checked(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionXLInpaintPipeline"}')
    res = invoke("diffusion", "check", tmp_path, "--kind", "bogus")
    one_line_error(res, "--kind must be one of auto, sdxl, sd", "'bogus'")
