"""Routing: one inbound message in, its effect committed, its ACK out.

The raw message and its effect are stored in one transaction keyed by the sender, its message
control ID and a hash of its content; the ACK is built only after that commit (STYLE.md: commit,
then ACK). A resend (same control ID, same content) of an accepted message gets the stored AA
again and changes nothing; a message that was refused (AE/AR) is evaluated again, since what it
needed may have arrived since; other content under a known control ID is applied as a new
message, with a warning.

No message jams the feed: only a transient database failure (unreachable, serialization
failure, lock timeout) closes the connection without an ACK so that the RIS sends again; any
other failure is answered AE with ERR code 207 and the message is stored with its error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from integrations.hl7 import inbound
from integrations.hl7.ack import build_ack
from integrations.hl7.message import Message, MessageError, content_key, decode, parse, peek_header
from radservice.audit import service as audit
from radservice.db.errors import cause as _cause
from radservice.db.errors import transient
from radservice.db.session import session_scope
from radservice.worklist import service as worklist
from radservice.worklist.intake import IntakeError

log = logging.getLogger("radservice.hl7")

AUDIT_ACTOR = "hl7"
# Domain refusals as HL7 table 0357 codes.
INTAKE_ERROR_CODES = {"unknown_order": 204, "unknown_patient": 204, "already_reported": 206,
                      "ambiguous": 205, "invalid": 102}

# The HL7 field each piece of intake data comes from (the accession: the site's accession field).
INTAKE_FIELDS = {"patient_id": ("PID", 3), "issuer": ("PID", 3), "prior_patient_id": ("MRG", 1)}

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
    max_accession_chars
        Longer accession numbers are refused (AE): 16 where a PACS is configured (DICOM SH).
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
        max_accession_chars: int = 64,
    ) -> None:
        self.sessions = sessions
        self.sending_application = sending_application
        self.sending_facility = sending_facility
        self.accession_field = inbound.FieldRef.parse(accession_field)
        self.observers = list(observers)
        # 16 when a PACS is configured: the SR's Accession Number is SH (16 characters), and a
        # longer one could never match the study there.
        self.max_accession_chars = max_accession_chars
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
        except Exception as exc:
            if transient(exc):
                log.error("hl7: database unavailable, control_id=%s not acknowledged: %s", msg.control_id,
                          _cause(exc))
                return None
            # a poison message: answered and stored, never left to jam the feed
            failed = self._internal_error(msg, payload, peer, exc)
            if failed is None:
                return None
            result = failed
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
            return self._apply(msg, payload, peer, last=False)
        except IntegrityError:
            # Two connections delivered the same message at once; the other one stored it.
            return self._apply(msg, payload, peer, last=True)
        except Exception as exc:
            if not transient(exc):
                raise
            # A pooled connection the server dropped (restart, failover), a serialization
            # failure: the pool is invalidated if need be, and one more try runs afresh.
            return self._apply(msg, payload, peer, last=True)

    def _apply(self, msg: Message, payload: bytes, peer: str, *, last: bool) -> RoutingResult:
        sender_app, sender_fac = msg.msh.get(3)[:64], msg.msh.get(4)[:64]
        control_id = msg.control_id
        if not control_id:
            return RoutingResult("AR", MessageError("AR", 101, "MSH-10 message control ID missing", ("MSH", 10)))
        with session_scope(self.sessions) as session:
            earlier, same = _stored(session, msg)
            if same is not None and same.ack_code == "AA":
                return RoutingResult("AA", None, duplicate=True, accession=same.accession_number)
            if earlier and same is None:
                log.warning("hl7: control_id=%s from %s^%s reused for other content; applied as a new message",
                            control_id, sender_app, sender_fac)
            result = self._dispatch(session, msg, last=last)
            _store(session, msg, payload, peer, same, result)
            return result

    def _dispatch(self, session: Session, msg: Message, *, last: bool) -> RoutingResult:
        try:
            code, trigger = inbound.check_header(msg)
            if code in ("ORM", "OMI"):
                accession = self._orders(session, msg)
            elif trigger == "A08":
                accession = self._demographics(session, msg)
            elif trigger == "A40":
                accession = self._merge(session, msg)
            else:
                # An ADT event radservice does not use (A01, A04, A31, ...): accepted, since an AR
                # would raise an alarm on the interface engine for every admission. Merges and
                # identifier changes other than A40 are said loudly: the IDs here stay as they were.
                if trigger in inbound.ADT_IDENTITY_EVENTS:
                    log.warning("hl7: ADT^%s control_id=%s (a merge or identifier change) acknowledged but not "
                                "applied: radservice applies merges as ADT^A40", trigger, msg.control_id)
                else:
                    log.debug("hl7: ADT^%s control_id=%s acknowledged and ignored", trigger, msg.control_id)
                return RoutingResult("AA", None)
            session.flush()
        except MessageError as err:
            session.rollback()  # nothing of a refused message stays, only its record
            return RoutingResult(err.ack_code, err)
        except IntakeError as exc:
            session.rollback()
            code_0357 = INTAKE_ERROR_CODES.get(exc.kind, 102)
            location = INTAKE_FIELDS.get(exc.subject, (self.accession_field.segment, self.accession_field.field))
            return RoutingResult("AE", MessageError("AE", code_0357, str(exc)[:200], location))
        except IntegrityError:
            if not last:
                raise  # most likely a race with another connection: tried once more
            session.rollback()
            return self._poisoned(msg, "database constraint")
        except Exception as exc:
            if transient(exc):
                raise  # no ACK, the RIS sends it again
            session.rollback()  # DataError and the like: this message's content, every time
            return self._poisoned(msg, _cause(exc))
        return RoutingResult("AA", None, accession=accession)

    @staticmethod
    def _poisoned(msg: Message, cause: str) -> RoutingResult:
        """AE 207 for a message that fails for a reason other than its checks (no PHI in the text)."""
        log.error("hl7: control_id=%s could not be applied (%s); answered AE 207 and stored", msg.control_id, cause)
        return RoutingResult("AE", MessageError("AE", 207, f"internal error applying the message ({cause})"[:80]))

    def _internal_error(self, msg: Message, payload: bytes, peer: str, exc: Exception) -> RoutingResult | None:
        """AE 207 for a failure outside the message's own transaction; the message is stored in a new one."""
        # The type and no text: a database error's text may quote the values (names, IDs).
        log.error("hl7: control_id=%s failed outside its transaction: %s", msg.control_id, _cause(exc))
        error = MessageError("AE", 207, f"internal error applying the message ({_cause(exc)})"[:80])
        result = RoutingResult("AE", error)
        try:
            with self._write_turn, session_scope(self.sessions) as session:
                _, same = _stored(session, msg)
                if same is not None and same.ack_code == "AA":
                    # another connection applied this very message meanwhile: its AA stands
                    return RoutingResult("AA", None, duplicate=True, accession=same.accession_number)
                _store(session, msg, payload, peer, same, result)
        except Exception as store_exc:
            if transient(store_exc):
                return None  # the database went away meanwhile: no ACK, the RIS sends it again
            log.error("hl7: control_id=%s could not be stored with its error either: %s", msg.control_id,
                      _cause(store_exc))
        return result

    def _orders(self, session: Session, msg: Message) -> str:
        orders = inbound.orders_from(msg, self.accession_field)
        for order in orders:
            if len(order.accession_number) > self.max_accession_chars:
                location = (self.accession_field.segment, self.accession_field.field)
                raise MessageError("AE", 102, f"accession number longer than {self.max_accession_chars} characters "
                                              "(DICOM SH: the PACS could not match it)", location)
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


def _key_of(raw: bytes) -> str:
    """The content key of a message stored before keys were (migration 0010); '' if it no longer parses."""
    try:
        text, codec = decode(raw)
        return content_key(parse(text, codec))
    except MessageError:
        return ""


def _stored(session: Session, msg: Message) -> tuple[list[worklist.InboundAck], worklist.InboundAck | None]:
    """What this sender sent under this control ID before, and the one row with this content (if any)."""
    earlier = worklist.find_inbound(session=session, sending_application=msg.msh.get(3)[:64],
                                    sending_facility=msg.msh.get(4)[:64], control_id=msg.control_id)
    key = content_key(msg)
    return earlier, next((row for row in earlier if (row.content_hash or _key_of(row.raw)) == key), None)


def _store(session: Session, msg: Message, payload: bytes, peer: str, same: worklist.InboundAck | None,
           result: RoutingResult) -> None:
    """Record the message and its answer: the row of the same content updated, else a new row."""
    values = _record_values(msg, result, peer)
    if same is not None:
        worklist.update_inbound(session=session, inbound_id=same.id, **values)
    else:
        worklist.record_inbound(session=session, sending_application=msg.msh.get(3)[:64],
                                sending_facility=msg.msh.get(4)[:64], control_id=msg.control_id,
                                content_hash=content_key(msg), raw=payload, **values)


def _record_values(msg: Message, result: RoutingResult, peer: str) -> dict[str, object]:
    err = result.error
    return {
        "peer": peer, "message_type": "^".join(msg.message_type), "version": msg.version,
        "ack_code": result.ack_code, "error_code": err.error_code if err else None,
        "error_text": err.text if err else "", "error_segment": err.location[0] if err and err.location else "",
        "error_field": err.location[1] if err and err.location else None,
        "accession_number": result.accession,
    }
