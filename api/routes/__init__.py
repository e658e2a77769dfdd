"""One router per resource; shared parameter types and documented failures."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from api.schemas import ErrorPublic

DESCRIPTIONS = {
    400: "Bad request: a body that does not parse, or a cursor from elsewhere",
    401: "No API key, or an unknown or revoked one",
    403: "The key's role is too low",
    404: "No such resource",
    409: "The resource's state does not allow this",
    422: "The request does not match the schema",
    502: "The enforcement hook failed",
    503: "The database is unavailable",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the failures a route can answer with."""
    return {
        code: {"model": ErrorPublic, "description": DESCRIPTIONS[code]}
        for code in codes
    }


#: Failures every authenticated route can answer with.
COMMON = errors(400, 401, 403, 422, 503)

#: A free-text query value that any database can store.
NO_NUL = r"^[^\x00]*$"

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="From next_cursor."),
]
