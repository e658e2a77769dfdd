"""Keys and roles: 401 and 403 come first, on every route the schema lists."""

from __future__ import annotations

import pytest

from api.app import create_app
from api.security import (
    ADMIN,
    DEV_KEY,
    KEY_CACHE_S,
    OPERATOR,
    VIEWER,
    KeyResolver,
    Principal,
    create_key,
    hash_key,
)
from api.store import SqlStore
from dowguard.config import Settings
from tests.api.conftest import Api, FakeClock, TestClient

# A value for each path parameter: well formed, naming nothing that exists.
PATH_VALUES = {
    "fingerprint": "0123456789abcdef",
    "silence_id": "0" * 32,
    "context_key": "aws/1/us-east-1/fn/$LATEST",
    "action_id": "0" * 32,
}
UNSAFE = {"post", "put", "patch", "delete"}


def operations(api: Api) -> list[tuple[str, str]]:
    spec = api.client.app.openapi()  # type: ignore[attr-defined]
    found = []
    for path, item in spec["paths"].items():
        for method in item:
            url = path
            for name, value in PATH_VALUES.items():
                url = url.replace("{" + name + "}", value)
            found.append((method, url))
    return found


def test_the_schema_lists_every_route(api: Api) -> None:
    ops = operations(api)
    assert len([m for m, _ in ops if m in UNSAFE]) >= 9
    assert ("get", "/healthz") in ops


def test_no_key_is_401_on_every_route_but_the_probes(api: Api) -> None:
    for method, url in operations(api):
        if url in ("/healthz", "/readyz"):
            continue
        # A body that is not even JSON: the key is checked before the body.
        r = api.client.request(method, url, content=b"{", headers={"x": "y"})
        assert r.status_code == 401, (method, url, r.text)
        assert r.json()["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_an_unknown_or_malformed_key_is_401(api: Api) -> None:
    for header in ("Bearer dgk_nope", "Basic abc", "Bearer", "bearer  "):
        r = api.client.get("/api/v1/alerts", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_a_viewer_key_is_403_on_every_state_changing_route(api: Api) -> None:
    unsafe = [(m, u) for m, u in operations(api) if m in UNSAFE]
    for method, url in unsafe:
        r = api.client.request(method, url, content=b"{", headers=api.auth(VIEWER))
        assert r.status_code == 403, (method, url, r.text)
        assert r.json()["code"] == "forbidden"


def test_a_viewer_reads_and_an_operator_writes(api: Api) -> None:
    for method, url in operations(api):
        if method != "get" or url in ("/healthz", "/readyz"):
            continue
        r = api.client.get(url, headers=api.auth(VIEWER))
        assert r.status_code in (200, 404), (url, r.text)
    for role in (OPERATOR, ADMIN):
        r = api.client.post(
            "/api/v1/alerts/0123456789abcdef/ack", headers=api.auth(role)
        )
        assert r.status_code == 404


def test_unknown_paths_need_a_key_before_they_are_404(api: Api) -> None:
    assert api.client.get("/api/v1/nothing").status_code == 401
    r = api.client.get("/api/v1/nothing", headers=api.auth(VIEWER))
    assert r.status_code == 404


def test_a_revoked_key_stops_working(
    tmp_path_factory: pytest.TempPathFactory, clock: FakeClock
) -> None:
    path = tmp_path_factory.mktemp("keys") / "k.db"
    store = SqlStore(f"sqlite:///{path}", clock=clock)
    store.upgrade()
    row = store.add_api_key("ci", VIEWER, hash_key("dgk_secret"))
    store.revoke_api_key(row.id)
    client = TestClient(create_app(Settings(), store=store))
    r = client.get("/api/v1/alerts", headers={"Authorization": "Bearer dgk_secret"})
    assert r.status_code == 401
    assert store.find_api_key(hash_key("dgk_secret")) is None
    assert [k.key_hash for k in store.list_api_keys()] == [hash_key("dgk_secret")]
    store.close()


def test_a_revoked_key_stops_working_once_its_cache_entry_expires(
    tmp_path_factory: pytest.TempPathFactory, clock: FakeClock
) -> None:
    path = tmp_path_factory.mktemp("keys") / "k.db"
    store = SqlStore(f"sqlite:///{path}")
    store.upgrade()
    key = create_key(store, VIEWER, "ci")
    resolver = KeyResolver(store, clock=clock)
    assert resolver.lookup(key) == Principal("ci", VIEWER)
    store.revoke_api_key(store.list_api_keys()[0].id)
    # The documented grace: a verified key is trusted for KEY_CACHE_S.
    clock.advance(KEY_CACHE_S - 0.5)
    assert resolver.cached(key) == Principal("ci", VIEWER)
    clock.advance(1.0)
    assert resolver.cached(key) is None
    assert resolver.lookup(key) is None
    store.close()


def test_whoami_names_the_key_and_its_role(api: Api) -> None:
    assert api.client.get("/api/v1/whoami").status_code == 401
    r = api.client.get("/api/v1/whoami", headers=api.auth(OPERATOR))
    assert r.json() == {"name": "operator-test", "role": OPERATOR}


@pytest.mark.parametrize("dev_mode", [False, True])
def test_the_dev_key_works_only_in_dev_mode(api: Api, dev_mode: bool) -> None:
    client = TestClient(create_app(Settings(dev_mode=dev_mode), store=api.store))
    r = client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {DEV_KEY}"})
    assert r.status_code == (200 if dev_mode else 401)


def test_keys_are_stored_only_as_hashes(api: Api) -> None:
    stored = {k.key_hash for k in api.store.list_api_keys()}
    assert stored == {hash_key(k) for k in api.keys.values()}
    assert not stored & set(api.keys.values())


def test_keys_create_prints_a_working_key_on_its_last_line(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from dowguard.cli import main

    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'k.db'}"
    argv = ["keys", "--database-url", url, "create", "--role", "operator"]
    assert main([*argv, "--name", "deploy-bot"]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    assert key.startswith("dgk_")
    store = SqlStore(url)
    client = TestClient(create_app(Settings(), store=store))
    r = client.post(
        "/api/v1/alerts/0123456789abcdef/ack",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 404
    assert main(["keys", "--database-url", url, "list"]) == 0
    assert "deploy-bot" in capsys.readouterr().out
    store.close()
