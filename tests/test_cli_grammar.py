"""One CLI grammar over every registered command: ``--config``/``--print-config`` on every
job command (YAML keys = option names, the command line wins, unknown keys refused), one
meaning and one value type per option name (the table in ``_cligrammar`` and docs/cli.md),
renamed spellings that still work with a warning, and a Ctrl-C line that names the command
that resumes."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from defectforge._cliconfig import NOT_JOBS
from defectforge._cligrammar import (OPTIONS, OTHER_FORMS, RENAMED, SHORT, declared_options, interrupted_line,
                                     rewrite_renamed)
from defectforge._cliutil import parse_image_size
from defectforge.cli import app
from defectforge.errors import ConfigError

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands():
    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield " ".join(path), cmd

    return dict(walk(typer.main.get_command(app), ()))


def _mvtec(root: Path) -> Path:
    from test_cli_consistency import _mvtec_with_bare_manifest

    _mvtec_with_bare_manifest(root)
    (root / "manifest.csv").unlink()
    return root


def _one_line_error(r, *needles):
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# --- --config / --print-config on every job command ------------------------------------------

def test_every_job_command_has_config_and_print_config():
    commands = _commands()
    assert set(NOT_JOBS) <= set(commands), "NOT_JOBS names a command that does not exist"
    jobs = [p for p in commands if p not in NOT_JOBS]
    for must in ("synth", "synth3d", "detect fit", "detect predict", "detect eval", "detect3d fit", "detect3d predict",
                 "detect3d eval", "filter select", "filter quality", "train-detector", "experiment", "data convert",
                 "lora train"):
        assert must in jobs
    for path in jobs:
        opts = {o for p in commands[path].params for o in getattr(p, "opts", [])}
        assert {"--config", "--print-config"} <= opts, f"{path} lacks --config/--print-config"
    for path in NOT_JOBS:
        assert "--print-config" not in {o for p in commands[path].params for o in p.opts}


def test_config_keys_are_option_names_and_the_command_line_wins(tmp_path):
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "fit.yaml").write_text("data: ../data\nout: m.dfm\nmodel: patchcore\nimage-size: 64\n"
                                      "synthetic: set1\nreal_defects: false\nseed: 7\n")
    r = runner.invoke(app, ["detect", "fit", "--config", str(cfg_dir / "fit.yaml"), "--print-config",
                            "--image-size", "32x48", "--seed", "3"])
    assert r.exit_code == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["model"] == "patchcore" and doc["real_defects"] is False
    assert doc["image_size"] == "32x48" and doc["seed"] == 3  # command line beats the file
    # relative paths in the file are read against the file's folder; printed absolute
    assert doc["data"] == str((tmp_path / "data").absolute()) or Path(doc["data"]).resolve() == (tmp_path / "data")
    assert Path(doc["out"]).resolve() == cfg_dir / "m.dfm"
    assert [Path(p).resolve() for p in doc["synthetic"]] == [cfg_dir / "set1"]  # one value for a repeatable option
    assert "config" not in doc and "print_config" not in doc
    # what --print-config writes, --config reads back to the same settings
    (tmp_path / "again.yaml").write_text(r.stdout)
    r2 = runner.invoke(app, ["detect", "fit", "--config", str(tmp_path / "again.yaml"), "--print-config"])
    assert r2.exit_code == 0, r2.stderr
    assert yaml.safe_load(r2.stdout) == doc


def test_print_config_alone_is_a_template(tmp_path):
    r = runner.invoke(app, ["detect", "predict", "--print-config"])
    assert r.exit_code == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["model_path"] is None and doc["images"] == [] and doc["out"] is None and doc["device"] == "cpu"
    (tmp_path / "t.yaml").write_text(r.stdout)  # the template still needs its inputs to run
    r = runner.invoke(app, ["detect", "predict", "--config", str(tmp_path / "t.yaml")])
    assert r.exit_code == 2 and "Missing" in r.stderr


def test_studio_job_forms_offer_config_but_not_print_config():
    from defectforge.studio.cli_jobs import command_form

    names = [f["name"] for f in command_form("detect fit")]
    assert "config" in names and "print_config" not in names and "device" in names


def test_a_config_file_runs_the_job(tmp_path):
    root = _mvtec(tmp_path / "mv")
    (tmp_path / "check.yaml").write_text("path: mv\njson: out/check.json\n")
    r = runner.invoke(app, ["data", "check", "--config", str(tmp_path / "check.yaml")])
    assert r.exit_code == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "check.json").read_text())
    assert doc["format"] == "mvtec" and sum(doc["counts"].values()) == 3
    # '-' stays stdout, it is not a file beside the config
    (tmp_path / "stdout.yaml").write_text(f"path: {root}\njson: '-'\n")
    r = runner.invoke(app, ["data", "check", "--config", str(tmp_path / "stdout.yaml")])
    assert r.exit_code == 0 and json.loads(r.stdout)["format"] == "mvtec"
    assert not (tmp_path / "-").exists()


def test_list_arguments_and_flags_from_a_config(tmp_path):
    (tmp_path / "p.yaml").write_text("model_path: m.dfm\nimages: [a.png, b.png]\nout: o\nthreshold: 0.25\n")
    r = runner.invoke(app, ["detect", "predict", "--config", str(tmp_path / "p.yaml"), "--print-config"])
    assert r.exit_code == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert [Path(p).name for p in doc["images"]] == ["a.png", "b.png"] and doc["threshold"] == 0.25
    r = runner.invoke(app, ["detect", "predict", "m2.dfm", "c.png", "--config", str(tmp_path / "p.yaml"),
                            "--print-config"])
    doc = yaml.safe_load(r.stdout)
    assert Path(doc["model_path"]).name == "m2.dfm" and [Path(p).name for p in doc["images"]] == ["c.png"]


def test_unknown_keys_and_bad_values_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: d\nout: o\nmodle: exdd\n")
    _one_line_error(runner.invoke(app, ["detect", "fit", "--config", str(bad)]), str(bad), "unknown key 'modle'",
                    "detect fit", "model")
    bad.write_text("seed: seven\n")
    _one_line_error(runner.invoke(app, ["detect", "fit", "d", "--out", "o", "--config", str(bad)]), str(bad), "seed:")
    bad.write_text("- a\n- b\n")
    _one_line_error(runner.invoke(app, ["detect", "fit", "d", "--out", "o", "--config", str(bad)]), str(bad), "mapping")
    bad.write_text("a: [1\n")
    _one_line_error(runner.invoke(app, ["filter", "quality", "r", "s", "--config", str(bad)]), str(bad), "YAML")
    _one_line_error(runner.invoke(app, ["parts", "--out", "o", "--config", str(tmp_path / "none.yaml")]),
                    "none.yaml", "not found")
    # the root options are not keys of a command
    bad.write_text("quiet: true\n")
    _one_line_error(runner.invoke(app, ["parts", "--out", "o", "--config", str(bad)]), "unknown key 'quiet'")


def test_synth_prints_its_effective_recipe(tmp_path):
    data = _mvtec(tmp_path / "mv")
    r = runner.invoke(app, ["synth", str(data), "--generator", "pitting:2", "--n", "5", "--to", "yolo",
                            "--out", str(tmp_path / "o"), "--print-config"])
    assert r.exit_code == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["generators"][0] == {"name": "pitting", "weight": 2.0, "params": {}}
    assert doc["n"] == 5 and doc["formats"] == ["yolo"] and doc["source"]["path"] == str(data.absolute())
    assert not (tmp_path / "o").exists()  # nothing ran
    (tmp_path / "recipe.yaml").write_text(r.stdout)
    r2 = runner.invoke(app, ["synth", "--config", str(tmp_path / "recipe.yaml"), "--to", "coco", "--print-config"])
    assert r2.exit_code == 0, r2.stderr
    doc2 = yaml.safe_load(r2.stdout)
    assert doc2["formats"] == ["coco"] and {k: v for k, v in doc2.items() if k != "formats"} == \
        {k: v for k, v in doc.items() if k != "formats"}


# --- one meaning per option name --------------------------------------------------------------

def _declared():
    return list(declared_options(app))


def test_every_shared_option_name_has_one_meaning_and_one_type():
    uses = collections.defaultdict(set)
    types = collections.defaultdict(set)
    for path, names, vtype in _declared():
        for name in names:
            uses[name].add(path)
            if (path, name) in OTHER_FORMS:  # the same meaning written another way, listed
                assert OTHER_FORMS[path, name][0] == vtype, (path, name)
                continue
            types[name].add(vtype)
        for name in names:
            if not name.startswith("--"):
                assert SHORT.get(name) in names, f"{path}: {name} stands for {SHORT.get(name)}, not {names}"
        for short, long in SHORT.items():  # and wherever the long option is, its short one is too
            assert long not in names or short in names, f"{path}: {long} without {short}"
    shared = [n for n, paths in uses.items() if len(paths) > 1 and n.startswith("--")]
    missing = sorted(set(shared) - set(OPTIONS))
    assert not missing, f"option names used by several commands but not in the table: {missing}"
    for name in shared:
        assert types[name] == {OPTIONS[name][0]}, f"{name}: {sorted(types[name])} vs the table's {OPTIONS[name][0]}"
    for name, (vtype, _) in OPTIONS.items():  # the table lists nothing that no command has
        assert name in uses, f"{name} is in the table but no command has it"
        assert types[name] == {vtype}, name
    for path, name in OTHER_FORMS:
        assert path in uses[name], f"OTHER_FORMS lists {path} {name}, which does not exist"
    # the renamed meanings are gone: --format only reads, --model is never a folder
    assert all("synth" != p and "parts" != p for p in uses["--format"])
    assert "lora train" not in uses["--model"] and "lora train" in uses["--base-model"]
    assert all(t == "str" for p, names, t in _declared() if any("image-size" in n for n in names))


def test_argument_keys_mean_what_the_option_of_that_name_means():
    """A ``--config`` key names an argument or an option: an argument whose key is also an
    option name (``out``, ``synthetic``, ``base_model``) has that option's value type."""
    args = list(declared_options(app, arguments=True))
    assert ("diffusion check", ("--base-model",), "path") in args  # was 'model', a folder
    for path, (name,), vtype in args:
        if name in OPTIONS:
            assert vtype == OPTIONS[name][0], f"{path}: argument {name[2:]} is {vtype}, the option is {OPTIONS[name][0]}"


def test_arguments_are_named_in_capitals_in_help():
    """docs/cli.md: arguments name what they are in ``--help`` (``DATA``, ``MODEL``, ``IMAGES``...)."""
    from typer.core import TyperArgument

    seen = set()
    for path, cmd in _commands().items():
        for p in cmd.params:
            if isinstance(p, TyperArgument):
                want = "MODEL" if p.name == "model_path" else p.name.upper()  # the docs' one renamed key
                assert p.metavar == want, f"{path}: argument {p.name} shows as {p.metavar!r}"
                seen.add(p.metavar)
    assert {"DATA", "MODEL", "IMAGES", "CLOUDS", "BASE_MODEL"} <= seen
    r = runner.invoke(app, ["detect", "predict", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "{MODEL} {IMAGES}..." in r.output


def test_docs_table_lists_every_option_name():
    from defectforge._cligrammar import markdown_table

    text = DOCS.read_text()
    table = markdown_table(app)
    assert table.count("\n") == len(OPTIONS) + 1 and "| `--out` / `-o` | path |" in table
    for name in OPTIONS:
        assert f"| `{name}`" in text, f"docs/cli.md has no row for {name}"
    for path, renames in RENAMED.items():
        for old, new in renames.items():
            assert f"`{old}`" in text and f"`{new}`" in text


def test_device_wherever_a_detector_runs_with_one_reading(tmp_path):
    commands = _commands()
    for path in ("detect fit", "detect predict", "detect eval", "lora train", "train-detector", "experiment", "demo"):
        assert "--device" in {o for p in commands[path].params for o in p.opts}, path
    for args in (["detect", "fit", str(tmp_path), "--out", "m.dfm"], ["detect", "predict", "m.dfm", "x.png", "--out", "o"],
                 ["lora", "train", str(tmp_path), "--base-model", "w", "--prompt", "p", "--out", "o"],
                 ["train-detector", str(tmp_path), "--out", str(tmp_path / "run")], ["demo", "--out", str(tmp_path / "d")],
                 ["experiment", "exdd-augmentation", "--data", str(tmp_path), "--out", str(tmp_path / "e")]):
        _one_line_error(runner.invoke(app, [*args, "--device", "gpu0"]), "unknown device 'gpu0'", "'auto'")
    import torch

    if not torch.cuda.is_available():
        _one_line_error(runner.invoke(app, ["detect", "fit", str(tmp_path), "--out", "m.dfm", "--device", "cuda:1"]),
                        "CUDA is not available")
    # 'auto' is accepted by the detectors too (it used to reach torch.device('auto'))
    r = runner.invoke(app, ["detect", "fit", str(tmp_path / "none"), "--out", "m.dfm", "--device", "auto"])
    assert r.exit_code == 2 and "path not found" in r.stderr and "unknown device" not in r.stderr, r.stderr
    assert not any((tmp_path / d).exists() for d in ("run", "d", "e"))  # refused before anything was written


def test_image_size_has_one_reading():
    assert parse_image_size("256") == 256 and parse_image_size("32x48") == (32, 48) and parse_image_size(None) is None
    assert parse_image_size(" 64X80 ") == (64, 80)
    for bad in ("big", "0", "3x", "-4"):
        with pytest.raises(ConfigError):
            parse_image_size(bad)
    with pytest.raises(ConfigError, match="takes N"):
        parse_image_size("32x32", square_ok=False)
    r = runner.invoke(app, ["train-detector", "nowhere", "--out", "o", "--image-size", "32x32"])
    assert r.exit_code == 2 and "--image-size takes N" in r.stderr


# --- renamed spellings ------------------------------------------------------------------------

def test_renamed_spellings_still_work_with_a_warning(tmp_path):
    r = runner.invoke(app, ["parts", "--n", "1", "--points", "300", "--part", "flange", "--format", "pcd",
                            "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.stderr
    assert [f.suffix for f in (tmp_path / "p").iterdir()] == [".pcd"]
    assert "'defectforge parts --format' is deprecated, use --to" in r.stderr
    r = runner.invoke(app, ["parts", "--n", "1", "--points", "300", "--part", "flange", "--to", "npy",
                            "--out", str(tmp_path / "q")])
    assert r.exit_code == 0 and "deprecated" not in r.stderr
    assert [f.suffix for f in (tmp_path / "q").iterdir()] == [".npy"]
    from defectforge import _verbosity

    try:
        r = runner.invoke(app, ["-q", "parts", "--n", "1", "--points", "300", "--format", "txt", "--out", str(tmp_path / "t")])
    finally:
        _verbosity.set_level(_verbosity.NORMAL)
    assert r.exit_code == 0 and r.stderr == "" and [f.suffix for f in (tmp_path / "t").iterdir()] == [".txt"]
    root = typer.main.get_command(app)
    args, warns = rewrite_renamed(root, ["-q", "synth", "d", "--format=yolo", "-c", "r.yaml", "--", "--format"])
    assert args == ["-q", "synth", "d", "--to=yolo", "--config", "r.yaml", "--", "--format"] and len(warns) == 2
    args, warns = rewrite_renamed(root, ["lora", "train", "d", "-m", "w", "--prompt", "x"])
    assert args[3] == "--base-model" and len(warns) == 1
    same = ["data", "check", "d", "--format", "mvtec"]  # another command's --format is not touched
    assert rewrite_renamed(root, same) == (same, [])


# --- Ctrl-C -----------------------------------------------------------------------------------

def test_ctrl_c_names_the_command_that_resumes(tmp_path, monkeypatch):
    import defectforge.synth2d.pipeline as pipeline

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "synthesize", stop)
    data = _mvtec(tmp_path / "my data")
    r = runner.invoke(app, ["synth", str(data), "--n", "2", "--out", str(tmp_path / "o")])
    assert r.exit_code == 130
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "run the same command again" in line
    assert line.endswith(f"defectforge synth '{data}' --n 2 --out {tmp_path / 'o'}")
    root = typer.main.get_command(app)
    lora = interrupted_line(root, ["lora", "train", "d", "--base-model", "w", "--out", "o"])
    assert "checkpoints are kept" in lora and lora.endswith("--out o --resume")
    fit = interrupted_line(root, ["detect", "fit", "d", "--out", "m.dfm"])
    assert "start over" in fit and "resume" not in fit


def test_help_texts_render_as_written():
    """Rich markup must not eat a help text's ``[extra]`` and click does not %-format, so a
    ``%%`` would print doubled: every bracketed word of a help text shows in ``--help``."""
    import re

    for path, cmd in _commands().items():
        texts = [p.help or "" for p in cmd.params] + [cmd.help or ""]
        out = " ".join(runner.invoke(app, [*path.split(), "--help"], env={"COLUMNS": "2000"}).output.split())
        for t in texts:
            assert "%%" not in t, f"{path}: '%%' in a help text"
            for word in re.findall(r"\[[^\]\s/]+\]", t):
                assert word.replace("\\", "") in out, f"{path}: {word} missing from --help"
    assert "[yolo]" in " ".join(runner.invoke(app, ["train-detector", "--help"], env={"COLUMNS": "2000"}).output.split())


def test_a_warning_of_ours_is_one_line_without_source(tmp_path):
    """A defectforge warning on the command line reads ``warning: <what>``, not the source line of
    the library that raised it; the formatter is restored after the command."""
    import warnings

    import numpy as np

    from defectforge.data import write_image

    root = tmp_path / "ds"
    write_image(root / "train" / "good" / "a.png", np.full((24, 32, 3), 90, np.uint8))
    write_image(root / "test" / "dent" / "b.png", np.full((24, 32, 3), 90, np.uint8))
    mask = np.zeros((24, 32), np.uint8)
    mask[4:9, 5:12] = 120
    mask[10:14, 5:12] = 255  # two non-zero values: a non-binary mask
    write_image(root / "ground_truth" / "dent" / "b_mask.png", mask)
    import subprocess
    import sys

    before = warnings.formatwarning
    r = subprocess.run([sys.executable, "-m", "defectforge", "data", "convert", str(root), str(tmp_path / "out"),
                        "--to", "manifest"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "not binary" in ln]
    assert lines and all(ln.startswith("warning: ") and "NonBinaryMaskWarning" not in ln for ln in lines), r.stderr
    assert "read_mask(" not in r.stderr
    with warnings.catch_warnings():  # in-process: the formatter is restored after the command
        warnings.simplefilter("ignore")
        assert runner.invoke(app, ["data", "check", str(root)]).exit_code in (0, 1)
    assert warnings.formatwarning is before


def test_a_plain_warning_raised_by_our_code_is_ours():
    """A ``UserWarning`` attributed to a line of defectforge (e.g. the experiment runner's
    skipped few-real regime) is one line too; a library's stays in Python's format."""
    import os

    import defectforge.experiments.runner as runner_mod
    from defectforge.cli import is_ours

    assert is_ours(UserWarning, runner_mod.__file__)
    assert is_ours(UserWarning, os.path.relpath(runner_mod.__file__))
    assert not is_ours(UserWarning, os.__file__)
    assert not is_ours(DeprecationWarning, "/somewhere/else/defectforge_plugin.py")
