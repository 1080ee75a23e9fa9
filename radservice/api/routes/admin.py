"""Administration routes (role `admin` only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel

from radservice.api.deps import AdminUser, SessionDep, SettingsDep
from radservice.audit import service as audit
from radservice.outbox import service as outbox
from radservice.outbox.models import DeliveryStatus, Destination
from radservice.outbox.schemas import DeliveryPublic
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


@router.get("/outbox", response_model=list[DeliveryPublic])
def list_outbox(admin: AdminUser, session: SessionDep,
                status_: Annotated[list[DeliveryStatus] | None, Query(alias="status")] = None,
                destination: Destination | None = None, accession: str | None = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> list[DeliveryPublic]:
    """Outbox rows, newest first; filters ``status`` (repeatable), ``destination``, ``accession``."""
    rows = outbox.list_rows(session=session, status=[s.value for s in status_ or []],
                            destination=destination.value if destination else None, accession=accession,
                            limit=limit, offset=offset)
    return DeliveryPublic.many(rows, outbox.waiting_for(session=session, deliveries=rows))


@router.post("/outbox/{delivery_id}/retry", response_model=DeliveryPublic)
def retry_outbox(delivery_id: int, admin: AdminUser, session: SessionDep, settings: SettingsDep,
                 request: Request) -> DeliveryPublic:
    """Send a failed row again now (same message control ID); 404 unknown, 409 when it is not failed."""
    try:
        delivery = outbox.retry(session=session, delivery_id=delivery_id,
                                give_up_after=timedelta(hours=settings.outbox.give_up_after_h))
    except outbox.OutboxError as exc:
        code = status.HTTP_404_NOT_FOUND if exc.kind == "not_found" else status.HTTP_409_CONFLICT
        raise HTTPException(code, detail=str(exc)) from None
    audit.record(session=session, actor=admin.username, user_id=admin.id, action="outbox.retry",
                 entity_type="outbox", entity_id=str(delivery.id),
                 detail={"accession": delivery.accession_number, "version": delivery.version})
    session.commit()
    request.app.state.outbox_wake()
    return DeliveryPublic.many([delivery], outbox.waiting_for(session=session, deliveries=[delivery]))[0]
