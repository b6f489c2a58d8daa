"""Issue 18 items 8 and 9, LLM replies: a ``message`` that is a string, deeply nested JSON, a
server that drips bytes (the timeout bounds the whole call) and a huge reply (capped, never read
whole) are :class:`LLMError` s, never tracebacks or hangs; the CLI falls back or prints one line."""

from __future__ import annotations

import json
import time

import pytest
from badinput_kit import invoke, one_line_error
from fake_chat import FakeChatServer, Reply

from defectforge.llm import ChatClient, LLMMalformed, LLMTimeout


class _Mode:
    reply = Reply()


@pytest.fixture(scope="module")
def server():
    srv = FakeChatServer(lambda path, body, headers: _Mode.reply)
    yield srv.url
    srv.close()


def _client(url, timeout=5.0, **kw):
    return ChatClient(url, "m", api_key_env="", timeout=timeout, **kw)


def _completion(message) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()


def test_message_is_a_string(server):
    _Mode.reply = Reply(raw=_completion("hello"))
    with pytest.raises(LLMMalformed, match=r"choices\[0\].message is a str"):
        _client(server).chat([{"role": "user", "content": "x"}])


def test_choice_is_a_string(server):
    _Mode.reply = Reply(raw=json.dumps({"choices": ["hello"]}).encode())
    with pytest.raises(LLMMalformed, match="no choices|is a str"):
        _client(server).chat([{"role": "user", "content": "x"}])


def test_deeply_nested_body(server):
    _Mode.reply = Reply(raw=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(LLMMalformed, match="nested deeper than 64"):
        _client(server).chat([{"role": "user", "content": "x"}])


def test_deeply_nested_content(server):
    from defectforge.synth3d.instructions import InstructionSet

    _Mode.reply = Reply(content='{"defects": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(LLMMalformed, match="nested deeper"):
        _client(server).complete_json([{"role": "user", "content": "x"}], InstructionSet)


def test_timeout_bounds_the_whole_call(server):
    """One byte every 0.1 s: each read is quick, the call as a whole is not."""
    _Mode.reply = Reply(content="{}", trickle=0.1)
    t = time.monotonic()
    with pytest.raises(LLMTimeout, match="within 0.5 s"):
        _client(server, timeout=0.5).chat([{"role": "user", "content": "x"}])
    assert time.monotonic() - t < 3.0


def test_reply_size_is_capped(server):
    _Mode.reply = Reply(content="x" * 200_000)
    with pytest.raises(LLMMalformed, match="over the limit of 100,000"):
        _client(server, max_reply_bytes=100_000).chat([{"role": "user", "content": "x"}])
    _Mode.reply = Reply(content="x" * 1000)
    assert _client(server, max_reply_bytes=100_000).chat([{"role": "user", "content": "x"}]) == "x" * 1000


@pytest.mark.parametrize("reply", [
    Reply(raw=_completion("a string")),
    Reply(raw=b"[" * 100_000),
    Reply(content="{" * 10_000),
])
def test_synth3d_llm_falls_back_on_bad_replies(server, tmp_path, reply):
    _Mode.reply = reply
    res = invoke("synth3d", "part:flange", "--describe", "a dent on the top face", "--n", "1", "--points", "2000",
                 "--out", tmp_path / "o", "--llm-url", server)
    assert res.exit_code == 0, res.output
    assert "using the rule-based parser" in " ".join(res.output.split()) and "Traceback" not in res.output
    assert (tmp_path / "o" / "manifest.csv").is_file()


def test_diffusion_prompts_vlm_bad_reply_one_line(server, tmp_path):
    _Mode.reply = Reply(raw=_completion("a string"))
    res = invoke("diffusion", "prompts", "pitting", "--vlm-url", server, "--vlm-model", "m")
    if res.exit_code == 0:  # a fallback to the templates is a correct result too
        assert "Traceback" not in res.output
    else:
        one_line_error(res, "message is a str")
