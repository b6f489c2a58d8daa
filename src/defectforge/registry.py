"""One registry type for every pluggable family (timm's shape).

A family owns one :class:`Registry` (``DETECTORS``, ``GENERATORS``, ``OPERATORS``, ...)
and its members register themselves when their module is imported::

    DETECTORS = Registry("detector", builtin=("defectforge.detect.exdd",))

    @DETECTORS.register("exdd")
    class ExDD(Detector): ...

The registry never imports its members by name in code: it only knows the module names
given as ``builtin`` (imported, in order, the first time the registry is read) and an
optional entry-point group for third-party plug-ins (``name = "package.module:Object"``).
So importing a family's base module never imports its members and there are no cycles.

Lookups of an unknown name raise :class:`~defectforge.errors.ConfigError` listing the
available names, so the CLI prints them as one line.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

from defectforge.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named members of one family.

    - ``kind``: what a member is, for messages (``"detector"``, ``"3D operator"``).
    - ``builtin``: modules whose import registers the built-in members (lazy).
    - ``optional``: modules that may be missing or broken (an optional extra): a failure
      there is a warning, never an error for the built-in members.
    - ``entry_points``: an entry-point group whose objects are registered under the entry
      point's name.
    - ``base``: when given, members must be subclasses of it.
    """

    def __init__(self, kind: str, *, builtin: Sequence[str] = (), optional: Sequence[str] = (),
                 entry_points: str | None = None, base: type | None = None, lower: bool = True):
        self.kind = kind
        self._builtin = tuple(builtin)
        self._optional = tuple(optional)
        self._group = entry_points
        self._base = base
        self._lower = lower
        self._members: dict[str, T] = {}
        self._loaded = False
        self._loading = False

    # ------------------------------------------------------------------ registration
    def _key(self, name: str) -> str:
        return name.lower() if self._lower else name

    def register(self, name: str, obj: T | None = None) -> Any:
        """``@REG.register("name")`` on a class or function, or ``REG.register("name", obj)``.

        Registering a different object under a taken name raises :class:`ConfigError`;
        re-registering the same object (a module imported twice) is a no-op. A class
        gets ``name`` as its ``name`` attribute.
        """

        def deco(o: T) -> T:
            if self._base is not None and not (isinstance(o, type) and issubclass(o, self._base)):
                raise TypeError(f"register: a {self.kind} must be a {self._base.__name__} subclass, got {o!r}")
            key = self._key(name)
            old = self._members.get(key)
            if old is not None and old is not o and _qualname(old) != _qualname(o):
                raise ConfigError(f"{self.kind} name {name!r} is already registered by {_qualname(old)}")
            self._members[key] = o
            if isinstance(o, type):
                o.name = key  # type: ignore[attr-defined]
            return o

        return deco if obj is None else deco(obj)

    def _ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for mod in self._builtin:
                importlib.import_module(mod)
            for mod in self._optional:
                _import_optional(mod, self.kind)
            if self._group:
                self._load_entry_points()
            self._loaded = True
        finally:
            self._loading = False

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=self._group):
            if self._key(ep.name) in self._members:
                continue
            try:
                self.register(ep.name, ep.load())
            except Exception as exc:  # a broken plug-in must not break the built-in members
                warnings.warn(f"{self.kind} plug-in {ep.name!r} failed to load: {exc}", stacklevel=3)

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> T:
        """The member registered as ``name``; :class:`ConfigError` listing the known names."""
        self._ensure_loaded()
        try:
            return self._members[self._key(name)]
        except (KeyError, AttributeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``get(name)(*args, **kwargs)``: a new instance of a registered class."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def class_named(self, class_name: str) -> T:
        """The registered class whose ``__name__`` is ``class_name`` (how model files name
        their class); :class:`KeyError` when none is."""
        self._ensure_loaded()
        for o in self._members.values():
            if getattr(o, "__name__", None) == class_name:
                return o
        raise KeyError(class_name)

    def name_of(self, obj: Any) -> str:
        """The registered name of ``obj`` (a member or an instance of a member class)."""
        self._ensure_loaded()
        for k, o in self._members.items():
            if o is obj or (isinstance(o, type) and type(obj) is o):
                return k
        raise KeyError(_qualname(obj))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_loaded()
        return sorted(self._members)

    def items(self) -> list[tuple[str, T]]:
        self._ensure_loaded()
        return sorted(self._members.items())

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and self._key(name) in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._members)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._members)} registered)"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _import_optional(module: str, kind: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(module):
            warnings.warn(f"{kind} module {module} unavailable: {exc}", stacklevel=4)
    except Exception as exc:  # an optional backend must not break the built-in members
        warnings.warn(f"{kind} module {module} unavailable: {exc.__class__.__name__}: {exc}", stacklevel=4)


def registered(registry: Registry[T]) -> Callable[[str], Callable[[T], T]]:
    """``register = registered(REG)``: a family's short decorator name (``register_detector``)."""

    def register(name: str) -> Callable[[T], T]:
        return registry.register(name)

    return register
