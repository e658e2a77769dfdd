"""Loopback HTTP servers the enforcement tests talk to (webhook, failures)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_AWS_ERRORS = {429: "TooManyRequestsException", 500: "ServiceException"}


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 whose replies come from :meth:`answer`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # A short poll interval so that stopping does not wait half a second.
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError


class WebhookReceiver(LoopbackServer):
    """Accepts signed calls; the first ``fail_first`` get ``fail_status``.

    It checks each signature on its own, without dowguard's signing code.
    """

    def __init__(self, secret: str, fail_first: int = 0, fail_status: int = 503):
        super().__init__()
        self.secret = secret
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.calls: list[dict[str, Any]] = []

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        stamp = headers.get("x-dowguard-timestamp", "")
        given = headers.get("x-dowguard-signature", "")
        message = stamp.encode() + b"." + body
        wanted = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(given, wanted)
        with self.lock:
            self.calls.append(
                {"valid": valid, "timestamp": stamp, "body": json.loads(body)}
            )
            failing = len(self.calls) <= self.fail_first
        if not valid:
            return 401, {}, b'{"error": "bad signature"}'
        if failing:
            return self.fail_status, {}, b'{"error": "not now"}'
        action = json.loads(body)["action"]
        reply = {"accepted": action, "replicas_before": 4}
        return 200, {"Content-Type": "application/json"}, json.dumps(reply).encode()


class FailingPlatform(LoopbackServer):
    """Answers every request with ``status`` and an AWS JSON error body."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.count = 0

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.count += 1
        code = _AWS_ERRORS.get(self.status, "ServiceException")
        payload = json.dumps({"__type": code, "message": "stand-in failure"})
        return (
            self.status,
            {"x-amzn-ErrorType": code, "Content-Type": "application/json"},
            payload.encode(),
        )


def _handler(owner: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply("GET")

        def do_PUT(self) -> None:
            self._reply("PUT")

        def do_POST(self) -> None:
            self._reply("POST")

        def do_DELETE(self) -> None:
            self._reply("DELETE")

        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = owner.answer(method, self.path, headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
