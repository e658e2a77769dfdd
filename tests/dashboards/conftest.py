"""Fixtures of the dashboard tests: the Grafana stand-in and its client."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from grafana_client.api import GrafanaApi

from tests.dashboards.grafana_standin import RunningStandin


@pytest.fixture
def grafana() -> Iterator[RunningStandin]:
    server = RunningStandin(token=secrets.token_hex(16))
    yield server
    server.close()


@pytest.fixture
def grafana_api(grafana: RunningStandin) -> GrafanaApi:
    api: GrafanaApi = GrafanaApi.from_url(grafana.url, credential=grafana.state.token)
    return api
