"""Prompt taxonomy/templates and the VLM prompt builder against a local chat-completions server.

The server (127.0.0.1, random port, started by the test) answers with whatever the test
queues: good JSON, malformed JSON, a refusal, an HTTP error or a stall past the timeout.
Every failure must fall back to the templates with a PromptFallbackWarning.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from defectforge.errors import ConfigError
from fake_chat import FakeChatServer, Reply
from defectforge.prompts import (EXDD_NEGATIVE, PromptFallbackWarning, VLMConfig, build_prompts, defect_types, lookup,
                                 template_prompts)
from defectforge.prompts.taxonomy import DefectType, register_defect


class _ChatServer:
    """Scripted replies, in order: ("content", text), ("refusal", text), ("http", status) or
    ("sleep", seconds: answer late with valid JSON). Default: "{}"."""

    def __init__(self):
        self.replies: list[tuple[str, object]] = []
        self._srv = FakeChatServer(self._respond)
        self.url = self._srv.url

    @property
    def requests(self) -> list[dict]:
        return [body for _, body, _ in self._srv.requests]

    @property
    def headers(self) -> list[dict]:
        return [h for _, _, h in self._srv.requests]

    def _respond(self, path, body, headers) -> Reply:
        kind, payload = self.replies.pop(0) if self.replies else ("content", "{}")
        if kind == "sleep":
            return Reply(json.dumps({"prompts": ["late"], "negative_prompt": ""}), delay=float(payload))
        if kind == "http":
            return Reply(status=int(payload))
        if kind == "refusal":
            return Reply(None, refusal=str(payload))
        return Reply(str(payload))

    def close(self):
        self._srv.close()


@pytest.fixture(scope="module")
def server():
    s = _ChatServer()
    yield s
    s.close()


def _cfg(server, **kw) -> VLMConfig:
    return VLMConfig(**{"base_url": server.url, "model": "tiny-vlm", "api_key_env": "DF_TEST_VLM_KEY",
                        "timeout": 5.0, "description": "ground steel ball screw", "n_prompts": 3, **kw})


def _defect_image() -> np.ndarray:
    img = np.full((40, 60, 3), 160, np.uint8)
    img[15:25, 20:30] = 40
    return img


# -- taxonomy and templates -------------------------------------------------------------------------
def test_templates_use_the_taxonomy():
    ps = template_prompts("pitting")
    assert ps.source == "template" and len(ps.prompts) > 3 and len(set(ps.prompts)) == len(ps.prompts)
    words = lookup("pitting").appearance
    assert all(any(w in p for w in words) for p in ps.prompts)
    assert "smooth" in ps.negative_prompt and "blurry" in ps.negative_prompt
    assert lookup("Corrosion Pits").name == "pitting"  # alias, case-insensitive
    assert "scratch" in defect_types() and EXDD_NEGATIVE == "smooth, plain, black, dark, shadow"


def test_templates_for_unknown_types_and_material():
    ps = template_prompts("weld_spatter", material="stainless steel")
    assert all("weld spatter" in p and "stainless steel" in p for p in ps.prompts)
    assert all("ground steel" not in p for p in template_prompts("pitting", material="brass").prompts)


def test_register_defect_refuses_silent_overwrite(monkeypatch):
    from defectforge.prompts import taxonomy

    monkeypatch.setattr(taxonomy, "_TAXONOMY", dict(taxonomy._TAXONOMY))  # leave the real table untouched
    d = DefectType(name="burr_test", description="a burr", materials=("steel",), appearance=("a sharp burr",))
    register_defect(d)
    assert lookup("burr_test") == d
    assert lookup("Burr-Test") == d
    with pytest.raises(ConfigError, match="already exists"):
        register_defect(d)


def test_prompt_pick_is_seeded():
    ps = template_prompts("scratch")
    a = [ps.pick(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]


# -- VLM builder --------------------------------------------------------------------------------------
def test_vlm_good_json_is_used(server, monkeypatch):
    monkeypatch.setenv("DF_TEST_VLM_KEY", "secret-123")
    reply = {"prompts": ["tiny dark corrosion pits, rough bottom", "clustered pits with bright rims", "x pits",
                         "extra"], "negative_prompt": "smooth, rust"}
    server.replies.append(("content", "```json\n" + json.dumps(reply) + "\n```"))
    with _no_fallback():
        ps = build_prompts("pitting", _cfg(server), images=[_defect_image(), _defect_image()])
    assert ps.source == "vlm"
    assert ps.prompts == reply["prompts"][:3] and ps.negative_prompt == "smooth, rust"
    req = server.requests[-1]
    assert req["model"] == "tiny-vlm"
    parts = req["messages"][1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert "ground steel ball screw" in parts[0]["text"] and "pitting" in parts[0]["text"]
    assert server.headers[-1].get("Authorization") == "Bearer secret-123"


class _no_fallback:
    """Context manager: fail if a PromptFallbackWarning is raised inside."""

    def __enter__(self):
        import warnings

        self.cm = warnings.catch_warnings(record=True)
        self.rec = self.cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self.cm.__exit__(*exc)
        bad = [w for w in self.rec if issubclass(w.category, PromptFallbackWarning)]
        assert not bad, f"unexpected fallback: {bad[0].message}"


@pytest.mark.parametrize("kind,payload,why", [
    ("content", "here are some prompts: pits, more pits", "not valid JSON"),
    ("content", json.dumps({"prompts": [], "negative_prompt": ""}), "does not match"),
    ("content", json.dumps({"prompts": ["a"], "negative_prompt": "", "extra": 1}), "does not match"),
    ("refusal", "I can't help with that.", "refused"),
    ("http", 500, "HTTP 500"),
    ("sleep", 1.5, "no reply within"),
], ids=["malformed", "empty-list", "extra-field", "refusal", "http-500", "timeout"])
def test_vlm_failures_fall_back_to_templates(server, kind, payload, why):
    server.replies.append((kind, payload))
    t0 = time.perf_counter()
    with pytest.warns(PromptFallbackWarning, match=why):
        ps = build_prompts("scratch", _cfg(server, timeout=0.4), images=[_defect_image()])
    assert ps.source == "template" and ps.prompts == template_prompts("scratch").prompts
    assert time.perf_counter() - t0 < 5


def test_vlm_unreachable_server_falls_back():
    cfg = VLMConfig(base_url="http://127.0.0.1:9/v1", model="m", timeout=0.5)
    with pytest.warns(PromptFallbackWarning):
        assert build_prompts("crack", cfg).source == "template"


def test_no_vlm_config_means_templates_without_warning():
    with _no_fallback():
        assert build_prompts("dent", None).source == "template"


def test_generator_uses_vlm_prompts_without_loading_a_model(server):
    from defectforge.synth2d.base import get_generator
    import defectforge.synth2d.diffusion  # noqa: F401  (registers inpaint-diffusion)

    server.replies.append(("content", json.dumps({"prompts": ["white marks on the wall"], "negative_prompt": "dark"})))
    g = get_generator("inpaint-diffusion", model="/nonexistent/model", preset="exdd", defect_type="stain",
                      vlm={"base_url": server.url, "model": "m", "images": []})
    ps = g.prompt_set()
    assert ps.source == "vlm" and ps.prompts == ["white marks on the wall"]
    assert ps.negative_prompt == EXDD_NEGATIVE  # the preset's negative prompt wins over the VLM's
    with pytest.raises(ConfigError):
        get_generator("inpaint-diffusion", model="x", vlm={"base_url": server.url}).prompt_set()  # no model name
