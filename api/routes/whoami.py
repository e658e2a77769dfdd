"""Who the caller is: the name and role of the key a request carries."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentViewer
from api.schemas import PrincipalPublic

router = APIRouter(tags=["keys"])


@router.get("/whoami")
async def read_whoami(viewer: CurrentViewer) -> PrincipalPublic:
    """The name and role of the API key this request carries."""
    return PrincipalPublic(name=viewer.name, role=viewer.role)  # type: ignore[arg-type]
