"""The one Registry type: lazy built-in modules, entry-point plug-ins, optional backends,
duplicate names, lookups and their one-line errors."""

from __future__ import annotations

import sys
import types
import warnings

import pytest

from defectforge.errors import ConfigError
from defectforge.registry import Registry


class Base:
    pass


def _module(name: str, body, monkeypatch) -> types.ModuleType:
    """A module that runs ``body(module)`` when imported (found by a finder that the test removes)."""
    mod = types.ModuleType(name)

    class Loader:
        def create_module(self, spec):
            return mod

        def exec_module(self, module):
            body(module)

    import importlib.machinery

    class Finder:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == name:
                return importlib.machinery.ModuleSpec(name, Loader())
            return None

    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    monkeypatch.delitem(sys.modules, name, raising=False)
    return mod


def test_builtin_modules_load_lazily_on_first_lookup(monkeypatch):
    reg: Registry = Registry("widget", builtin=("df_test_widgets_a",), base=Base)
    imported = []

    def body(module):
        imported.append(module.__name__)

        @reg.register("Spinner")
        class Spinner(Base):
            pass

        module.Spinner = Spinner

    _module("df_test_widgets_a", body, monkeypatch)
    assert imported == []  # creating the registry imports nothing
    assert reg.names() == ["spinner"] and imported == ["df_test_widgets_a"]
    cls = reg.get("SPINNER")  # names are case-insensitive
    assert cls.name == "spinner" and reg.class_named("Spinner") is cls and "spinner" in reg
    assert isinstance(reg.create("spinner"), cls) and reg.name_of(cls()) == "spinner"
    reg.get("spinner")
    assert imported == ["df_test_widgets_a"]  # imported once


def test_unknown_name_duplicates_and_wrong_type():
    reg: Registry = Registry("widget", base=Base)

    @reg.register("a")
    class A(Base):
        pass

    reg.register("a", A)  # the same object again: fine
    with pytest.raises(ConfigError, match=r"^unknown widget 'b'; available: a$"):
        reg.get("b")
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a", type("Other", (Base,), {}))
    with pytest.raises(TypeError, match="Base subclass"):
        reg.register("c", int)
    with pytest.raises(KeyError):
        reg.class_named("Missing")


def test_objects_and_functions_can_be_members():
    reg: Registry = Registry("writer")
    reg.register("csv", lambda: "csv")
    spec = {"x": 1}
    reg.register("spec", spec)
    assert reg["csv"]() == "csv" and reg["spec"] is spec and list(reg) == ["csv", "spec"] and len(reg) == 2


def test_broken_optional_module_and_plugin_only_warn(monkeypatch):
    def broken(module):
        raise RuntimeError("backend exploded")

    _module("df_test_broken_backend", broken, monkeypatch)

    class EP:
        name = "plug"

        def load(self):
            raise ImportError("plug-in missing")

    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [EP()] if group == "df.test" else [])
    reg: Registry = Registry("thing", optional=("df_test_broken_backend", "df_test_not_installed"),
                             entry_points="df.test")
    reg.register("ok", object())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reg.names() == ["ok"]
    text = " ".join(str(w.message) for w in caught)
    assert "backend exploded" in text and "plug-in missing" in text
    assert "df_test_not_installed" not in text  # an optional module that is simply absent is silent


def test_entry_point_plugins_register_under_their_name(monkeypatch):
    class Plugin(Base):
        pass

    class EP:
        name = "Fancy"

        def load(self):
            return Plugin

    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [EP()] if group == "df.test2" else [])
    reg: Registry = Registry("widget", entry_points="df.test2", base=Base)
    assert reg.get("fancy") is Plugin and Plugin.name == "fancy"


def test_family_registries_are_one_type():
    from defectforge.data.formats import EXPORT_FORMATS
    from defectforge.detect.base import DETECTORS
    from defectforge.detect3d import DETECTORS3D
    from defectforge.experiments.runner import EXPERIMENTS
    from defectforge.supervised.models import BOX_ARCHS
    from defectforge.synth2d.base import GENERATORS
    from defectforge.synth3d.operators import OPERATORS

    regs = [DETECTORS, DETECTORS3D, BOX_ARCHS, GENERATORS, OPERATORS, EXPERIMENTS, EXPORT_FORMATS]
    assert all(type(r) is Registry and len(r) > 0 for r in regs)
    assert {"exdd", "patchcore"} <= set(DETECTORS) and {"fpfh", "pointnet"} <= set(DETECTORS3D)
    assert {"mvtec", "yolo", "coco"} <= set(EXPORT_FORMATS) and "filtering-ablation" in EXPERIMENTS
