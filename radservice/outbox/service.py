"""Outbox operations: rows written with a signature, claimed by a sender under a lease, their
outcomes, an admin's retry. Keyword-only, on the caller's session; the caller commits unless
a function says it commits.

Per study and destination, versions leave in order: a row is due only when no earlier
version's row for the same destination is still open (pending or sent). An earlier version
that failed for good (refused, given up) does not hold later ones back: each version carries the
whole report. Once a later version is acknowledged, earlier failed rows are ``superseded``; an
admin may also ``skip`` or ``supersede`` a failed row (audited by the caller).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from radservice.db.base import utcnow
from radservice.outbox.models import Delivery, DeliveryStatus
from radservice.reports.models import ReportVersion
from radservice.users.names import PersonName, parse_display_name
from radservice.worklist.models import Study

#: Longest error text kept on a row.
MAX_ERROR = 1000
_OPEN = (DeliveryStatus.PENDING.value, DeliveryStatus.SENT.value)


def new_message_id() -> str:
    """An HL7 message control ID: 20 characters (the v2.3 limit), unique without coordination."""
    return uuid.uuid4().hex[:20].upper()


def add_for_version(*, session: Session, version: ReportVersion, study: Study, destinations: list[str],
                    give_up_after: timedelta) -> list[Delivery]:
    """One pending row per destination for a newly signed version, each with its fixed message id."""
    now = utcnow()
    rows = [Delivery(version_id=version.id, report_id=version.report_id, study_id=study.id, version=version.version,
                     accession_number=study.accession_number, destination=destination,
                     status=DeliveryStatus.PENDING.value, message_id=new_message_id(), attempts=0,
                     next_attempt_at=now, give_up_at=now + give_up_after, last_error="", ack_code="",
                     created_at=now, updated_at=now)
            for destination in destinations]
    session.add_all(rows)
    session.flush()
    return rows


def _earlier_open() -> object:
    earlier = aliased(Delivery)
    return exists().where(earlier.study_id == Delivery.study_id, earlier.destination == Delivery.destination,
                          earlier.version < Delivery.version, earlier.status.in_(_OPEN))


def claim_due(*, session: Session, destination: str, owner: str, lease: timedelta, limit: int = 20,
              now: datetime | None = None) -> list[int]:
    """Take due rows of one destination for ``owner`` (status ``sent``, attempts + 1) and commit.

    Due: pending (or sent by a sender whose lease expired), its next attempt reached, and no
    earlier version of the same study still open for this destination. Oldest first.
    """
    now = now or utcnow()
    lease_free = or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now)
    query = (select(Delivery.id, Delivery.study_id)
             .where(Delivery.destination == destination, Delivery.status.in_(_OPEN), Delivery.next_attempt_at <= now,
                    lease_free, ~_earlier_open())  # type: ignore[operator]
             .order_by(Delivery.next_attempt_at, Delivery.id).limit(limit).with_for_update(skip_locked=True))
    candidates = list(session.execute(query))
    # The studies' locks order this claim against an admin's retry of an earlier version of the
    # same study; taken in study order, two loops (RIS, PACS) cannot deadlock on them.
    lock_studies(session, {study_id for _, study_id in candidates})
    claimed = []
    for delivery_id, _study_id in candidates:
        # Read again under the lock: an earlier version may be open once more.
        if session.scalar(select(exists().where(
                Delivery.id == delivery_id, _earlier_open()))):  # type: ignore[arg-type]
            continue
        # A conditional update: two senders that read the same row cannot both take it.
        taken = session.execute(
            update(Delivery).where(Delivery.id == delivery_id, Delivery.status.in_(_OPEN), lease_free)
            .values(status=DeliveryStatus.SENT.value, lease_owner=owner, lease_expires_at=now + lease,
                    attempts=Delivery.attempts + 1, last_attempt_at=now, updated_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if taken:
            claimed.append(delivery_id)
    session.commit()
    return claimed


def lock_studies(session: Session, study_ids: set[int]) -> None:
    """Take the studies' row locks in id order (PostgreSQL, FOR NO KEY UPDATE: rows that merely
    reference a study are not held up; SQLite has one writer anyway) until commit: claims and
    an admin's retry of the same study's deliveries then happen one after the other."""
    if study_ids:
        session.execute(select(Study.id).where(Study.id.in_(sorted(study_ids))).order_by(Study.id)
                        .with_for_update(key_share=True))


def _held(delivery_id: int, owner: str) -> object:
    return and_(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENT.value,
                Delivery.lease_owner == owner)


def renew(*, session: Session, delivery_id: int, owner: str, lease: timedelta) -> bool:
    """Extend ``owner``'s lease on a row it is about to send; False when the row is no longer
    ours (the lease ran out and another sender took it, or it was finished): then it must not
    be sent, or an older version could reach the peer after a newer one."""
    now = utcnow()
    done: int = session.execute(update(Delivery).where(_held(delivery_id, owner)).values(  # type: ignore[arg-type]
        lease_expires_at=now + lease, updated_at=now)).rowcount  # type: ignore[attr-defined]
    session.commit()
    return done == 1


def record_acked(*, session: Session, delivery_id: int, owner: str, ack_code: str, note: str = "") -> bool:
    """The peer accepted the delivery; False when the row is no longer ours. Earlier versions of
    the same study that failed for this destination are now superseded by this one."""
    now = utcnow()
    done: int = session.execute(update(Delivery).where(_held(delivery_id, owner)).values(  # type: ignore[arg-type]
        status=DeliveryStatus.ACKED.value, ack_code=ack_code, last_error=note[:MAX_ERROR], acked_at=now,
        lease_owner=None, lease_expires_at=None, updated_at=now)).rowcount  # type: ignore[attr-defined]
    if done == 1:
        row = session.execute(select(Delivery.study_id, Delivery.destination, Delivery.version)
                              .where(Delivery.id == delivery_id)).one()
        session.execute(update(Delivery).where(
            Delivery.study_id == row.study_id, Delivery.destination == row.destination,
            Delivery.version < row.version, Delivery.status == DeliveryStatus.FAILED.value,
        ).values(status=DeliveryStatus.SUPERSEDED.value, updated_at=now,
                 last_error=f"superseded: version {row.version} reached the peer"))
    return done == 1


def remember_study_uid(*, session: Session, delivery_id: int, uid: str) -> None:
    """Keep a Study Instance UID a sender found (C-FIND) or made on a study that had none, so every
    later version and message names the same study."""
    study_id = session.scalar(select(Delivery.study_id).where(Delivery.id == delivery_id))
    session.execute(update(Study).where(Study.id == study_id, Study.study_instance_uid.is_(None))
                    .values(study_instance_uid=uid))


def record_refused(*, session: Session, delivery_id: int, owner: str, ack_code: str, error: str) -> bool:
    """The peer refused the delivery (AE, AR): failed until a person retries it."""
    now = utcnow()
    done: int = session.execute(update(Delivery).where(_held(delivery_id, owner)).values(  # type: ignore[arg-type]
        status=DeliveryStatus.FAILED.value, ack_code=ack_code, last_error=error[:MAX_ERROR],
        lease_owner=None, lease_expires_at=None, updated_at=now)).rowcount  # type: ignore[attr-defined]
    return done == 1


def backoff(attempts: int, *, initial: timedelta, maximum: timedelta) -> timedelta:
    """The wait after the ``attempts``-th failure: ``initial`` doubled per earlier failure, at most ``maximum``."""
    wait: timedelta = initial * (2 ** max(0, min(attempts - 1, 30)))
    return min(wait, maximum)


def record_retry(*, session: Session, delivery_id: int, owner: str, error: str, initial: timedelta,
                 maximum: timedelta) -> str | None:
    """A passing failure (peer down, no answer): pending again after the backoff, or failed once the
    row is past its ``give_up_at``. Returns the new status, None when the row is no longer ours."""
    row = session.execute(select(Delivery.attempts, Delivery.give_up_at, Delivery.created_at)
                          .where(_held(delivery_id, owner))).first()  # type: ignore[arg-type]
    if row is None:
        return None
    now = utcnow()
    wait = backoff(row.attempts, initial=initial, maximum=maximum)
    if now >= row.give_up_at:
        hours = (now - row.created_at).total_seconds() / 3600
        status, error = DeliveryStatus.FAILED, f"gave up after {row.attempts} attempts in {hours:.1f} h: {error}"
    else:
        status = DeliveryStatus.PENDING
    session.execute(update(Delivery).where(_held(delivery_id, owner)).values(  # type: ignore[arg-type]
        status=status.value, last_error=error[:MAX_ERROR], ack_code="", lease_owner=None, lease_expires_at=None,
        next_attempt_at=min(now + wait, row.give_up_at) if status is DeliveryStatus.PENDING else now,
        updated_at=now))
    return status.value


class OutboxError(Exception):
    """An outbox operation refused; ``kind`` is ``not_found`` or ``not_failed``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def retry(*, session: Session, delivery_id: int, give_up_after: timedelta) -> Delivery:
    """Send a failed row again now (an admin's decision), with a fresh ``give_up_after``.

    Raises
    ------
    OutboxError
        ``not_found``, or ``not_failed`` (only a failed row is retried by hand).
    """
    delivery = _failed_row(session, delivery_id, "retried")
    lock_studies(session, {delivery.study_id})
    later = _later_versions(session, delivery, tried=True)
    if later:
        raise OutboxError("superseded", f"outbox row {delivery_id} is version {delivery.version}; version "
                                        f"{later[-1][0]} ({later[-1][1]}) is newer, carries the whole report and "
                                        "may have reached the peer: sending this one now could put an older "
                                        "report after it (supersede or skip it)")
    now = utcnow()
    delivery.status = DeliveryStatus.PENDING.value
    delivery.next_attempt_at = now
    delivery.give_up_at = now + give_up_after
    delivery.updated_at = now
    session.flush()
    return delivery


def skip(*, session: Session, delivery_id: int, reason: str) -> Delivery:
    """An admin's decision that a failed row is not sent (e.g. a RIS that refuses preliminaries).

    Raises
    ------
    OutboxError
        ``not_found``, ``not_failed``, ``invalid`` (no reason).
    """
    if not reason.strip():
        raise OutboxError("invalid", "skipping a delivery needs a reason")
    delivery = _failed_row(session, delivery_id, "skipped")
    delivery.status = DeliveryStatus.SKIPPED.value
    delivery.last_error = f"skipped: {reason.strip()}"[:MAX_ERROR]
    delivery.updated_at = utcnow()
    session.flush()
    return delivery


def supersede(*, session: Session, delivery_id: int) -> Delivery:
    """An admin's decision that a failed row is replaced by a later version of the same report
    (which carries the whole report) for the same destination.

    Raises
    ------
    OutboxError
        ``not_found``, ``not_failed``, ``no_later_version``.
    """
    delivery = _failed_row(session, delivery_id, "superseded")
    later = _later_versions(session, delivery, statuses=(*_OPEN, DeliveryStatus.ACKED.value))
    if not later:
        raise OutboxError("no_later_version", f"outbox row {delivery_id} is the newest version for "
                                              f"{delivery.destination}: nothing supersedes it (retry or skip it)")
    delivery.status = DeliveryStatus.SUPERSEDED.value
    delivery.last_error = f"superseded by an admin: version {later[-1][0]} ({later[-1][1]}) replaces it"[:MAX_ERROR]
    delivery.updated_at = utcnow()
    session.flush()
    return delivery


def _failed_row(session: Session, delivery_id: int, what: str) -> Delivery:
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise OutboxError("not_found", f"no outbox row {delivery_id}")
    if delivery.status != DeliveryStatus.FAILED.value:
        raise OutboxError("not_failed", f"outbox row {delivery_id} is {delivery.status}: only a failed row is {what}")
    return delivery


def _later_versions(session: Session, delivery: Delivery, statuses: tuple[str, ...] = (),
                    tried: bool = False) -> list[tuple[int, str]]:
    """(version, status) of later versions of the same study for the same destination, oldest
    first: those in ``statuses``, or (``tried``) those ever sent, whatever became of them."""
    condition = (Delivery.attempts > 0) | Delivery.status.in_((DeliveryStatus.SENT.value, DeliveryStatus.ACKED.value)) \
        if tried else Delivery.status.in_(statuses)
    rows = session.execute(select(Delivery.version, Delivery.status).where(
        Delivery.study_id == delivery.study_id, Delivery.destination == delivery.destination,
        Delivery.version > delivery.version, condition).order_by(Delivery.version))
    return [(int(v), str(s)) for v, s in rows]


def for_report(*, session: Session, report_id: int) -> list[Delivery]:
    return list(session.scalars(select(Delivery).where(Delivery.report_id == report_id)
                                .order_by(Delivery.version, Delivery.destination)))


def waiting_for(*, session: Session, deliveries: list[Delivery]) -> dict[int, int]:
    """Row id -> the earliest earlier version of the same study (same destination) still open,
    for each open row that waits for one; one query for all the rows."""
    open_rows = [d for d in deliveries if d.status in _OPEN]
    if not open_rows:
        return {}
    unacked: dict[tuple[int, str], list[int]] = {}
    for study_id, destination, version in session.execute(
            select(Delivery.study_id, Delivery.destination, Delivery.version)
            .where(Delivery.study_id.in_({d.study_id for d in open_rows}),
                   Delivery.status.in_(_OPEN))
            .order_by(Delivery.version)):
        unacked.setdefault((study_id, destination), []).append(version)
    found = {}
    for d in open_rows:
        earlier = [v for v in unacked.get((d.study_id, d.destination), []) if v < d.version]
        if earlier:
            found[d.id] = earlier[0]
    return found


def list_rows(*, session: Session, status: list[str] | None = None, destination: str | None = None,
              accession: str | None = None, limit: int = 100, offset: int = 0) -> list[Delivery]:
    """Outbox rows, newest first, by status, destination and accession number."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Delivery.status.in_(status))
    if destination:
        query = query.where(Delivery.destination == destination)
    if accession:
        query = query.where(Delivery.accession_number == accession)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Signer:
    """Who signed (a version, or the content of a section): username, name in parts, when."""

    username: str
    name: PersonName
    signed_at: datetime


def version_signer(version: ReportVersion) -> Signer:
    """The signer of a version, with the name in parts (kept at signing, else read from the display name)."""
    name = (PersonName.from_dict(version.signer_parts) if version.signer_parts
            else parse_display_name(version.signer_name, version.signer_username))
    return Signer(version.signer_username, name, version.signed_at)


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    text: str
    #: Who signed this section's content: an addendum's own signer; for the report's other
    #: sections, the signer of the preliminary or final version (None: the version's signer).
    signer: Signer | None = None


@dataclass(frozen=True)
class OutgoingReport:
    """Everything a sender needs to write one signed version for one peer, read from the database
    in one go (the sender then works without a session)."""

    delivery_id: int
    report_id: int
    destination: str
    message_id: str
    version: int
    kind: str
    result_status: str
    sections: tuple[Section, ...]
    signer_username: str
    signer_name: str
    signed_at: datetime
    sr_instance_uid: str
    #: The SR of the version this one replaces (its predecessor document), if any.
    previous_sr_instance_uid: str | None
    accession_number: str
    accession_issuer: str
    placer_order_number: str
    filler_order_number: str
    requested_procedure_id: str
    scheduled_step_id: str
    study_instance_uid: str | None
    procedure_code: str
    procedure_text: str
    modality: str
    priority: str
    reason: str
    ordered_at: datetime | None
    patient_id: str
    patient_issuer: str
    family_name: str
    given_name: str
    birth_date: date | None
    sex: str
    #: "year" or "month" when only that much of the birth date is known.
    birth_date_precision: str = "day"
    #: This attempt's number (1 for the first send).
    attempts: int = 0
    #: The signer of this version with the name in parts (None: read from signer_name).
    signer_parts: PersonName | None = None
    #: Who signed the report's content other than addenda (the last preliminary or final
    #: version): the principal result interpreter. None: this version's signer.
    interpreter: Signer | None = None

    @property
    def signer(self) -> Signer:
        """This version's signer."""
        return Signer(self.signer_username, self.signer_parts or parse_display_name(self.signer_name,
                                                                                    self.signer_username),
                      self.signed_at)

    @property
    def principal_interpreter(self) -> Signer:
        return self.interpreter or self.signer


def outgoing(*, session: Session, delivery_id: int) -> OutgoingReport:
    """The outgoing report of one outbox row."""
    delivery = session.get_one(Delivery, delivery_id)
    version = delivery.report_version
    study = session.get_one(Study, delivery.study_id)
    patient = study.patient
    history = list(session.scalars(select(ReportVersion).where(
        ReportVersion.report_id == version.report_id, ReportVersion.version <= version.version)
        .order_by(ReportVersion.version)))
    this = version_signer(version)
    content = [v for v in history if v.kind != "addendum"]
    interpreter = version_signer(content[-1]) if content else this
    introduced: dict[str, Signer] = {}  # an addendum section -> the signer of the version that added it
    for earlier in history:
        if earlier.kind == "addendum":
            for key in earlier.sections:
                if key.startswith("addendum_") and key not in introduced:
                    introduced[key] = version_signer(earlier)
    sections = tuple(Section(key, title, version.sections.get(key, ""),
                             introduced.get(key, this) if key.startswith("addendum_") else interpreter)
                     for key, title in version.titles if version.sections.get(key, "").strip())
    previous = session.scalar(select(ReportVersion.sr_instance_uid).where(
        ReportVersion.report_id == version.report_id, ReportVersion.version < version.version)
        .order_by(ReportVersion.version.desc()).limit(1))
    return OutgoingReport(
        delivery_id=delivery.id, report_id=delivery.report_id, destination=delivery.destination,
        message_id=delivery.message_id,
        version=version.version, kind=version.kind, result_status=version.result_status, sections=sections,
        signer_username=version.signer_username, signer_name=version.signer_name, signed_at=version.signed_at,
        sr_instance_uid=version.sr_instance_uid, previous_sr_instance_uid=previous,
        accession_number=study.accession_number,
        accession_issuer=study.accession_issuer, placer_order_number=study.placer_order_number,
        filler_order_number=study.filler_order_number, requested_procedure_id=study.requested_procedure_id,
        scheduled_step_id=study.scheduled_step_id, study_instance_uid=study.study_instance_uid,
        procedure_code=study.procedure_code, procedure_text=study.procedure_text, modality=study.modality,
        priority=study.priority, reason=study.reason, ordered_at=study.ordered_at, patient_id=patient.patient_id,
        patient_issuer=patient.issuer, family_name=patient.family_name, given_name=patient.given_name,
        birth_date=patient.birth_date, birth_date_precision=patient.birth_date_precision, sex=patient.sex,
        attempts=delivery.attempts, signer_parts=this.name, interpreter=interpreter)


#: Rows that still need something: to be sent, to be acknowledged, or a person.
OPEN_STATUSES = (DeliveryStatus.PENDING.value, DeliveryStatus.SENT.value, DeliveryStatus.FAILED.value)


def backlog(*, session: Session) -> tuple[dict[tuple[str, str], int], dict[str, float]]:
    """For monitoring: open rows by (destination, status), and by destination the age in seconds
    of the oldest open row that is not failed (a delivery that is late, not one that needs a person)."""
    counts = {(str(d), str(s)): int(n) for d, s, n in session.execute(
        select(Delivery.destination, Delivery.status, func.count()).where(Delivery.status.in_(OPEN_STATUSES))
        .group_by(Delivery.destination, Delivery.status))}
    now = utcnow()
    oldest = {}
    for destination, created in session.execute(
            select(Delivery.destination, func.min(Delivery.created_at))
            .where(Delivery.status.in_((DeliveryStatus.PENDING.value, DeliveryStatus.SENT.value)))
            .group_by(Delivery.destination)):
        if created is not None:
            if created.tzinfo is None:  # an aggregate may come back naive (UTC) on SQLite
                created = created.replace(tzinfo=UTC)
            oldest[str(destination)] = max(0.0, (now - created).total_seconds())
    return counts, oldest
