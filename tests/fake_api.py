"""A real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI and Gemini wire formats.

Tests point the real `openai` and `google-genai` clients at it. Each test can choose the reply
text, add latency, queue error statuses (429, 500, 401, ...) and switch to malformed replies; the
server records every request so tests can check what the client actually sent. Replies from this
server are canned: they are never model output and must never be reported as scores.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image

OPENAI_PATH = "/v1/chat/completions"
GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):generateContent$")

# Error bodies shaped like each vendor's; the 401 echoes the key back (worse than real servers,
# which mask it) so tests prove the provider scrubs it.
_GEMINI_STATUS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED",
                  500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any

    @property
    def api(self) -> str:
        return "openai" if self.path == OPENAI_PATH else "gemini"

    @property
    def api_key(self) -> str | None:
        """The key the client sent: `Authorization: Bearer ...` or `x-goog-api-key`."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[len("bearer "):]
        return self.headers.get("x-goog-api-key")


def request_texts(body: dict) -> list[str]:
    """Every text the client sent, system instruction first, in either wire format."""
    texts: list[str] = []
    if "messages" in body:
        for message in body["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            else:
                texts += [part["text"] for part in content or [] if part.get("type") == "text"]
        return texts
    system = body.get("systemInstruction") or body.get("system_instruction")
    contents = ([system] if system else []) + list(body.get("contents", []))
    for content in contents:
        texts += [part["text"] for part in content.get("parts", []) if "text" in part]
    return texts


def request_images(body: dict) -> list[tuple[str, Image.Image]]:
    """(mime type, decoded image) for every inline image the client sent, in either format."""
    found: list[tuple[str, bytes]] = []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                header, _, data = part["image_url"]["url"].partition(",")
                mime = header.removeprefix("data:").removesuffix(";base64")
                found.append((mime, base64.b64decode(data, validate=True)))
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                mime = inline.get("mimeType") or inline.get("mime_type")
                # Proto JSON takes either alphabet; google-genai sends the URL-safe one.
                data = inline["data"].replace("+", "-").replace("/", "_")
                found.append((mime, base64.urlsafe_b64decode(data)))
    return [(mime, Image.open(io.BytesIO(data))) for mime, data in found]


def _default_reply(body: dict) -> str:
    return "fake reply"


class FakeAPI:
    """The server plus the knobs a test turns. Use as a context manager; `stop` always runs."""

    def __init__(self) -> None:
        self.reply: Callable[[dict], str] = _default_reply
        self.latency: float = 0.0
        self.malformed: str | None = None  # "empty", "no_choices" or "not_json"
        self.error_message: str | None = None  # replaces the canned text of error replies
        # Sent with 429/5xx as OpenAI does; the openai SDK obeys it, which keeps retries fast.
        self.retry_after_ms: int | None = 10
        self.requests: list[RecordedRequest] = []
        self._statuses: deque[int] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def fail_with(self, *statuses: int) -> None:
        """Answer the next requests with these HTTP error statuses, in order, then normally."""
        with self._lock:
            self._statuses.extend(statuses)

    def start(self) -> "FakeAPI":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits forever on a server never started
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> "FakeAPI":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> int | None:
        with self._lock:
            self.requests.append(request)
            return self._statuses.popleft() if self._statuses else None


def _make_handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two sends: without TCP_NODELAY the body waits ~40 ms for the
        # client's delayed ACK, an artefact of this test server that no real API has.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            path = self.path.split("?", 1)[0]
            body = json.loads(raw) if raw else None
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = RecordedRequest("POST", path, headers, body)
            status = api._record(request)
            if api.latency:
                time.sleep(api.latency)
            gemini = GEMINI_PATH.match(path)
            if path != OPENAI_PATH and not gemini:
                return self._send(404, {"error": {"message": f"no route {path}", "code": 404}})
            if status is not None:
                return self._send_error(request, status)
            if api.malformed == "not_json":
                return self._send(200, b"<html>upstream proxy error</html>", "text/html")
            text = "" if api.malformed == "empty" else api.reply(body)
            if gemini:
                return self._send(200, _gemini_reply(gemini.group(2), body, text, api.malformed))
            return self._send(200, _openai_reply(body, text, api.malformed))

        def _send_error(self, request: RecordedRequest, status: int) -> None:
            messages = {401: f"Incorrect API key provided: {request.api_key}",
                        429: "Rate limit reached; slow down."}
            message = api.error_message or messages.get(status, "The server had an error.")
            if request.api == "openai":
                payload = {"error": {"message": message, "type": "fake_error", "code": str(status)}}
            else:
                payload = {"error": {"code": status, "message": message,
                                     "status": _GEMINI_STATUS.get(status, "UNKNOWN")}}
            extra = {}
            if (status == 429 or status >= 500) and api.retry_after_ms is not None:
                extra["retry-after-ms"] = str(api.retry_after_ms)
            self._send(status, payload, headers=extra)

        def _send(self, status: int, payload: Any, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (a timeout test): expected

    return Handler


def _token_counts(body: dict, text: str) -> tuple[int, int]:
    return sum(len(t.split()) for t in request_texts(body)), len(text.split())


def _openai_reply(body: dict, text: str, malformed: str | None) -> dict:
    prompt_tokens, completion_tokens = _token_counts(body, text)
    choices = [] if malformed == "no_choices" else [{
        "index": 0,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }]
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _gemini_reply(model: str, body: dict, text: str, malformed: str | None) -> dict:
    prompt_tokens, completion_tokens = _token_counts(body, text)
    candidates = [] if malformed == "no_choices" else [{
        "content": {"role": "model", "parts": [{"text": text}]},
        "finishReason": "STOP",
        "index": 0,
    }]
    return {
        "candidates": candidates,
        "usageMetadata": {"promptTokenCount": prompt_tokens,
                          "candidatesTokenCount": completion_tokens,
                          "totalTokenCount": prompt_tokens + completion_tokens},
        "modelVersion": model,
        "responseId": f"fake-{time.monotonic_ns()}",
    }
