"""``--config FILE`` and ``--print-config`` on every command that runs a job.

Added in one place (:func:`add_config_options`, called by :mod:`defectforge.cli` once every
area has registered its commands), never per command:

- ``--config FILE``: a YAML mapping whose keys are the command's option names (``image-size``
  or ``image_size``) and argument names (``data``, ``model_path``); the values become the
  command's defaults through click's ``Context.default_map``, so **options given on the
  command line win**. Relative paths of path-valued keys are read against the file's folder
  (as ``synth --config`` does; ``--print-config`` writes them absolute). A key the
  command does not have is refused with one line, ``error: FILE: unknown key 'x' for 'defectforge CMD' (keys: ...)``, exit code 2.
- ``--print-config``: print the effective settings (file + command line + defaults) as YAML
  that ``--config`` reads back, and exit without running the job; required inputs not given
  print as ``null`` (a template to fill in).

A command that declares its own ``config`` parameter (``synth``: its recipe YAML) keeps it;
one that declares ``print_config`` prints its own effective configuration. A ``device``
option is read the one way (:func:`defectforge._device.resolve_device`: ``auto`` picks CUDA
when torch sees one) before the command runs.
"""

from __future__ import annotations

import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

NOT_JOBS = frozenset({"synth-generators", "studio"})
"""Commands that run no job (a listing; the studio server): no ``--config``."""

_CTX = "df_config_ctx__"
_MARK = "_defectforge_config"


def config_key(param) -> str:
    """The YAML key of a click parameter: the first long option name without dashes (the
    option as typed, ``--image-size`` -> ``image_size``), or the argument's name."""
    if getattr(param, "param_type_name", "") == "option":
        longs = [o for o in param.opts if o.startswith("--")]
        if longs:
            return longs[0][2:].replace("-", "_")
    return param.name


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _command_path(ctx) -> str:
    return ctx.command_path.split(" ", 1)[-1] if " " in ctx.command_path else ctx.command_path


def _job_params(ctx) -> list:
    return [p for p in ctx.command.params if p.expose_value and p.name not in ("config", "print_config")]


def read_config(path: Path, ctx, path_params: frozenset[str]) -> dict[str, Any]:
    """``{parameter name: value}`` from a ``--config`` file, checked against the command's
    parameters (unknown keys are one-line errors naming the file and the key)."""
    import yaml

    from defectforge.data._files import read_text
    from defectforge.errors import InputError

    path = Path(path)
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "a --config file is a mapping of option names to values (image_size: 256)")
    params = {config_key(p): p for p in _job_params(ctx)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        param = params.get(str(key).replace("-", "_"))
        if param is None:
            raise InputError(path, f"unknown key {str(key)!r} for 'defectforge {_command_path(ctx)}' "
                                   f"(keys: {', '.join(sorted(params))})")
        many = param.multiple or param.nargs == -1
        if many and value is not None and not isinstance(value, list):
            value = [value]
        if param.name in path_params and value is not None:
            base = path.parent
            def rel(v):  # '-' is stdout (--json -), not a file
                return str(v) if str(v) == "-" else str(base / str(v))

            value = [rel(v) for v in value] if isinstance(value, list) else rel(value)
        _check_value(path, key, param, value, ctx)
        out[param.name] = value
    return out


def _check_value(path: Path, key: Any, param, value: Any, ctx) -> None:
    """A value of the wrong type is a one-line error naming the file and the key (not a usage
    box about an option the user never typed)."""
    from defectforge.errors import InputError

    coerce = getattr(param, "get_runtime_param", None)  # typer's own conversion, when it has one
    if coerce is None or value is None:
        return
    try:
        coerce().coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # typer's BadParameter: keep its text, name the key
        text = " ".join(str(getattr(exc, "message", exc)).split())
        raise InputError(path, f"{key}: {text}") from None


def effective_yaml(ctx, path_params: frozenset[str] = frozenset()) -> str:
    """The command's effective settings as the YAML ``--config`` reads back (paths made
    absolute, so the file means the same wherever it is kept)."""
    import yaml

    def value(p):
        v = ctx.params.get(p.name)
        if p.name in path_params and v is not None and str(v) != "-":
            v = [Path(x).absolute() for x in v] if isinstance(v, (list, tuple)) else Path(v).absolute()
        return _plain(v)

    doc = {config_key(p): value(p) for p in _job_params(ctx)}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def check_finite(ctx, values: dict[str, Any]) -> None:
    """Refuse NaN and infinity in every float option and argument of a command (one line,
    exit code 2, naming the option, and the ``--config`` file when the value came from one):
    ``--threshold nan`` would otherwise flag nothing, ``--lr nan`` train weights that are all NaN.
    Called for every job command by :func:`with_config`, so no command checks this itself."""
    import math

    from defectforge.errors import ConfigError, InputError

    for param in ctx.command.params:
        value = values.get(param.name)
        items = value if isinstance(value, (list, tuple)) else (value,)
        bad = next((v for v in items if isinstance(v, float) and not math.isfinite(v)), None)
        if bad is None:
            continue
        name = next((o for o in param.opts if o.startswith("--")), param.name.upper())
        problem = f"{name} must be a finite number, got {bad}"
        source = ctx.get_parameter_source(param.name)
        loaded = ctx.meta.get("defectforge.config")
        if loaded is not None and source is not None and source.name == "DEFAULT_MAP":
            raise InputError(loaded[0], f"{config_key(param)}: {problem}")
        raise ConfigError(problem)


def with_config(fn):
    """``fn`` (a typer command function) with ``--config`` and ``--print-config`` added."""
    if getattr(fn, _MARK, False):
        return fn
    sig = inspect.signature(fn, eval_str=True)
    own_config = "config" in sig.parameters
    own_print = "print_config" in sig.parameters
    from defectforge._cligrammar import value_type

    path_params = frozenset(n for n, p in sig.parameters.items() if value_type(p.annotation) == "path")
    extra = []

    def _load(ctx: typer.Context, value: Optional[Path]):
        if value is None or ctx.resilient_parsing:
            return value
        values = read_config(value, ctx, path_params)
        ctx.default_map = {**(ctx.default_map or {}), **values}
        ctx.meta["defectforge.config"] = (Path(value), values)
        return value

    def _template(ctx: typer.Context, value: bool):
        if value:  # a template: required arguments/options left out print as null instead of failing
            for p in ctx.command.params:
                p.required = False
        return value

    kw = inspect.Parameter.KEYWORD_ONLY
    if not own_config:
        extra.append(inspect.Parameter("config", kw, annotation=Optional[Path], default=typer.Option(
            None, "--config", metavar="FILE", is_eager=True, callback=_load,
            help="YAML with the same keys as the options (image-size or image_size); options on the "
                 "command line win. --print-config writes one.")))
    if not own_print:
        extra.append(inspect.Parameter("print_config", kw, annotation=bool, default=typer.Option(
            False, "--print-config", is_eager=True, callback=_template,
            help="Print the effective settings as YAML (for --config) and exit; without the required "
                 "inputs, a template with them null.")))
    extra.append(inspect.Parameter(_CTX, kw, annotation=typer.Context))
    ctx_names = [n for n, p in sig.parameters.items() if p.annotation is typer.Context]
    if ctx_names:  # typer hands the context to one parameter only: share it
        extra.pop()

    def wrapper(**kwargs):
        ctx = kwargs[ctx_names[0]] if ctx_names else kwargs.pop(_CTX)
        printing = False if own_print else kwargs.pop("print_config", False)
        if not own_config:
            kwargs.pop("config", None)
        if printing:
            sys.stdout.write(effective_yaml(ctx, path_params))
            sys.stdout.flush()
            raise typer.Exit(0)
        check_finite(ctx, kwargs)  # NaN/inf in any float option: one line, before the job starts
        if isinstance(kwargs.get("device"), str):  # one reading of --device: auto | cpu | cuda[:N]
            from defectforge._device import resolve_device

            kwargs["device"] = resolve_device(kwargs["device"])
        return fn(**kwargs)

    params = list(sig.parameters.values())
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__module__ = fn.__module__
    wrapper.__signature__ = sig.replace(parameters=params + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in params + extra if p.annotation is not p.empty}
    setattr(wrapper, _MARK, True)
    return wrapper


def add_config_options(app: typer.Typer, prefix: tuple[str, ...] = ()) -> None:
    """Give every job command of ``app`` (and of its sub-apps) ``--config``/``--print-config``."""
    from typer.main import get_command_name

    for info in app.registered_commands:
        name = info.name or get_command_name(info.callback.__name__)
        if " ".join((*prefix, name)) not in NOT_JOBS:
            info.callback = with_config(info.callback)
    for group in app.registered_groups:
        sub = group.typer_instance
        add_config_options(sub, (*prefix, group.name or sub.info.name))
