"""A small OpenAI-compatible chat client (standard library only) with strict JSON output.

Used by the 3D instruction builder (``defectforge synth3d --describe ... --llm-url``)
and, later, the 2D prompt builder. It speaks ``POST {base_url}/chat/completions``
(``base_url`` usually ends in ``/v1``), asks for a JSON object, parses the reply
strictly and validates it with a pydantic model. Every failure (timeout, connection,
HTTP error, refusal, malformed JSON, schema mismatch) raises an :class:`LLMError`
subclass, a :class:`~defectforge.errors.DefectforgeError`, so callers can fall back to a
rule-based path. The API key is read from an environment variable, never stored.

Limits (a slow, broken or hostile server cannot hold or exhaust the machine): ``timeout``
bounds the **whole call** (connect, headers and body together, not each read: a watchdog
closes the connection at the deadline), the reply body is capped at ``max_reply_bytes``
(default 8 MB, read in pieces, never whole), and JSON nested deeper than
:data:`MAX_JSON_DEPTH` is refused before it is parsed.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from defectforge.errors import DefectforgeError

M = TypeVar("M", bound=BaseModel)

#: default cap on the reply body (bytes)
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: deepest JSON nesting accepted from a server (a chat reply needs ~6; instruction sets ~8)
MAX_JSON_DEPTH = 64


class LLMError(DefectforgeError):
    """The language model could not give a usable answer."""


class LLMTimeout(LLMError):
    """No reply within the timeout."""


class LLMConnectionError(LLMError):
    """The server could not be reached."""


class LLMHTTPError(LLMError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class LLMRefusal(LLMError):
    """The model declined to answer (refusal field or content filter)."""


class LLMMalformed(LLMError):
    """The reply is not the expected JSON (or does not match the schema)."""


def _json_depth(text: str | bytes) -> int:
    """Deepest ``[``/``{`` nesting outside strings (a cheap scan, no recursion)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be too deep: skip the scan
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def loads_limited(text: str | bytes, what: str) -> Any:
    """``json.loads`` that refuses nesting deeper than :data:`MAX_JSON_DEPTH` (which would
    otherwise end in a ``RecursionError``) with :class:`LLMMalformed`."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise LLMMalformed(f"{what} is JSON nested deeper than {MAX_JSON_DEPTH} levels; refused")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth scan catches this first
        raise LLMMalformed(f"{what} is JSON nested too deeply; refused") from None


def _strip_fence(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        first_nl = t.find("\n")
        if first_nl < 0 or not t.endswith("```"):
            raise LLMMalformed("reply opens a code fence it never closes")
        t = t[first_nl + 1: -3].strip()
    return t


class ChatClient:
    """Minimal client for an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 temperature: float = 0.0, max_tokens: int = 2048, max_reply_bytes: int = MAX_REPLY_BYTES):
        if not base_url.startswith(("http://", "https://")):
            raise LLMError(f"LLM base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_reply_bytes = int(max_reply_bytes)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload``; the parsed JSON body. The whole call (connect, headers, body)
        ends by ``timeout``: a watchdog shuts the socket at the deadline, so a server that
        drips one byte at a time cannot hold the command."""
        url = urllib.parse.urlsplit(f"{self.base_url}/chat/completions")
        path = url.path + (f"?{url.query}" if url.query else "")
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        deadline = time.monotonic() + self.timeout
        fired = threading.Event()
        conn = None
        sock = None  # kept here: http.client drops conn.sock once the response owns the socket

        def watchdog() -> None:
            fired.set()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.timeout, watchdog)
        timer.daemon = True
        timeout_msg = f"LLM server {self.base_url} gave no reply within {self.timeout:g} s (limit for the whole call)"
        try:
            conn = cls(url.hostname or "", url.port, timeout=self.timeout)
            timer.start()
            conn.connect()
            sock = conn.sock
            conn.request("POST", path or "/", body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                detail = resp.read(300).decode("utf-8", errors="replace")
                raise LLMHTTPError(resp.status, f"LLM server {self.base_url} answered HTTP {resp.status}: {detail}")
            declared = resp.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_reply_bytes:
                raise LLMMalformed(f"LLM reply is {int(declared):,} bytes, over the limit of {self.max_reply_bytes:,}")
            chunks, size = [], 0
            while True:
                piece = resp.read(min(65536, self.max_reply_bytes + 1 - size))
                if not piece:
                    break
                chunks.append(piece)
                size += len(piece)
                if size > self.max_reply_bytes:
                    raise LLMMalformed(f"LLM reply is over the limit of {self.max_reply_bytes:,} bytes; refused")
            raw = b"".join(chunks)
            if fired.is_set() or time.monotonic() > deadline:
                raise LLMTimeout(timeout_msg)
        except LLMError:
            raise
        except (TimeoutError, socket.timeout) as exc:
            raise LLMTimeout(timeout_msg) from exc
        except (OSError, http.client.HTTPException) as exc:
            if fired.is_set() or time.monotonic() >= deadline:
                raise LLMTimeout(timeout_msg) from None
            raise LLMConnectionError(f"cannot reach LLM server {self.base_url}: {exc}") from exc
        finally:
            timer.cancel()
            if conn is not None:
                conn.close()
        try:
            return loads_limited(raw, f"LLM server {self.base_url} reply body")
        except LLMMalformed:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMMalformed(f"LLM server {self.base_url} returned a body that is not JSON: {exc}") from None

    def chat(self, messages: list[dict[str, str]], *, json_mode: bool = False) -> str:
        """Send ``messages``; return the assistant's text (refusals raise :class:`LLMRefusal`)."""
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                   "max_tokens": self.max_tokens}
        if json_mode:
            payload["response_format"] = {"type": "json_object"}
        data = self._post(payload)
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise LLMMalformed("LLM reply has no choices[0].message") from None
        if not isinstance(choice, dict) or not isinstance(message, dict):
            bad = message if isinstance(choice, dict) else choice
            raise LLMMalformed(f"LLM reply choices[0].message is a {type(bad).__name__}, expected an object "
                               "with 'content'")
        if message.get("refusal"):
            raise LLMRefusal(f"the model refused: {message['refusal']}")
        if choice.get("finish_reason") == "content_filter":
            raise LLMRefusal("the model's answer was blocked by its content filter")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise LLMMalformed("LLM reply has empty content")
        return content

    def complete_json(self, messages: list[dict[str, str]], schema_model: type[M]) -> M:
        """Chat in JSON mode and validate the reply with ``schema_model`` (strict JSON:
        one object, optionally inside a single ``` fence; nothing else)."""
        text = _strip_fence(self.chat(messages, json_mode=True))
        try:
            obj = loads_limited(text, "LLM reply")
        except json.JSONDecodeError as exc:
            raise LLMMalformed(f"LLM reply is not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(obj, dict):
            raise LLMMalformed(f"LLM reply is JSON {type(obj).__name__}, expected an object")
        try:
            return schema_model.model_validate(obj)
        except RecursionError:
            raise LLMMalformed(f"LLM reply is nested too deeply for {schema_model.__name__}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "value"
            raise LLMMalformed(f"LLM reply does not match {schema_model.__name__}: {where}: {first['msg']}") from None
