"""The webhook hook: posts signed throttle and release requests to a receiver."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from detector.enforcement.base import HookError
from ingest.events import Context

logger = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Dowguard-Timestamp"
SIGNATURE_HEADER = "X-Dowguard-Signature"
#: How much of a receiver's answer is parsed and kept in the audit trail.
MAX_BODY_CHARS = 4096


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 signature of one request."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class WebhookHook:
    """Sends throttle and release requests to one URL.

    The body is JSON; ``X-Dowguard-Timestamp`` carries the epoch seconds and
    ``X-Dowguard-Signature`` the hex HMAC-SHA256 of ``timestamp + "." +
    body`` under the shared secret, so a receiver can refuse forged or
    replayed calls. A 2xx answer is success; its status and body are what a
    throttle returns as the previous state, and a release sends that back.
    Each call is one attempt: the enforcement service does the retrying.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ValueError("webhook hook: url is empty")
        if not secret:
            raise ValueError("webhook hook: secret is empty")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout_s)
        # The receiver's last answer per context, and the answer to the
        # throttle it still holds, since a webhook has nothing to read back.
        self._last: dict[Context, dict[str, Any]] = {}
        self._held: dict[Context, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> dict[str, Any]:
        answer = self._post(
            context, {"action": "throttle", "reason": reason, "loop": loop}
        )
        with self._lock:
            return dict(self._held.setdefault(context, answer))

    def release(self, context: Context, previous: dict[str, Any]) -> None:
        self._post(context, {"action": "release", "previous": previous})
        with self._lock:
            self._held.pop(context, None)

    def read(self, context: Context) -> dict[str, Any]:
        # Limitation: the receiver is not asked; this is its last answer here.
        with self._lock:
            last = self._last.get(context)
            return {
                "throttled": context in self._held,
                "last_answer": dict(last) if last is not None else None,
            }

    def close(self) -> None:
        self._client.close()

    def _post(self, context: Context, fields: dict[str, Any]) -> dict[str, Any]:
        payload = {"context": context._asdict(), "key": context.key().decode()}
        payload.update(fields)
        body = orjson.dumps(payload)
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
        }
        action = fields["action"]
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise HookError(
                f"webhook {action} of {context.function} to {self.url}:"
                f" no answer: {exc!r}",
                transient=True,
                detail={"error": type(exc).__name__},
            ) from exc
        answer = {"status": response.status_code, "body": _body(response)}
        with self._lock:
            self._last[context] = answer
        if not response.is_success:
            status = response.status_code
            raise HookError(
                f"webhook {action} of {context.function} to {self.url}:"
                f" receiver answered {status}",
                transient=status in (408, 425, 429) or status >= 500,
                detail=answer,
            )
        logger.info(
            "webhook sent action=%s function=%s status=%d",
            action,
            context.function,
            response.status_code,
        )
        return answer


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    if len(response.content) > MAX_BODY_CHARS:
        return response.text[:MAX_BODY_CHARS]
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text
