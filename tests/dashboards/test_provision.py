"""Provisioning through the real grafana-client against the Grafana stand-in."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards import cli
from dashboards.provision import ProvisionError, load_dashboards, provision
from tests.dashboards.grafana_standin import RunningStandin

PROM = "http://prometheus.test:9090"


def _dashboard_uids() -> set[str]:
    return {d["uid"] for d in load_dashboards()}


def test_provision_creates_datasource_folder_and_dashboards(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    report = provision(grafana_api, PROM)

    assert report.datasource == "created"
    assert report.folder == "created"
    assert report.dashboards == dict.fromkeys(sorted(_dashboard_uids()), "created")
    ds = grafana.state.datasources["dowguard-prom"]
    assert (ds["type"], ds["url"], ds["access"]) == ("prometheus", PROM, "proxy")
    folder = grafana.state.folders[report.folder_uid]
    assert folder["title"] == "dowguard"
    assert set(grafana.state.dashboards) == _dashboard_uids()
    for stored in grafana.state.dashboards.values():
        assert stored.folder_uid == report.folder_uid
        assert stored.version == 1
        variables = {v["name"]: v for v in stored.dashboard["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == "dowguard-prom"
    assert grafana.state.unexpected == []


def test_provision_twice_writes_nothing_the_second_time(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    provision(grafana_api, PROM)
    writes_after_first = len(grafana.state.writes())

    report = provision(grafana_api, PROM)

    assert not report.changed()
    assert report.datasource == "unchanged"
    assert report.folder == "found"
    assert set(report.dashboards.values()) == {"unchanged"}
    assert len(grafana.state.writes()) == writes_after_first
    assert {s.version for s in grafana.state.dashboards.values()} == {1}
    assert grafana.state.datasources["dowguard-prom"]["version"] == 1


def test_provision_updates_datasource_whose_url_changed(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    provision(grafana_api, PROM)
    # Someone added a setting by hand; it must survive the update.
    grafana.state.datasources["dowguard-prom"]["jsonData"]["queryTimeout"] = "30s"

    report = provision(grafana_api, "http://other-prometheus:9090")

    assert report.datasource == "updated"
    assert set(report.dashboards.values()) == {"unchanged"}
    ds = grafana.state.datasources["dowguard-prom"]
    assert ds["url"] == "http://other-prometheus:9090"
    assert ds["version"] == 2
    assert ds["jsonData"]["queryTimeout"] == "30s"
    assert ds["jsonData"]["httpMethod"] == "POST"


def test_provision_overwrites_dashboard_edited_in_grafana(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    provision(grafana_api, PROM)
    stored = grafana.state.dashboards["dowguard-overview"]
    stored.dashboard["panels"] = stored.dashboard["panels"][:1]

    report = provision(grafana_api, PROM)

    assert report.dashboards["dowguard-overview"] == "updated"
    assert report.dashboards["dowguard-function"] == "unchanged"
    stored = grafana.state.dashboards["dowguard-overview"]
    assert stored.version == 2
    builtin = next(d for d in load_dashboards() if d["uid"] == "dowguard-overview")
    assert len(stored.dashboard["panels"]) == len(builtin["panels"])


def test_provision_moves_dashboard_back_into_its_folder(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    report = provision(grafana_api, PROM)
    grafana.state.dashboards["dowguard-function"].folder_uid = ""

    again = provision(grafana_api, PROM)

    assert again.dashboards["dowguard-function"] == "updated"
    assert grafana.state.dashboards["dowguard-function"].folder_uid == (
        report.folder_uid
    )


def test_provision_uses_existing_folder_with_the_same_title(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    folders: Any = grafana_api.folder  # grafana-client's elements are untyped
    made_by_hand = folders.create_folder("Cost guard", uid="hand-made-1")

    report = provision(grafana_api, PROM, folder_title="Cost guard")

    assert (report.folder, report.folder_uid) == ("found", made_by_hand["uid"])
    assert len(grafana.state.folders) == 1
    folders = {s.folder_uid for s in grafana.state.dashboards.values()}
    assert folders == {"hand-made-1"}


def test_provision_with_wrong_token_raises_provision_error(
    grafana: RunningStandin,
) -> None:
    api = GrafanaApi.from_url(grafana.url, credential="not-the-token")

    with pytest.raises(ProvisionError, match=r"401|Unauthorized"):
        provision(api, PROM)

    assert grafana.state.datasources == {}


def test_provision_refuses_invalid_dashboards_before_any_call(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    broken = copy.deepcopy(load_dashboards())
    broken[0]["panels"][1]["gridPos"] = dict(broken[0]["panels"][0]["gridPos"])

    with pytest.raises(ProvisionError, match="overlaps"):
        provision(grafana_api, PROM, dashboards=broken)

    assert grafana.state.requests == []


def test_provision_reports_a_datasource_name_taken_by_another_uid(
    grafana: RunningStandin, grafana_api: GrafanaApi
) -> None:
    datasources: Any = grafana_api.datasource
    datasources.create_datasource(
        {
            "name": "dowguard Prometheus",
            "uid": "someone-else",
            "type": "prometheus",
            "access": "proxy",
            "url": PROM,
        }
    )

    with pytest.raises(ProvisionError, match="same name"):
        provision(grafana_api, PROM)


# The stand-in's own rules: a provisioning test is only worth what they are.


def _save(api: GrafanaApi, dash: dict[str, Any], **body: Any) -> Any:
    dashboards: Any = api.dashboard
    return dashboards.update_dashboard({"dashboard": dash, **body})


def test_standin_refuses_dashboard_in_missing_folder(grafana_api: GrafanaApi) -> None:
    dash = {"uid": "abcdefgh", "title": "t"}
    with pytest.raises(GrafanaClientError) as caught:
        _save(grafana_api, dash, folderUid="nope", overwrite=True)
    assert caught.value.status_code == 404


def test_standin_refuses_uid_longer_than_40(grafana_api: GrafanaApi) -> None:
    with pytest.raises(GrafanaClientError) as caught:
        _save(grafana_api, {"uid": "u" * 41, "title": "t"}, overwrite=True)
    assert caught.value.status_code == 400
    _save(grafana_api, {"uid": "u" * 40, "title": "t"}, overwrite=True)


def test_standin_overwrite_rules_and_version_bump(grafana_api: GrafanaApi) -> None:
    first = _save(grafana_api, {"uid": "abcdefgh", "title": "t"})
    assert first["version"] == 1
    with pytest.raises(GrafanaClientError) as caught:
        _save(grafana_api, {"uid": "abcdefgh", "title": "t", "version": 0})
    assert caught.value.status_code == 412
    same_version = _save(grafana_api, {"uid": "abcdefgh", "title": "t", "version": 1})
    forced = _save(grafana_api, {"uid": "abcdefgh", "title": "t"}, overwrite=True)
    assert (same_version["version"], forced["version"]) == (2, 3)
    with pytest.raises(GrafanaClientError) as caught:
        _save(grafana_api, {"uid": "other-uid", "title": "t"})
    assert caught.value.response["status"] == "name-exists"


def test_standin_needs_the_bearer_token(grafana: RunningStandin) -> None:
    api = GrafanaApi.from_url(grafana.url, credential=("admin", "admin"))
    with pytest.raises(GrafanaClientError) as caught:
        api.folder.get_all_folders()
    assert caught.value.status_code == 401


# The command line


def test_cli_provision_prints_what_it_did(
    grafana: RunningStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["dashboards", "provision", "--grafana-url", grafana.url]
    argv += ["--token", grafana.state.token, "--prometheus-url", PROM]

    assert cli.main(argv) == 0
    assert cli.main(argv) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "dashboard dowguard-overview: created" in lines
    assert "dashboard dowguard-overview: unchanged" in lines
    assert set(grafana.state.dashboards) == _dashboard_uids()


def test_cli_provision_reads_token_from_environment(
    grafana: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.TOKEN_ENV, grafana.state.token)
    argv = ["dashboards", "provision", "--grafana-url", grafana.url]

    assert cli.main([*argv, "--prometheus-url", PROM]) == 0
    assert "dowguard-prom" in grafana.state.datasources


def test_cli_validate_accepts_builtin_and_rejects_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dashboards", "validate"]) == 0
    broken = load_dashboards()[0]
    del broken["panels"][0]["targets"][0]["refId"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))

    assert cli.main(["dashboards", "validate", str(path)]) == 1
    assert "refId is missing" in capsys.readouterr().err


def test_cli_validate_reports_bad_json_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"uid": "abcdefgh",\n "title": }')

    assert cli.main(["dashboards", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "line 2" in err
