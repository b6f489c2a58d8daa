"""The OpenAI-compatible client against a tiny local server (loopback only)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from defectforge.errors import DefectforgeError
from defectforge.llm import ChatClient, LLMConnectionError, LLMHTTPError, LLMMalformed, LLMRefusal, LLMTimeout
from defectforge.synth3d.describe import instructions_from_llm
from defectforge.synth3d.instructions import InstructionSet

GOOD = {"version": 1, "defects": [{"type": "scratch", "location": {"kind": "region", "name": "top"},
                                   "params": {"length": 0.1}, "count": 2}]}


class _Handler(BaseHTTPRequestHandler):
    mode = "good"
    seen: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body, self.headers.get("Authorization")))
        mode = type(self).mode
        if mode == "http500":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        if mode == "timeout":
            time.sleep(1.0)
        content = {"good": json.dumps(GOOD), "fenced": "```json\n" + json.dumps(GOOD) + "\n```",
                   "malformed": '{"version": 1, "defects": [', "timeout": "{}", "refusal": None,
                   "bounds": json.dumps({"defects": [{"type": "dent", "params": {"radius": 3.0}}]}),
                   "schema": json.dumps({"defects": [{"type": "melt"}]})}[mode]
        msg = {"role": "assistant", "content": content}
        if mode == "refusal":
            msg["refusal"] = "I cannot help with that."
        data = json.dumps({"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


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
