"""A small OpenAI-compatible chat client (standard library only) with strict JSON output.

Used by the 3D instruction builder (``defectforge synth3d --describe ... --llm-url``)
and, later, the 2D prompt builder. It speaks ``POST {base_url}/chat/completions``
(``base_url`` usually ends in ``/v1``), asks for a JSON object, parses the reply
strictly and validates it with a pydantic model. Every failure (timeout, connection,
HTTP error, refusal, malformed JSON, schema mismatch) raises an :class:`LLMError`
subclass, a :class:`~defectforge.errors.DefectforgeError`, so callers can fall back to a
rule-based path. The API key is read from an environment variable, never stored.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from defectforge.errors import DefectforgeError

M = TypeVar("M", bound=BaseModel)


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
                 temperature: float = 0.0, max_tokens: int = 2048):
        if not base_url.startswith(("http://", "https://")):
            raise LLMError(f"LLM base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.temperature = temperature
        self.max_tokens = max_tokens

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(payload).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", errors="replace")
            raise LLMHTTPError(exc.code, f"LLM server {self.base_url} answered HTTP {exc.code}: {detail}") from None
        except (TimeoutError, socket.timeout) as exc:
            raise LLMTimeout(f"LLM server {self.base_url} gave no reply within {self.timeout:g} s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise LLMTimeout(f"LLM server {self.base_url} gave no reply within {self.timeout:g} s") from exc
            raise LLMConnectionError(f"cannot reach LLM server {self.base_url}: {exc.reason}") from exc
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
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
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LLMMalformed(f"LLM reply is not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(obj, dict):
            raise LLMMalformed(f"LLM reply is JSON {type(obj).__name__}, expected an object")
        try:
            return schema_model.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "value"
            raise LLMMalformed(f"LLM reply does not match {schema_model.__name__}: {where}: {first['msg']}") from None
