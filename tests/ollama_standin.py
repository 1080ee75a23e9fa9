"""A protocol-faithful Ollama stand-in: a real HTTP server speaking Ollama's /api/chat,
/api/generate, /api/tags and /api/version, streamed (NDJSON) or not, scripted per test.

Ollama's OpenAI-compatible /v1/chat/completions is served too (non-streaming).

Each chat or generate request takes the next step of the script (then the default: echo the
last user message back): ``Reply(text)``, ``Status(code, error)``, ``Slow(seconds, text)``,
``Garbage()``. A request for a model the stand-in does not have gets Ollama's 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    text: str


@dataclass(frozen=True)
class Status:
    code: int
    error: str = "internal error"


@dataclass(frozen=True)
class Slow:
    seconds: float
    text: str


@dataclass(frozen=True)
class Garbage:
    body: bytes = b"<html>502 Bad Gateway</html>"


Step = Reply | Status | Slow | Garbage
VERSION = "0.6.8"


class OllamaStandIn:
    def __init__(self, models: tuple[str, ...] = ("llama3.2:3b",)) -> None:
        self.models = models
        self.script: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _next(self, default: str) -> Step:
        with self._lock:
            return self.script.pop(0) if self.script else Reply(default)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 1700000000, "owned_by": "library"}
                        for m in standin.models]})
                elif self.path == "/api/version":
                    self._json(200, {"version": VERSION})
                elif self.path == "/api/tags":
                    now = datetime.now(UTC).isoformat()
                    self._json(200, {"models": [
                        {"name": m, "model": m, "modified_at": now, "size": 2019393189, "digest": "a80c4f17acd5",
                         "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B",
                                     "quantization_level": "Q4_K_M"}} for m in standin.models]})
                else:
                    self._json(404, {"error": "404 page not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._json(400, {"error": "invalid JSON"})
                    return
                standin.requests.append({"path": self.path, **request})
                if self.path not in ("/api/chat", "/api/generate", "/v1/chat/completions"):
                    self._json(404, {"error": "404 page not found"})
                    return
                model = request.get("model", "")
                if model not in standin.models and f"{model}:latest" not in standin.models:
                    self._json(404, {"error": f"model '{model}' not found"})
                    return
                if self.path in ("/api/chat", "/v1/chat/completions"):
                    users = [m.get("content", "") for m in request.get("messages", []) if m.get("role") == "user"]
                    default = users[-1] if users else ""
                else:
                    default = request.get("prompt", "")
                step = standin._next(default)
                if isinstance(step, Status):
                    self._json(step.code, {"error": step.error})
                    return
                if isinstance(step, Garbage):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(step.body)))
                    self.end_headers()
                    self.wfile.write(step.body)
                    return
                if isinstance(step, Slow):
                    time.sleep(step.seconds)
                text = step.text
                if self.path == "/v1/chat/completions":
                    self._json(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                                     "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                         "role": "assistant", "content": text}}],
                                     "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                                               "total_tokens": 10 + len(text.split())}})
                    return
                self._answer(request, model, text)

            def _answer(self, request: dict[str, Any], model: str, text: str) -> None:
                chat = self.path == "/api/chat"
                created = datetime.now(UTC).isoformat()

                def piece(content: str, done: bool) -> dict[str, Any]:
                    body: dict[str, Any] = {"model": model, "created_at": created, "done": done}
                    if chat:
                        body["message"] = {"role": "assistant", "content": content}
                    else:
                        body["response"] = content
                    if done:
                        body.update(done_reason="stop", total_duration=1_000_000, load_duration=100_000,
                                    prompt_eval_count=10, eval_count=len(text.split()), eval_duration=500_000)
                    return body

                if request.get("stream", True) is False:
                    self._json(200, piece(text, True))
                    return
                # Ollama streams NDJSON: one object per token or so, then a closing "done" object
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                words = text.split(" ")
                for n, word in enumerate(words):
                    self._chunk(json.dumps(piece(word + (" " if n < len(words) - 1 else ""), False)) + "\n")
                self._chunk(json.dumps(piece("", True)) + "\n")
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, line: str) -> None:
                data = line.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        return Handler


@contextmanager
def ollama_standin(models: tuple[str, ...] = ("llama3.2:3b",)) -> Iterator[OllamaStandIn]:
    standin = OllamaStandIn(models)
    thread = threading.Thread(target=standin.server.serve_forever, name="ollama-standin", daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        standin.server.shutdown()
        standin.server.server_close()
