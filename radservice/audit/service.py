"""Writing the audit trail: the one function every feature calls."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from radservice.audit.models import AuditEvent
from radservice.db.base import Base, utcnow

_INSERT = insert(Base.metadata.tables[AuditEvent.__tablename__])
#: The network address of the API client being served (set per request by the API; None in
#: workers, the HL7 listener and the CLI). Every audit row written while serving it names it.
client_address: ContextVar[str | None] = ContextVar("radservice_client_address", default=None)


def record(
    *,
    session: Session,
    actor: str,
    action: str,
    user_id: int | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one audit event to the session's transaction (committed with the work it records).

    ``detail`` holds identifiers (accession numbers, message control IDs), never patient
    names or report text.
    """
    # A plain INSERT: audit rows are written on hot paths (every order, every read) and never
    # read back in the same unit of work.
    session.connection().execute(_INSERT, {
        "at": utcnow(), "actor": actor, "action": action, "user_id": user_id, "entity_type": entity_type,
        "entity_id": entity_id, "detail": detail, "client": (client_address.get() or "")[:64] or None,
    })
