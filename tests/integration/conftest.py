"""Fixtures the integration tests share with other folders."""

# A real Alertmanager, started once per session by the API tests' fixture.
from tests.api.conftest import alertmanager  # noqa: F401
