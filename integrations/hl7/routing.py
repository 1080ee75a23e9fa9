"""Routing: one inbound message in, its effect committed, its ACK out.

The raw message and its effect are stored in one transaction keyed by the sender and its
message control ID; the ACK is built only after that commit (STYLE.md: commit, then ACK).
A resend with the same control ID gets the stored answer again and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from integrations.hl7 import inbound
from integrations.hl7.ack import build_ack
from integrations.hl7.message import Message, MessageError, decode, parse, peek_header
from radservice.audit import service as audit
from radservice.db.session import session_scope
from radservice.worklist import service as worklist
from radservice.worklist.intake import IntakeError

log = logging.getLogger("radservice.hl7")

AUDIT_ACTOR = "hl7"
# Domain refusals as HL7 table 0357 codes.
INTAKE_ERROR_CODES = {"unknown_order": 204, "unknown_patient": 204, "already_reported": 206,
                      "ambiguous": 205, "invalid": 102}

#: An observer sees (message type, ACK code) for every message; its errors are logged only.
Observer = Callable[[str, str], None]


@dataclass(frozen=True)
class RoutingResult:
    """What became of one message: the ACK code, and whether it repeated a known control ID."""

    ack_code: str
    error: MessageError | None
    duplicate: bool = False
    accession: str = ""


class Hl7Router:
    """Turns inbound HL7 payloads into domain operations and ACK bytes.

    Parameters
    ----------
    sessions
        Session factory of the radservice database.
    sending_application, sending_facility
        MSH-3/MSH-4 of our ACKs.
    accession_field
        Where the site puts the accession number (``OBR-18`` by default).
    observers
        Called with (message type, ACK code) after each message, e.g. metrics.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        sending_application: str,
        sending_facility: str,
        accession_field: str = "OBR-18",
        observers: Iterable[Observer] = (),
    ) -> None:
        self.sessions = sessions
        self.sending_application = sending_application
        self.sending_facility = sending_facility
        self.accession_field = inbound.FieldRef.parse(accession_field)
        self.observers = list(observers)
        # SQLite has one writer at a time and makes waiting writers sleep and poll; taking
        # turns on a lock in this process instead keeps several RIS connections fast.
        bind = sessions.kw.get("bind")
        single_writer = bind is not None and bind.dialect.name == "sqlite"
        self._write_turn: AbstractContextManager[object] = threading.Lock() if single_writer else nullcontext()

    def handle(self, payload: bytes, peer: str = "") -> bytes | None:
        """The ACK for one message, or None when the database is unavailable.

        None tells the listener to close the connection without an ACK: nothing was stored, and
        the RIS sends the message again later.
        """
        try:
            text, codec = decode(payload)
            msg = parse(text, codec)
        except MessageError as err:
            log.warning("hl7: message from %s rejected unparsed: %s", peer, err.text)
            self._notify("unparsed", "AR")
            header = peek_header(payload)
            return self._encode(self._ack("AR", header, err), header.charset if header else "utf-8")
        try:
            result = self._apply_with_retry(msg, payload, peer)
        except OperationalError as exc:
            log.error("hl7: database unavailable, control_id=%s not acknowledged: %s: %s",
                      msg.control_id, type(exc).__name__, str(exc.orig)[:200])
            return None
        except SQLAlchemyError:
            log.exception("hl7: database error, control_id=%s not acknowledged", msg.control_id)
            return None
        msg_type = "^".join(msg.message_type)
        self._notify(msg_type, result.ack_code)
        log.info("hl7: %s control_id=%s accession=%s ack=%s%s", msg_type, msg.control_id,
                 result.accession or "-", result.ack_code, " (repeat)" if result.duplicate else "")
        return self._encode(self._ack(result.ack_code, msg, result.error), msg.charset)

    def _ack(self, code: str, original: Message | None, error: MessageError | None) -> str:
        return build_ack(code=code, original=original, error=error,
                         sending_application=self.sending_application, sending_facility=self.sending_facility)

    @staticmethod
    def _encode(ack: str, codec: str) -> bytes:
        try:
            return ack.encode(codec)
        except UnicodeEncodeError:
            return ack.encode("utf-8")

    def _notify(self, msg_type: str, ack_code: str) -> None:
        for observer in self.observers:
            try:
                observer(msg_type, ack_code)
            except Exception:  # an observer never breaks intake; its failure is logged
                log.exception("hl7: observer failed")

    def _apply_with_retry(self, msg: Message, payload: bytes, peer: str) -> RoutingResult:
        with self._write_turn:
            return self._apply_retrying(msg, payload, peer)

    def _apply_retrying(self, msg: Message, payload: bytes, peer: str) -> RoutingResult:
        try:
            return self._apply(msg, payload, peer)
        except IntegrityError:
            # Two connections delivered the same control ID at once; the other one stored it.
            return self._apply(msg, payload, peer)
        except OperationalError:
            # A pooled connection the server dropped (restart, failover): the pool is now
            # invalidated, so one more try runs on a fresh connection.
            return self._apply(msg, payload, peer)

    def _apply(self, msg: Message, payload: bytes, peer: str) -> RoutingResult:
        sender_app, sender_fac = msg.msh.get(3)[:64], msg.msh.get(4)[:64]
        control_id = msg.control_id
        if not control_id:
            return RoutingResult("AR", MessageError("AR", 101, "MSH-10 message control ID missing", ("MSH", 10)))
        with session_scope(self.sessions) as session:
            seen = worklist.find_inbound(session=session, sending_application=sender_app,
                                         sending_facility=sender_fac, control_id=control_id)
            if seen is not None:
                error = None
                if seen.error_code is not None:
                    location = (seen.error_segment, seen.error_field or 0) if seen.error_segment else None
                    error = MessageError(seen.ack_code, seen.error_code, seen.error_text, location)
                return RoutingResult(seen.ack_code, error, duplicate=True, accession=seen.accession_number)
            result = self._dispatch(session, msg)
            err = result.error
            worklist.record_inbound(
                session=session, peer=peer, sending_application=sender_app, sending_facility=sender_fac,
                control_id=control_id, message_type="^".join(msg.message_type), version=msg.version,
                ack_code=result.ack_code, error_code=err.error_code if err else None,
                error_text=err.text if err else "", error_segment=err.location[0] if err and err.location else "",
                error_field=err.location[1] if err and err.location else None,
                accession_number=result.accession, raw=payload,
            )
            return result

    def _dispatch(self, session: Session, msg: Message) -> RoutingResult:
        try:
            code, trigger = inbound.check_header(msg)
            if code in ("ORM", "OMI"):
                accession = self._orders(session, msg)
            elif trigger == "A08":
                accession = self._demographics(session, msg)
            else:
                accession = self._merge(session, msg)
        except MessageError as err:
            session.rollback()  # nothing of a refused message stays, only its record
            return RoutingResult(err.ack_code, err)
        except IntakeError as exc:
            session.rollback()
            code_0357 = INTAKE_ERROR_CODES.get(exc.kind, 102)
            location = (self.accession_field.segment, self.accession_field.field)
            return RoutingResult("AE", MessageError("AE", code_0357, str(exc)[:200], location))
        return RoutingResult("AA", None, accession=accession)

    def _orders(self, session: Session, msg: Message) -> str:
        orders = inbound.orders_from(msg, self.accession_field)
        for order in orders:
            outcome = worklist.apply_order(session=session, order=order)
            audit.record(session=session, actor=AUDIT_ACTOR, action=f"order.{outcome.action}",
                         entity_type="study", entity_id=outcome.accession_number,
                         detail={"control_id": msg.control_id, "order_control": order.control.value})
        return orders[0].accession_number

    def _demographics(self, session: Session, msg: Message) -> str:
        patient_id = worklist.update_demographics(session=session, data=inbound.patient_from(msg.first("PID")))
        audit.record(session=session, actor=AUDIT_ACTOR, action="patient.updated", entity_type="patient",
                     entity_id=str(patient_id), detail={"control_id": msg.control_id})
        return ""

    def _merge(self, session: Session, msg: Message) -> str:
        survivor = worklist.merge_patients(session=session, merge=inbound.merge_from(msg))
        audit.record(session=session, actor=AUDIT_ACTOR, action="patient.merged", entity_type="patient",
                     entity_id=str(survivor), detail={"control_id": msg.control_id})
        return ""
