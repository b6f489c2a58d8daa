"""One estimator base and one model-file format for every detector family.

**Estimator rules** (scikit-learn's): every parameter is an explicit ``__init__`` argument
with a default, ``__init__`` only stores them (checks run in :meth:`Estimator.fit` through
:meth:`~Estimator._validate_params`), fitted attributes end in ``_`` and are set only by
``fit`` or ``load``. So :meth:`~Estimator.get_params`, :meth:`~Estimator.set_params` and
:func:`clone` are generic, and :func:`check_is_fitted` tells whether ``fit`` ran.

**Model file** (one format for 2D, 3D and box detectors): a ``torch.save`` d dict that
loads with ``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, tuples,
dicts only), written atomically::

    {"kind": "defectforge.detector2d",      # the family (Estimator.model_kind)
     "format_version": 2,                   # FORMAT_VERSION
     "defectforge_version": "0.2.0",
     "class": "ExDD",                       # resolved through the family's registry
     "params": {...},                       # get_params() minus runtime-only ones
     "state": {...}}                        # the fitted attributes (Estimator._get_state)

A file may instead hold several estimators of one family under ``"models": {name:
{"class", "params", "state"}}`` (the 3D CLI stores one detector per category). A file of
another kind, a newer format version, a truncated file or an unknown class is refused
with one :class:`~defectforge.errors.InputError` naming the file (and the version).
Families that had round-1 files register a reader for the old versions
(:meth:`Estimator._upgrade`), so those load too.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Any, ClassVar

from defectforge.errors import ConfigError, DefectforgeError, InputError

FORMAT_VERSION = 2


class NotFittedError(ConfigError):
    """``predict``/``save`` on an estimator that was neither fitted nor loaded."""


class Estimator:
    """Base of every defectforge estimator (2D, 3D and box detectors).

    Subclasses define ``__init__`` with explicit keyword parameters that are only stored
    (``self.x = x``), :meth:`fit` (returns ``self``), :meth:`predict`, and the pair
    :meth:`_get_state` / :meth:`_set_state` (fitted attributes <-> plain values and
    tensors). Family bases set ``model_kind`` and ``registry``.
    """

    name: ClassVar[str] = "estimator"
    model_kind: ClassVar[str] = "defectforge.estimator"
    registry: ClassVar[Any] = None
    #: what a file of this family is called in messages ("model", "3D detector", ...)
    file_what: ClassVar[str] = "model"
    #: kinds of this family's older files (read by :meth:`_upgrade` where it can)
    legacy_kinds: ClassVar[tuple[str, ...]] = ()
    #: parameters added after model files were first written -> the value such a file (which
    #: lacks them) was fitted with, used on load instead of the new default
    legacy_params: ClassVar[dict[str, Any]] = {}
    #: parameters that describe how to run, not the model; never stored in a model file
    runtime_params: ClassVar[tuple[str, ...]] = ("progress",)
    #: the fitted attribute whose presence means "fitted" (None: any public name ending in ``_``)
    fitted_marker: ClassVar[str | None] = None

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly (no *args/**kwargs)")
            names.append(p.name)
        return names

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {k: sig.parameters[k].default for k in cls._param_names()}

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """The ``__init__`` parameters as given (never changed by ``fit``)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        """Change parameters (takes effect at the next ``fit``); unknown names raise."""
        names = set(self._param_names())
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(f"unknown parameter(s) for {type(self).__name__}: {unknown}; "
                              f"known: {', '.join(sorted(names))}")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _check_fitted(self) -> None:
        check_is_fitted(self, self.fitted_marker)

    def _validate_params(self) -> None:
        """Check the parameters; raise :class:`ConfigError`. Called by ``fit``."""

    def __repr__(self) -> str:
        defaults = self.default_params()
        diff = []
        for k, v in self.get_params().items():
            try:
                same = bool(v == defaults[k])
            except Exception:
                same = False
            if not same:
                diff.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(diff)})"

    # ------------------------------------------------------------------ contract
    def fit(self, *args: Any, **kwargs: Any) -> "Estimator":
        raise NotImplementedError

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _get_state(self) -> dict[str, Any]:
        """The fitted attributes as plain values / tensors (``torch.load(weights_only=True)``-safe)."""
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_get_state` returned (raise KeyError/ValueError when it does not fit)."""
        raise NotImplementedError

    @classmethod
    def _upgrade(cls, obj: dict[str, Any], version: Any) -> dict[str, Any] | None:
        """An older file's dict converted to the current layout, or ``None`` when this
        family cannot read ``version`` (then the load fails with one line naming it)."""
        return None

    # ------------------------------------------------------------------ persistence
    def to_entry(self) -> dict[str, Any]:
        """``{"class", "params", "state"}`` of this fitted estimator."""
        self._check_fitted()
        params = {k: v for k, v in self.get_params().items() if k not in self.runtime_params}
        return {"class": type(self).__name__, "params": params, "state": self._get_state()}

    @classmethod
    def resolve_class(cls, class_name: str) -> "type[Estimator]":
        """The class a model file names, looked up in the family's registry; KeyError when
        it is unknown, TypeError when it is not a ``cls``."""
        if class_name == cls.__name__:
            return cls
        fam = cls.registry
        klass = fam.class_named(class_name) if fam is not None else None
        if klass is None:
            raise KeyError(class_name)
        if not issubclass(klass, cls):
            raise TypeError(f"the file holds a {class_name}, not a {cls.__name__}")
        return klass

    @classmethod
    def from_entry(cls, entry: dict[str, Any], **runtime: Any) -> "Estimator":
        """The estimator described by ``entry`` (its class resolved by :meth:`resolve_class`)."""
        klass = cls.resolve_class(entry["class"])
        names = set(klass._param_names())
        params = {k: v for k, v in dict(entry["params"]).items() if k in names}
        for k, v in klass.legacy_params.items():  # added after such files were written
            params.setdefault(k, v)
        params.update({k: v for k, v in runtime.items() if k in names})
        est = klass(**params)
        est._set_state(dict(entry["state"]))
        return est

    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to one model file (see the module docstring)."""
        return write_model_file(path, {"kind": self.model_kind, **self.to_entry()})

    @classmethod
    def load(cls, path: str | Path, **runtime: Any) -> "Estimator":
        """A fitted estimator from :meth:`save` (its own class, e.g. ``Detector.load`` of a
        PatchCore file gives a PatchCore). ``runtime`` sets run-time parameters such as
        ``progress``. Every problem is one :class:`InputError` naming the file."""
        models = load_models(path, cls, **runtime)
        if len(models) != 1:
            raise InputError(path, f"file holds {len(models)} models ({', '.join(models)}); use load_models")
        return next(iter(models.values()))


def clone(est: Estimator) -> Estimator:
    """A new, unfitted estimator with the same parameters."""
    return type(est)(**est.get_params())


def create_estimator(registry: Any, name: str, kwargs: dict[str, Any]) -> Any:
    """``registry.get(name)(**kwargs)`` with its parameters checked now, so a bad setting
    fails before any data is read: unknown names and invalid values raise ConfigError."""
    klass = registry.get(name)
    known = set(klass._param_names())
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown parameter(s) for {klass.__name__}: {unknown}")
    est = klass(**kwargs)
    est._validate_params()
    return est


def is_fitted(est: Any) -> bool:
    """True when ``est`` has a fitted attribute (a public name ending in ``_``)."""
    return any(k.endswith("_") and not k.startswith("_") for k in vars(est))


def check_is_fitted(est: Any, attributes: str | tuple[str, ...] | None = None) -> None:
    """Raise :class:`NotFittedError` unless ``fit`` (or ``load``) ran on ``est``: it has
    the fitted ``attributes`` (not None), or by default any fitted attribute."""
    if attributes is not None:
        names = (attributes,) if isinstance(attributes, str) else tuple(attributes)
        ok = all(getattr(est, a, None) is not None for a in names)
    else:
        ok = is_fitted(est)
    if not ok:
        raise NotFittedError(f"this {type(est).__name__} is not fitted: call fit() or load() first")


# ---------------------------------------------------------------------- the file format
def write_model_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (a ``kind`` plus one entry or ``models``) atomically; the format
    version and the defectforge version are added."""
    import torch

    from defectforge import __version__
    from defectforge._atomic import atomic_write_bytes

    obj = {"kind": payload["kind"], "format_version": FORMAT_VERSION, "defectforge_version": __version__,
           **{k: v for k, v in payload.items() if k != "kind"}}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def save_models(path: str | Path, models: dict[str, Estimator]) -> Path:
    """Several fitted estimators of one family (``{name: estimator}``) in one file."""
    kinds = {m.model_kind for m in models.values()}
    if len(kinds) != 1:
        raise ConfigError(f"one model file holds estimators of one family, got {sorted(kinds)}")
    return write_model_file(path, {"kind": kinds.pop(), "models": {str(k): m.to_entry() for k, m in models.items()}})


def read_model_file(path: str | Path, family: type[Estimator]) -> dict[str, Any]:
    """The checked dict in ``path`` in the current layout (older versions upgraded by the family)."""
    import torch

    path = Path(path)
    what = family.file_what
    if not path.is_file():
        raise InputError(path, f"{what} file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable defectforge {what} file (truncated or corrupt?): "
                               f"{exc.__class__.__name__}") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"not a defectforge {what} file")
    ver = obj.get("format_version")
    if obj.get("kind") == family.model_kind and ver == FORMAT_VERSION:
        return obj
    if obj.get("kind") == family.model_kind and isinstance(ver, int) and ver > FORMAT_VERSION:
        raise InputError(path, f"{what} format version {ver} was written by defectforge "
                               f"{obj.get('defectforge_version')}; this version reads up to {FORMAT_VERSION}: "
                               "upgrade defectforge")
    old = family._upgrade(obj, ver)
    if old is not None:
        return old
    if obj.get("kind") == family.model_kind or obj.get("kind") in family.legacy_kinds:
        raise InputError(path, f"{what} format version {ver} cannot be read by this version "
                               f"(reads {FORMAT_VERSION}); fit the model again")
    kind = obj.get("kind")
    raise InputError(path, f"not a defectforge {what} file (kind {kind!r}, expected {family.model_kind!r})")


def load_models(path: str | Path, family: type[Estimator], **runtime: Any) -> dict[str, Estimator]:
    """``{name: estimator}`` of a model file (``{"default": est}`` for a one-model file)."""
    obj = read_model_file(path, family)
    entries = obj["models"] if "models" in obj else {"default": obj}
    out: dict[str, Estimator] = {}
    for name, entry in entries.items():
        cls_name = entry.get("class") if isinstance(entry, dict) else None
        try:
            family.resolve_class(str(cls_name))
        except KeyError:
            raise InputError(path, f"model class {cls_name!r} is not a registered {family.file_what} "
                                   f"({family.model_kind})") from None
        except TypeError as exc:
            raise InputError(path, str(exc)) from None
        try:
            out[str(name)] = family.from_entry(entry, **runtime)
        except InputError as exc:
            if exc.path is None:  # a check inside _set_state: name the model file
                raise InputError(path, exc.problem) from None
            raise
        except ConfigError as exc:  # a parameter of the file (unknown backbone, ...): name the file
            raise InputError(path, f"model file holds an invalid setting: {exc}") from None
        except DefectforgeError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
            raise InputError(path, f"model file is incomplete ({exc.__class__.__name__}: {exc})") from None
    if not out:
        raise InputError(path, "model file holds no model")
    return out
