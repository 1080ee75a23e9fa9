"""Administration routes (role `admin` only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from radservice.api.deps import AdminUser, ReadAuditDep, RowId, SessionDep, SettingsDep
from radservice.audit import service as audit
from radservice.db.session import begin_write
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
def list_users(admin: AdminUser, session: SessionDep, read_audit: ReadAuditDep) -> list[UserPublic]:
    """Every user account (no tokens)."""
    rows = users.list_users(session=session)
    read_audit(actor=admin.username, user_id=admin.id, action="users.list")
    return [
        UserPublic(username=u.username, display_name=u.display_name, role=u.role, active=u.active,
                   created_at=u.created_at)
        for u in rows
    ]


@router.get("/outbox", response_model=list[DeliveryPublic])
def list_outbox(admin: AdminUser, session: SessionDep, read_audit: ReadAuditDep,
                status_: Annotated[list[DeliveryStatus] | None, Query(alias="status")] = None,
                destination: Destination | None = None, accession: str | None = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100,
                offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[DeliveryPublic]:
    """Outbox rows, newest first; filters ``status`` (repeatable), ``destination``, ``accession``."""
    rows = outbox.list_rows(session=session, status=[s.value for s in status_ or []],
                            destination=destination.value if destination else None, accession=accession,
                            limit=limit, offset=offset)
    waiting = outbox.waiting_for(session=session, deliveries=rows)
    read_audit(actor=admin.username, user_id=admin.id, action="outbox.list",
               entity_type="outbox", detail={"returned": len(rows), "offset": offset,
                                             "accessions": sorted({r.accession_number for r in rows})})
    return DeliveryPublic.many(rows, waiting)


class SkipRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


def _outbox_error(exc: outbox.OutboxError) -> HTTPException:
    code = {"not_found": status.HTTP_404_NOT_FOUND, "invalid": 422}.get(
        exc.kind, status.HTTP_409_CONFLICT)
    return HTTPException(code, detail=str(exc))


@router.post("/outbox/{delivery_id}/skip", response_model=DeliveryPublic)
def skip_outbox(delivery_id: RowId, body: SkipRequest, admin: AdminUser, session: SessionDep) -> DeliveryPublic:
    """Do not send a failed row (e.g. a RIS that refuses preliminaries); later versions were never
    held back by it. 404 unknown, 409 when it is not failed."""
    begin_write(session)
    try:
        delivery = outbox.skip(session=session, delivery_id=delivery_id, reason=body.reason)
    except outbox.OutboxError as exc:
        raise _outbox_error(exc) from None
    audit.record(session=session, actor=admin.username, user_id=admin.id, action="outbox.skip",
                 entity_type="outbox", entity_id=str(delivery.id),
                 detail={"accession": delivery.accession_number, "version": delivery.version,
                         "destination": delivery.destination, "reason": body.reason[:200]})
    session.commit()
    return DeliveryPublic.many([delivery], {})[0]


@router.post("/outbox/{delivery_id}/supersede", response_model=DeliveryPublic)
def supersede_outbox(delivery_id: RowId, admin: AdminUser, session: SessionDep) -> DeliveryPublic:
    """Mark a failed row as replaced by a later version of the same report for the same peer.
    404 unknown, 409 when it is not failed or nothing later exists."""
    begin_write(session)
    try:
        delivery = outbox.supersede(session=session, delivery_id=delivery_id)
    except outbox.OutboxError as exc:
        raise _outbox_error(exc) from None
    audit.record(session=session, actor=admin.username, user_id=admin.id, action="outbox.supersede",
                 entity_type="outbox", entity_id=str(delivery.id),
                 detail={"accession": delivery.accession_number, "version": delivery.version,
                         "destination": delivery.destination})
    session.commit()
    return DeliveryPublic.many([delivery], {})[0]


@router.post("/outbox/{delivery_id}/retry", response_model=DeliveryPublic)
def retry_outbox(delivery_id: RowId, admin: AdminUser, session: SessionDep, settings: SettingsDep,
                 request: Request) -> DeliveryPublic:
    """Send a failed row again now (same message control ID); 404 unknown, 409 when it is not failed."""
    begin_write(session)
    try:
        delivery = outbox.retry(session=session, delivery_id=delivery_id,
                                give_up_after=timedelta(hours=settings.outbox.give_up_after_h))
    except outbox.OutboxError as exc:
        raise _outbox_error(exc) from None
    audit.record(session=session, actor=admin.username, user_id=admin.id, action="outbox.retry",
                 entity_type="outbox", entity_id=str(delivery.id),
                 detail={"accession": delivery.accession_number, "version": delivery.version})
    session.commit()
    request.app.state.outbox_wake()
    return DeliveryPublic.many([delivery], outbox.waiting_for(session=session, deliveries=[delivery]))[0]
