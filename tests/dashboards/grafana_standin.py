"""A stand-in for the part of Grafana's HTTP API that provisioning uses.

Grafana cannot be installed here, so the tests talk to this server through
the real grafana-client. It emulates, in memory, for one organisation:

- ``GET /api/datasources/uid/{uid}``: the datasource, or 404.
- ``POST /api/datasources``: needs ``name``, ``type`` and ``access``
  (``proxy`` or ``direct``); 409 when the name or the uid is taken.
- ``PUT /api/datasources/uid/{uid}``: replaces the datasource, same checks,
  404 when missing, 409 when a ``version`` older than the stored one is
  sent; bumps ``version``.
- ``GET /api/folders`` (all, root level), ``GET /api/folders/{uid}`` (or 404)
  and ``POST /api/folders``: needs a ``title``; 409 when the uid or, at root
  level, the title is taken; 400 for ``parentUid`` (nested folders are not
  emulated).
- ``GET /api/dashboards/uid/{uid}``: ``{"dashboard", "meta"}`` with
  ``folderUid``, ``folderTitle`` and ``version`` in the meta, or 404.
- ``POST /api/dashboards/db``: needs ``dashboard`` with a non-empty
  ``title``; a ``folderUid`` that does not exist is 404 (as Grafana's
  folder-not-found error); an existing uid without ``overwrite`` is 412
  ``version-mismatch`` unless the sent ``version`` is the stored one; the
  same title in the same folder under another uid is 412 ``name-exists``,
  or with ``overwrite`` a save over that dashboard (its id and uid).
  Saving stores ``id``, ``uid`` and a ``version`` one above the previous
  (1 when new), and answers id, uid, url, status, version and slug.

Every uid (datasource, folder, dashboard) must be at most 40 characters of
letters, digits, ``-`` and ``_`` (400 otherwise); a missing dashboard or
folder uid is generated. Every call needs ``Authorization: Bearer TOKEN``
with the server's token (401 otherwise), and a body that is a JSON object
(400 otherwise). Any other path is 404 and is recorded in ``unexpected``;
``requests`` records every call as ``(method, path)``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class ApiError(Exception):
    """An error answer: HTTP status and JSON body."""

    def __init__(self, code: int, message: str, status: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.body = {"message": message, **({"status": status} if status else {})}


@dataclass
class StoredDashboard:
    dashboard: dict[str, Any]
    folder_uid: str
    version: int


@dataclass
class GrafanaState:
    """Everything the stand-in holds; tests read it directly."""

    token: str
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, StoredDashboard] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] in ("POST", "PUT", "DELETE")]


def _check_uid(uid: Any, what: str) -> str:
    if not isinstance(uid, str) or not UID_RE.match(uid):
        raise ApiError(400, f"{what} uid {uid!r}: at most 40 of [A-Za-z0-9_-]")
    return uid


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class GrafanaStandin:
    """The emulated API; one method per route, each under the state lock."""

    def __init__(self, state: GrafanaState) -> None:
        self.state = state

    # Datasources

    def _validate_datasource(self, body: dict[str, Any], uid: str) -> None:
        for key in ("name", "type", "access"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise ApiError(400, f"datasource: {key} is required")
        if body["access"] not in ("proxy", "direct"):
            raise ApiError(400, f"datasource: access {body['access']!r} is unknown")
        for other_uid, other in self.state.datasources.items():
            if other_uid != uid and other["name"] == body["name"]:
                raise ApiError(409, "data source with the same name already exists")

    def get_datasource(self, uid: str) -> dict[str, Any]:
        if uid not in self.state.datasources:
            raise ApiError(404, "Data source not found")
        return self.state.datasources[uid]

    def create_datasource(self, body: dict[str, Any]) -> dict[str, Any]:
        uid = _check_uid(body.get("uid") or secrets.token_hex(7), "datasource")
        if uid in self.state.datasources:
            raise ApiError(409, "data source with the same uid already exists")
        self._validate_datasource(body, uid)
        stored = self._datasource_record(body, uid, self.state.new_id(), 1)
        self.state.datasources[uid] = stored
        return {
            "datasource": stored,
            "id": stored["id"],
            "name": stored["name"],
            "message": "Datasource added",
        }

    def update_datasource(self, uid: str, body: dict[str, Any]) -> dict[str, Any]:
        old = self.get_datasource(uid)
        self._validate_datasource(body, uid)
        sent = body.get("version")
        if isinstance(sent, int) and sent < old["version"]:
            raise ApiError(409, "Datasource has already been updated by someone else")
        stored = self._datasource_record(body, uid, old["id"], old["version"] + 1)
        self.state.datasources[uid] = stored
        return {
            "datasource": stored,
            "id": stored["id"],
            "name": stored["name"],
            "message": "Datasource updated",
        }

    @staticmethod
    def _datasource_record(
        body: dict[str, Any], uid: str, ds_id: int, version: int
    ) -> dict[str, Any]:
        return {
            "id": ds_id,
            "uid": uid,
            "orgId": 1,
            "name": body["name"],
            "type": body["type"],
            "access": body["access"],
            "url": body.get("url", ""),
            "basicAuth": bool(body.get("basicAuth", False)),
            "isDefault": bool(body.get("isDefault", False)),
            "jsonData": dict(body.get("jsonData") or {}),
            "secureJsonFields": {},
            "readOnly": False,
            "version": version,
        }

    # Folders

    def list_folders(self) -> list[dict[str, Any]]:
        return [
            {"id": f["id"], "uid": f["uid"], "title": f["title"]}
            for f in self.state.folders.values()
        ]

    def get_folder(self, uid: str) -> dict[str, Any]:
        if uid not in self.state.folders:
            raise ApiError(404, "folder not found")
        return self.state.folders[uid]

    def create_folder(self, body: dict[str, Any]) -> dict[str, Any]:
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ApiError(400, "folder title cannot be empty")
        if body.get("parentUid"):
            raise ApiError(400, "nested folders are not emulated")
        uid = _check_uid(body.get("uid") or secrets.token_hex(7), "folder")
        if uid in self.state.folders:
            raise ApiError(409, "a folder with the same uid already exists")
        if any(f["title"] == title for f in self.state.folders.values()):
            raise ApiError(409, "a folder with the same name already exists")
        folder = {
            "id": self.state.new_id(),
            "uid": uid,
            "title": title,
            "url": f"/dashboards/f/{uid}/{_slug(title)}",
            "version": 1,
        }
        self.state.folders[uid] = folder
        return folder

    # Dashboards

    def get_dashboard(self, uid: str) -> dict[str, Any]:
        stored = self.state.dashboards.get(uid)
        if stored is None:
            raise ApiError(404, "Dashboard not found")
        folder = self.state.folders.get(stored.folder_uid, {})
        meta = {
            "slug": _slug(stored.dashboard["title"]),
            "url": f"/d/{uid}/{_slug(stored.dashboard['title'])}",
            "folderUid": stored.folder_uid,
            "folderId": folder.get("id", 0),
            "folderTitle": folder.get("title", "Dashboards"),
            "version": stored.version,
            "isFolder": False,
        }
        return {"dashboard": stored.dashboard, "meta": meta}

    def _namesake(self, uid: str, title: str, folder_uid: str) -> str | None:
        for other_uid, other in self.state.dashboards.items():
            same_place = other.folder_uid == folder_uid
            if other_uid != uid and same_place and other.dashboard["title"] == title:
                return other_uid
        return None

    def save_dashboard(self, body: dict[str, Any]) -> dict[str, Any]:
        dash = body.get("dashboard")
        if not isinstance(dash, dict):
            raise ApiError(400, "dashboard is required")
        title = dash.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ApiError(400, "Dashboard title cannot be empty")
        folder_uid = body.get("folderUid") or ""
        if folder_uid and folder_uid not in self.state.folders:
            raise ApiError(404, "folder not found")
        uid = _check_uid(dash.get("uid") or secrets.token_hex(7), "dashboard")
        overwrite = body.get("overwrite") is True
        old = self.state.dashboards.get(uid)
        if old is not None and not overwrite and dash.get("version") != old.version:
            raise ApiError(
                412,
                "The dashboard has been changed by someone else",
                status="version-mismatch",
            )
        namesake = self._namesake(uid, title, folder_uid)
        if namesake is not None:
            if not overwrite:
                raise ApiError(
                    412,
                    "A dashboard with the same name in the folder already exists",
                    status="name-exists",
                )
            # Grafana then saves over the namesake: its id and its uid.
            uid, old = namesake, self.state.dashboards[namesake]
        version = 1 if old is None else old.version + 1
        dash_id = old.dashboard["id"] if old else self.state.new_id()
        stored = {**dash, "id": dash_id, "uid": uid, "version": version}
        self.state.dashboards[uid] = StoredDashboard(stored, folder_uid, version)
        slug = _slug(title)
        return {
            "id": dash_id,
            "uid": uid,
            "url": f"/d/{uid}/{slug}",
            "status": "success",
            "version": version,
            "slug": slug,
        }


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/api/datasources/uid/([^/]+)"), "get_datasource"),
    ("POST", re.compile(r"/api/datasources"), "create_datasource"),
    ("PUT", re.compile(r"/api/datasources/uid/([^/]+)"), "update_datasource"),
    ("GET", re.compile(r"/api/folders"), "list_folders"),
    ("GET", re.compile(r"/api/folders/([^/]+)"), "get_folder"),
    ("POST", re.compile(r"/api/folders"), "create_folder"),
    ("GET", re.compile(r"/api/dashboards/uid/([^/]+)"), "get_dashboard"),
    ("POST", re.compile(r"/api/dashboards/db"), "save_dashboard"),
]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; the state records every request."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.requests.append((method, path))
            try:
                status, body = 200, self._dispatch(method, path)
            except ApiError as exc:
                status, body = exc.code, exc.body
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _dispatch(self, method: str, path: str) -> Any:
        state = self.server.state
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            raise ApiError(401, "invalid API key")
        length = int(self.headers.get("Content-Length") or 0)
        body: Any = None
        if method in ("POST", "PUT"):
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as exc:
                raise ApiError(400, f"bad request data: {exc}") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "bad request data: expected a JSON object")
        api = GrafanaStandin(state)
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if route_method == method and match:
                args = [*match.groups(), *([body] if body is not None else [])]
                return getattr(api, name)(*args)
        state.unexpected.append((method, path))
        raise ApiError(404, "Not found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: GrafanaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class RunningStandin:
    """A started stand-in: its URL, its state, and ``close()``."""

    def __init__(self, token: str) -> None:
        self.state = GrafanaState(token=token)
        self._server = _Server(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="grafana-standin", daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
