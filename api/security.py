"""API keys and roles, and the middleware that checks them before anything else.

Keys are random secrets shown once; only their SHA-256 is stored. The check
runs as ASGI middleware, ahead of routing and body parsing, so a request
without a valid key gets 401 (and one with too low a role 403) whatever else
is wrong with it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.store import SqlStore
from dowguard.errors import ConfigError, StorageError

logger = logging.getLogger(__name__)

VIEWER = "viewer"
OPERATOR = "operator"
ADMIN = "admin"
ROLE_RANK = {VIEWER: 0, OPERATOR: 1, ADMIN: 2}
ROLES = tuple(ROLE_RANK)

#: Paths anyone may call: a load balancer's probes carry no key.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
#: Methods that change nothing; every other method needs an operator.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

KEY_PREFIX = "dgk_"
#: The key accepted in development mode only, never otherwise.
DEV_KEY = "dgk_dev_insecure"
# Limitation: a revoked key works up to KEY_CACHE_S longer where it was just used.
KEY_CACHE_S = 5.0
KEY_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name and role."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def new_key() -> str:
    """A fresh API key: a prefix to recognise it and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(store: SqlStore, role: str, name: str = "") -> str:
    """Store a new key with ``role`` and return the secret (shown only once)."""
    if role not in ROLE_RANK:
        raise ConfigError(f"api key role {role!r}: expected one of {', '.join(ROLES)}")
    key = new_key()
    row = store.add_api_key(name or f"{role}-key", role, hash_key(key))
    logger.info("api key created id=%d name=%s role=%s", row.id, row.name, role)
    return key


class KeyResolver:
    """Finds the principal of a key, with a short cache in front of the store."""

    def __init__(
        self,
        store: SqlStore,
        dev_mode: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.dev_mode = dev_mode
        self.clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> Principal | None:
        if self.dev_mode and hmac.compare_digest(key, DEV_KEY):
            return Principal("dev", ADMIN)
        with self._lock:
            hit = self._cache.get(hash_key(key))
        if hit is not None and hit[1] > self.clock():
            return hit[0]
        return None

    def lookup(self, key: str) -> Principal | None:
        """The principal of ``key``, or None for an unknown or revoked key."""
        found = self.cached(key)
        if found is not None:
            return found
        digest = hash_key(key)
        row = self.store.find_api_key(digest)
        if row is None:
            return None
        principal = Principal(row.name, row.role)
        with self._lock:
            if len(self._cache) >= KEY_CACHE_SIZE:
                self._cache.clear()
            self._cache[digest] = (principal, self.clock() + KEY_CACHE_S)
        return principal


def error_body(status: int, code: str, message: str) -> bytes:
    """The one error document of the API."""
    return orjson.dumps({"status": status, "code": code, "message": message})


def required_role(method: str) -> str:
    return VIEWER if method in SAFE_METHODS else OPERATOR


class AuthMiddleware:
    """Refuses requests without a valid key (401) or a high enough role (403).

    The principal is put in the request state for the routes.
    """

    def __init__(self, app: ASGIApp, resolver: KeyResolver) -> None:
        self.app = app
        self.resolver = resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        key = _bearer(scope)
        if key is None:
            await _refuse(send, 401, "unauthorized", "a bearer API key is required")
            return
        principal = self.resolver.cached(key)
        if principal is None:
            try:
                principal = await anyio.to_thread.run_sync(self.resolver.lookup, key)
            except StorageError as exc:
                logger.warning("api key lookup failed error=%s", exc)
                await _refuse(send, 503, "storage_unavailable", "cannot check keys")
                return
        if principal is None:
            await _refuse(send, 401, "unauthorized", "unknown or revoked API key")
            return
        role = required_role(scope["method"])
        if not principal.allows(role):
            await _refuse(
                send,
                403,
                "forbidden",
                f"{scope['method']} needs role {role}; key {principal.name!r}"
                f" has role {principal.role}",
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = error_body(status, code, message)
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="dowguard"'))
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
