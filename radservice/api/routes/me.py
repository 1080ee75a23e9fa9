"""GET /api/v1/me: who the token belongs to."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from radservice.api.deps import CurrentUser, SettingsDep

router = APIRouter(prefix="/api/v1", tags=["users"])


class PageSettings(BaseModel):
    """What the page needs of the configuration (``[web]``)."""

    max_offline_s: int
    record_key: str
    hold_key: str


class MePublic(BaseModel):
    username: str
    display_name: str
    role: str
    page: PageSettings


@router.get("/me", response_model=MePublic)
def me(user: CurrentUser, settings: SettingsDep) -> MePublic:
    """The caller's name and role, and the page's settings."""
    return MePublic(username=user.username, display_name=user.display_name, role=user.role,
                    page=PageSettings(max_offline_s=settings.web.max_offline_s, record_key=settings.web.record_key,
                                      hold_key=settings.web.hold_key))
