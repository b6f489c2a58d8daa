"""One CLI grammar: what each option name means, renamed spellings, how to resume.

- :data:`OPTIONS`: every option name that more than one command uses, with its one meaning
  and its one value type (``docs/cli.md`` has the same table; the tests walk every
  registered command and hold both to it).
- :data:`RENAMED`: old spellings that had another meaning elsewhere. They still work
  (rewritten before parsing, :func:`rewrite_renamed`) with a one-line deprecation warning, and
  are hidden from ``--help``.
- :data:`RESUME`: what to do after Ctrl-C, per command (:func:`interrupted_line`).
"""

from __future__ import annotations

import inspect
import shlex
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

# name -> (value type, meaning). Value types: path, str, int, float, bool; an option that
# takes several values (repeatable) keeps the type of one value.
OPTIONS: dict[str, tuple[str, str]] = {
    "--out": ("path", "where the command writes its output: a folder, or the model file for `detect fit` / `detect3d fit`"),
    "--data": ("path", "the dataset that is read (an argument, DATA, on most commands; an option on `experiment`; "
                       "`studio --data NAME=FOLDER` mounts one under a name)"),
    "--real": ("path", "the real dataset compared with or filtered against"),
    "--config": ("path", "YAML file with the same keys as the options; options on the command line win"),
    "--print-config": ("bool", "print the effective settings as YAML (for `--config`) and exit"),
    "--format": ("str", "force the format of the dataset that is read (manifest, coco, labelme, yolo, mvtec; 3D: real3d, ...)"),
    "--to": ("str", "format(s) to write: exports of `synth` (`mvtec,yolo,coco`), clouds of `parts` (`ply`), the target of `data convert`"),
    "--model": ("str", "a registered detector algorithm (`exdd`, `patchcore`; 3D: `fpfh`, `pointnet`); a fitted model file is the MODEL argument"),
    "--image-size": ("str", "network input size: `N` (shorter side, aspect kept) or `HxW`"),
    "--normal-ratio": ("float", "coreset ratio of the normal memory bank (PatchCore / ExDD)"),
    "--device": ("str", "where the models of the command run: `auto`, `cpu`, `cuda`, `cuda:N` (not part of a run: a run resumes on another device)"),
    "--seed": ("int", "seed of the run's random generators (repeat on `experiment`: one run per seed)"),
    "--n": ("int", "how many samples (parts, prompts) to make"),
    "--split": ("str", "the dataset split used (train, test, ...)"),
    "--class": ("str", "3D category (class) name; repeat on `detect3d fit`"),
    "--generator": ("str", "a registered 2D generator (`synth`: NAME or NAME:WEIGHT, repeatable)"),
    "--synthetic": ("path", "a synthetic set (a `synth` output) added to the training defects; repeatable"),
    "--json": ("path", "write the numbers as JSON to this file; `-` writes them to stdout"),
    "--report": ("path", "folder for the HTML report"),
    "--threshold": ("float", "image-score threshold (default: the model's, chosen on validation)"),
    "--nn-backend": ("str", "nearest-neighbour search of the memory banks: `auto` (exact, default), `faiss`, `pruned`, "
                            "`screened`, or `ivf[:N]` (approximate, faster); stored in the model at `detect fit`, "
                            "this run only on `detect predict` / `detect eval` (a `detect predict` resume must use "
                            "the same)"),
    "--pixel-threshold": ("float", "anomaly-map threshold for masks (default: the model's)"),
    "--overwrite": ("bool", "replace a different run (or file) at the output"),
    "--allow-outside-root": ("bool", "allow label files that point outside the dataset folder"),
    "--workers": ("int", "parallel workers (local processes, or Ray tasks with `--engine ray`)"),
    "--engine": ("str", "`local` or `ray`"),
    "--ray-address": ("str", "address of a running Ray cluster (`--engine ray`)"),
    "--folds": ("int", "how many folds (data splits) a score is averaged over: C2ST cross-validation in "
                       "`filter quality`, guide/validation splits in `recipe search`"),
    "--arch": ("str", "box-detector architecture (`fasterrcnn-lite0`, `yolox-nano`, `yolov8n`, ...)"),
    "--epochs": ("int", "training epochs"),
    "--batch-size": ("int", "training batch size"),
    "--lr": ("float", "learning rate"),
    "--patience": ("int", "epochs without validation improvement before stopping"),
    "--steps-per-epoch": ("int", "box detectors: optimiser steps per epoch whatever the data (equal-step "
                                 "comparisons; default: one pass over the images, in `recipe search` the real-only "
                                 "baseline's pass)"),
    "--val-split": ("str", "how validation is carved from TRAIN: `auto` (whole groups, the dataset's `group` "
                           "column, where the samples have one), `group` or `image`"),
    "--ema": ("float", "box detectors: decay of the moving average of the weights that is validated, picked and "
                       "saved (e.g. 0.999; default: off)"),
    "--steps": ("int", "training steps (`lora train`, `detect3d fit` with pointnet)"),
    "--points": ("int", "points per generated part / sampled mesh"),
    "--prompt": ("str", "a text prompt given to a model (diffusion training prompt; CLIP text for filtering)"),
    "--kind": ("str", "diffusion model kind: `sdxl` or `sd` (Stable Diffusion 1.x/2.x); `diffusion check` also `auto` (read from the folder)"),
    "--llm-url": ("str", "OpenAI-compatible base URL of a language model"),
    "--llm-model": ("str", "model name at `--llm-url`"),
    "--base-model": ("path", "a local diffusers model folder (the base model a LoRA is trained on)"),
}

OTHER_FORMS: dict[tuple[str, str], tuple[str, str]] = {
    ("studio", "--data"): ("str", "NAME=FOLDER, repeatable: a dataset folder mounted read-only under NAME"),
}
"""(command, option) -> (value type, form): the same meaning written another way on one command."""

SHORT: dict[str, str] = {"-o": "--out", "-f": "--format", "-m": "--model", "-j": "--workers", "-c": "--class",
                         "-g": "--generator", "-i": "--instructions", "-d": "--describe", "-p": "--prompt"}
"""Each short option stands for one long option, on every command that has it."""

RENAMED: dict[str, dict[str, str]] = {
    "synth": {"--format": "--to", "-c": "--config"},
    "parts": {"--format": "--to"},
    "lora train": {"--model": "--base-model", "-m": "--base-model"},
}
"""command -> {old spelling: new}: old spellings that meant something else on other commands."""

RERUN, ADD_RESUME = "rerun", "--resume"
RESUME: dict[str, str] = {
    "synth": RERUN, "synth3d": RERUN, "parts": RERUN, "detect predict": RERUN, "experiment": RERUN,
    "train-detector": RERUN, "recipe search": RERUN, "lora train": ADD_RESUME,
}
"""Resumable commands: rerunning the same command resumes (``rerun``), or ``--resume`` is needed."""


def command_path(group, args: list[str]) -> tuple[str, int]:
    """(``"detect fit"``, index of the first argument after it) in a root ``args`` list."""
    node, path, i = group, [], 0
    while hasattr(node, "commands") and i < len(args):
        if args[i].startswith("-"):  # root options are flags
            i += 1
            continue
        sub = node.commands.get(args[i])
        if sub is None:
            break
        node, i = sub, i + 1
        path.append(args[i - 1])
    return " ".join(path), i


def rewrite_renamed(group, args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` with renamed option spellings replaced by the current ones, and one warning
    line per replacement."""
    path, start = command_path(group, args)
    renames = RENAMED.get(path)
    if not renames:
        return args, []
    out, warnings = list(args[:start]), []
    for j, tok in enumerate(args[start:], start):
        if tok == "--":
            out.extend(args[j:])
            break
        name, eq, value = tok.partition("=")
        new = renames.get(name) if (tok.startswith("--") or not eq) else None
        if new is not None:
            warnings.append(f"warning: 'defectforge {path} {name}' is deprecated, use {new} "
                            f"(the old spelling still works for now)")
            tok = new + eq + value
        out.append(tok)
    return out, warnings


def interrupted_line(group, args: list[str]) -> str:
    """The line printed on Ctrl-C: what was kept and the command that resumes, if any."""
    path, _ = command_path(group, args)
    how = RESUME.get(path)
    cmd = shlex.join(["defectforge", *args])
    if how == RERUN:
        return f"interrupted: finished outputs are kept; to resume, run the same command again: {cmd}"
    if how == ADD_RESUME:
        if "--resume" not in args:
            cmd += " --resume"
        return f"interrupted: checkpoints are kept; to resume from the newest one: {cmd}"
    return ("interrupted: outputs are written whole or not at all, nothing half-written was kept; "
            f"run again to start over: {cmd}")


def value_type(annotation: Any) -> str:
    """The type of one value of an annotation (``Optional[List[Path]]``, ``Path | None`` -> ``path``)."""
    while get_origin(annotation) in (Union, list, tuple, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None) and a is not Ellipsis]
        annotation = args[0]
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def declared_options(app, prefix: tuple[str, ...] = (), arguments: bool = False):
    """``(command, option names, value type)`` for every option of every command registered
    on ``app`` (a ``typer.Typer``), read from the command functions; a ``--x/--no-x``
    switch is named ``--x``. ``arguments=True``: the arguments instead, named ``--KEY`` after
    their ``--config`` key (``model_path`` -> ``--model-path``), to hold them to the same table."""
    from typer.main import get_command_name
    from typer.models import ArgumentInfo, OptionInfo

    for info in app.registered_commands:
        fn = info.callback
        path = " ".join((*prefix, info.name or get_command_name(fn.__name__)))
        for pname, p in inspect.signature(fn, eval_str=True).parameters.items():
            if arguments and isinstance(p.default, ArgumentInfo):
                yield path, ("--" + pname.replace("_", "-"),), value_type(p.annotation)
            if arguments or not isinstance(p.default, OptionInfo):
                continue
            decls = [d for d in (p.default.param_decls or ()) if d.startswith("-")]
            names = decls or ["--" + pname.replace("_", "-")]
            yield path, tuple(n.split("/")[0].strip() for n in names), value_type(p.annotation)
    for group in app.registered_groups:
        sub = group.typer_instance
        yield from declared_options(sub, (*prefix, group.name or sub.info.name), arguments)


def markdown_table(app) -> str:
    """The option table of ``docs/cli.md`` (``python -m defectforge._cligrammar`` prints it)."""
    uses: dict[str, set[str]] = {}
    for path, names, _ in declared_options(app):
        for name in names:
            uses.setdefault(name, set()).add(path)
    short = {long: s for s, long in SHORT.items()}
    rows = ["| Option | Value | Meaning | Commands |", "|---|---|---|---|"]
    for name, (vtype, meaning) in OPTIONS.items():
        alias = f" / `{short[name]}`" if name in short else ""
        cmds = sorted(uses.get(name, ()))
        where = "every job command" if name in ("--config", "--print-config") else ", ".join(f"`{c}`" for c in cmds)
        rows.append(f"| `{name}`{alias} | {vtype} | {meaning} | {where} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from defectforge.cli import app as _app

    print(markdown_table(_app))
