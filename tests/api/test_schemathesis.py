"""Property tests from the app's own OpenAPI: no 5xx, only documented answers.

Every operation is called with generated, schema-valid input and an operator
key; Schemathesis checks status codes, content types and bodies against the
schema. Examples are bounded so the suite stays quick.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from api.app import create_app
from api.security import OPERATOR, create_key
from api.store import SqlStore
from detector.alerts import OPENED, FunctionStatus, Transition, fingerprint
from dowguard.config import Settings
from ingest.events import Context
from tests.api.conftest import TestClient

MAX_EXAMPLES = 30

# The checks on one response. Left out: the ones that send probes of their
# own (auth is tested in test_auth.py) and "valid data is accepted", since a
# schema-valid request can still be refused on purpose (a made-up cursor is
# 400, a silence that matches everything is 422).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def _seeded_store() -> SqlStore:
    """An in-memory store with a few alerts and functions to read back."""
    store = SqlStore("sqlite://")
    store.create_all()
    for i in range(5):
        ctx = Context("aws", f"acct{i % 2}", "us-east-1", f"fn{i}")
        t = Transition(
            event=OPENED,
            fingerprint=fingerprint(ctx, "cost_spike"),
            kind="cost_spike",
            severity="critical" if i % 2 else "warning",
            context=ctx,
            starts_at=1000.0 + i,
            at=1000.0 + i,
            seq=1,
            cost_usd=0.5 * i,
            summary="spend 9x baseline",
            evidence={"ratio": 9.0},
        )
        store.commit([t])
        store.update_functions([FunctionStatus(ctx, 1000.0, 2.0 * i, 1.0, 3.0)])
    return store


# Built at import: Schemathesis needs the schema when pytest collects, and
# its fixture-based loader does not run on this pytest.
STORE = _seeded_store()
HEADERS = {"Authorization": f"Bearer {create_key(STORE, OPERATOR, 'fuzz')}"}
APP = create_app(Settings(), store=STORE)
CLIENT = TestClient(APP)
schema = schemathesis.openapi.from_dict(APP.openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: Any) -> None:
    # Schemathesis's own ASGI transport does not run on the installed
    # requests and urllib3, so the request goes through Starlette's client.
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)
    # The generated credentials (any spelling of the header) give way to ours.
    headers = {
        k: v for k, v in kwargs["headers"].items() if k.lower() != "authorization"
    }
    kwargs["headers"] = headers | HEADERS
    response = CLIENT.request(**kwargs)
    # The operator key must get every request past auth, to the route.
    assert response.status_code not in (401, 403), response.text
    case.validate_response(
        response, checks=CHECKS, headers=HEADERS, transport_kwargs=kwargs
    )
