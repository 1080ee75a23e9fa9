"""Administration routes (role `admin` only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from radservice.api.deps import AdminUser, SessionDep
from radservice.audit import service as audit
from radservice.users import service as users

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class UserPublic(BaseModel):
    username: str
    display_name: str
    role: str
    active: bool
    created_at: datetime


@router.get("/users", response_model=list[UserPublic])
def list_users(admin: AdminUser, session: SessionDep) -> list[UserPublic]:
    """Every user account (no tokens)."""
    rows = users.list_users(session=session)
    audit.record(session=session, actor=admin.username, user_id=admin.id, action="users.list")
    session.commit()
    return [
        UserPublic(username=u.username, display_name=u.display_name, role=u.role, active=u.active,
                   created_at=u.created_at)
        for u in rows
    ]
