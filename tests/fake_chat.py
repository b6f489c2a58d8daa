"""A fake OpenAI-compatible ``/v1/chat/completions`` endpoint on 127.0.0.1 for tests.

The test supplies ``respond(path, body, headers) -> Reply``; the server records every request
and answers with the reply's HTTP status, content, refusal or delay. Shared by the LLM client
tests (3D instructions) and the VLM prompt-builder tests.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    content: str | None = "{}"
    status: int = 200
    refusal: str | None = None
    delay: float = 0.0
    raw: bytes | None = None  # send these bytes as the whole body instead of a chat completion
    trickle: float = 0.0  # seconds between single bytes of the body (a slow-drip server)


class FakeChatServer:
    """Start with ``FakeChatServer(respond)``; ``.url`` is the base URL (``.../v1``)."""

    def __init__(self, respond: Callable[[str, dict, dict], Reply]):
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                headers = dict(self.headers)
                srv.requests.append((self.path, body, headers))
                reply = respond(self.path, body, headers)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    if reply.status != 200:
                        self.send_response(reply.status)
                        self.end_headers()
                        self.wfile.write(b"error")
                        return
                    msg = {"role": "assistant", "content": reply.content}
                    if reply.refusal is not None:
                        msg["refusal"] = reply.refusal
                    data = reply.raw if reply.raw is not None else json.dumps(
                        {"id": "x", "object": "chat.completion",
                         "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if reply.trickle:
                        for k in range(len(data)):
                            self.wfile.write(data[k:k + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
