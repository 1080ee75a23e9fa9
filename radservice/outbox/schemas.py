"""API shapes of the outbox."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel

from radservice.outbox.models import Delivery


class DeliveryPublic(BaseModel):
    """One outbox row: one signed version on its way to one destination."""

    id: int
    report_id: int
    accession_number: str
    version: int
    destination: str
    #: pending, sent (awaiting the acknowledgement), acked, failed
    status: str
    #: The HL7 message control ID (MSH-10), fixed when the version was signed.
    message_id: str
    attempts: int
    last_error: str
    ack_code: str
    #: When the next attempt is due (pending rows).
    next_attempt_at: datetime | None
    #: The earlier version this one waits for (versions leave in order), if any.
    waiting_for_version: int | None
    give_up_at: datetime
    last_attempt_at: datetime | None
    acked_at: datetime | None
    created_at: datetime

    @classmethod
    def many(cls, rows: list[Delivery], waiting_for: Mapping[int, int]) -> list[DeliveryPublic]:
        """``waiting_for``: what :func:`radservice.outbox.service.waiting_for` says of the rows."""
        return [cls.of(d, waiting_for) for d in rows]

    @classmethod
    def of(cls, d: Delivery, waiting_for: Mapping[int, int]) -> DeliveryPublic:
        return cls(id=d.id, report_id=d.report_id, accession_number=d.accession_number, version=d.version,
                   destination=d.destination, status=d.status, message_id=d.message_id, attempts=d.attempts,
                   last_error=d.last_error, ack_code=d.ack_code,
                   next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                   waiting_for_version=waiting_for.get(d.id), give_up_at=d.give_up_at,
                   last_attempt_at=d.last_attempt_at,
                   acked_at=d.acked_at, created_at=d.created_at)
