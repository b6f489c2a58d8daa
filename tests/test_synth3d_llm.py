"""The OpenAI-compatible client against a tiny local server (loopback only)."""

from __future__ import annotations

import json

import pytest

from fake_chat import FakeChatServer, Reply

from defectforge.errors import DefectforgeError
from defectforge.llm import ChatClient, LLMConnectionError, LLMHTTPError, LLMMalformed, LLMRefusal, LLMTimeout
from defectforge.synth3d.describe import instructions_from_llm
from defectforge.synth3d.instructions import InstructionSet

GOOD = {"version": 1, "defects": [{"type": "scratch", "location": {"kind": "region", "name": "top"},
                                   "params": {"length": 0.1}, "count": 2}]}


class _Handler:
    """Answers by ``mode`` (set by each test); ``seen`` holds (path, body, Authorization)."""

    mode = "good"
    seen: list = []

    @classmethod
    def respond(cls, path, body, headers) -> Reply:
        cls.seen.append((path, body, headers.get("Authorization")))
        if cls.mode == "http500":
            return Reply(status=500)
        content = {"good": json.dumps(GOOD), "fenced": "```json\n" + json.dumps(GOOD) + "\n```",
                   "malformed": '{"version": 1, "defects": [', "timeout": "{}", "refusal": None,
                   "bounds": json.dumps({"defects": [{"type": "dent", "params": {"radius": 3.0}}]}),
                   "schema": json.dumps({"defects": [{"type": "melt"}]})}[cls.mode]
        return Reply(content, refusal="I cannot help with that." if cls.mode == "refusal" else None,
                     delay=1.0 if cls.mode == "timeout" else 0.0)


@pytest.fixture(scope="module")
def server():
    srv = FakeChatServer(_Handler.respond)
    yield srv.url
    srv.close()


def _client(url, timeout=5.0):
    return ChatClient(url, "test-model", api_key_env="DF_TEST_KEY", timeout=timeout)


@pytest.mark.parametrize("mode", ["good", "fenced"])
def test_good_json_is_validated(server, monkeypatch, mode):
    monkeypatch.setenv("DF_TEST_KEY", "sekret")
    _Handler.mode = mode
    _Handler.seen.clear()
    inst = _client(server).complete_json([{"role": "user", "content": "hi"}], InstructionSet)
    assert inst.defects[0].type == "scratch" and inst.defects[0].count == 2
    path, body, auth = _Handler.seen[-1]
    assert path == "/v1/chat/completions" and body["model"] == "test-model"
    assert body["response_format"] == {"type": "json_object"} and auth == "Bearer sekret"


@pytest.mark.parametrize("mode,exc,match", [
    ("malformed", LLMMalformed, "not valid JSON"),
    ("refusal", LLMRefusal, "refused"),
    ("http500", LLMHTTPError, "HTTP 500"),
    ("schema", LLMMalformed, "does not match InstructionSet"),
])
def test_failures_raise_defectforge_errors(server, mode, exc, match):
    _Handler.mode = mode
    with pytest.raises(exc, match=match) as info:
        _client(server).complete_json([{"role": "user", "content": "x"}], InstructionSet)
    assert isinstance(info.value, DefectforgeError)


def test_timeout(server):
    _Handler.mode = "timeout"
    with pytest.raises(LLMTimeout, match="within 0.2 s"):
        _client(server, timeout=0.2).chat([{"role": "user", "content": "x"}])


def test_unreachable_server():
    with pytest.raises(LLMConnectionError):
        _client("http://127.0.0.1:9/v1", timeout=1.0).chat([{"role": "user", "content": "x"}])


def test_llm_instructions_pass_the_same_validation(server):
    _Handler.mode = "good"
    inst = instructions_from_llm("two scratches on top", _client(server), part_diag=100.0)
    assert inst.defects[0].location.name == "top"
    prompt = _Handler.seen[-1][1]["messages"][0]["content"]
    assert "JSON Schema" in prompt and "100 mm" in prompt
    _Handler.mode = "bounds"
    with pytest.raises(LLMMalformed, match=r"failed validation: .*impossible size radius=3"):
        instructions_from_llm("a huge dent", _client(server))
