"""GET /api/v1/me: who the token belongs to."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from radservice.api.deps import CurrentUser

router = APIRouter(prefix="/api/v1", tags=["users"])


class MePublic(BaseModel):
    username: str
    display_name: str
    role: str


@router.get("/me", response_model=MePublic)
def me(user: CurrentUser) -> MePublic:
    """The caller's name and role."""
    return MePublic(username=user.username, display_name=user.display_name, role=user.role)
