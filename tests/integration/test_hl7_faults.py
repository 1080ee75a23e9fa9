"""Integration faults on the way in (issue 26): reused control IDs, stored refusals, poison messages,
legal values that were refused, ADT events we do not use. The router runs in-process on SQLite and
PostgreSQL; python-hl7 reads the ACKs.
"""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from integrations.hl7.routing import Hl7Router
from radservice.db.session import session_scope
from radservice.worklist import service as worklist
from radservice.worklist.models import InboundMessage, Study
from tests.hl7_peer import Ack, order, read_ack, segment

pytestmark = pytest.mark.integration


def router(factory: sessionmaker[Session]) -> Hl7Router:
    return Hl7Router(sessions=factory, sending_application="RADSERVICE", sending_facility="RAD")


def send(r: Hl7Router, payload: bytes) -> Ack:
    answer = r.handle(payload, peer="127.0.0.1")
    assert answer is not None, "closed without an ACK"
    return read_ack(answer)


def accessions(factory: sessionmaker[Session]) -> set[str]:
    with session_scope(factory) as session:
        return set(session.scalars(select(Study.accession_number)))


def inbound_rows(factory: sessionmaker[Session]) -> list[tuple[str, str, int | None]]:
    with session_scope(factory) as session:
        rows = session.execute(select(InboundMessage.control_id, InboundMessage.ack_code, InboundMessage.error_code)
                               .order_by(InboundMessage.id)).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_reused_control_id_with_other_content_is_applied(factory: sessionmaker[Session],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    r = router(factory)
    assert send(r, order("C1", "ACC1")).code == "AA"
    with caplog.at_level(logging.WARNING, logger="radservice.hl7"):
        ack = send(r, order("C1", "ACC2"))  # a RIS whose counter was reset
    assert ack.code == "AA"
    assert accessions(factory) == {"ACC1", "ACC2"}
    assert any("reused for other content" in rec.getMessage() for rec in caplog.records)
    assert all("ACC2" not in rec.getMessage() or "accession=" in rec.getMessage() for rec in caplog.records)


def test_same_bytes_resent_are_a_resend(factory: sessionmaker[Session]) -> None:
    r = router(factory)
    payload = order("C1", "ACC1")
    assert send(r, payload).code == "AA"
    # The same message with LF line ends and trailing empty fields is the same content.
    assert send(r, payload.replace(b"\r", b"\n")).code == "AA"
    assert send(r, payload).code == "AA"
    assert len(inbound_rows(factory)) == 1
    assert accessions(factory) == {"ACC1"}


def test_a_message_answered_ae_is_evaluated_again(factory: sessionmaker[Session]) -> None:
    r = router(factory)
    cancel = order("CX1", "ACC9", control="CA")
    first = send(r, cancel)
    assert (first.code, first.error_code) == ("AE", "204")  # the cancel came before its order
    assert send(r, order("NW1", "ACC9")).code == "AA"
    again = send(r, cancel)  # the RIS resends the cancel: now it applies
    assert again.code == "AA", again.raw
    with session_scope(factory) as session:
        assert session.scalar(select(Study.status).where(Study.accession_number == "ACC9")) == "cancelled"
    assert [row for row in inbound_rows(factory) if row[0] == "CX1"] == [("CX1", "AA", None)]


def test_poison_message_gets_ae_207_and_the_feed_goes_on(factory: sessionmaker[Session],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    r = router(factory)
    real_apply = worklist.apply_order

    def apply_order(*, session: Session, order: object) -> object:
        if getattr(order, "accession_number", "") == "POISON":
            raise ValueError("something no check foresaw")
        return real_apply(session=session, order=order)  # type: ignore[arg-type]

    monkeypatch.setattr(worklist, "apply_order", apply_order)
    ack = send(r, order("P1", "POISON"))
    assert (ack.code, ack.error_code) == ("AE", "207")
    assert "ValueError" in ack.raw and "something" not in ack.raw
    assert send(r, order("P2", "ACC2")).code == "AA"  # the next message is processed
    assert accessions(factory) == {"ACC2"}
    assert inbound_rows(factory)[0] == ("P1", "AE", 207)  # stored with its error
    with session_scope(factory) as session:
        raw = session.scalar(select(InboundMessage.raw).where(InboundMessage.control_id == "P1"))
    assert raw == order("P1", "POISON")


def test_permanent_database_error_gets_ae_207(factory: sessionmaker[Session],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    r = router(factory)

    def apply_order(*, session: Session, order: object) -> object:
        raise DataError("INSERT ...", {}, Exception("value out of range"))

    monkeypatch.setattr(worklist, "apply_order", apply_order)
    ack = send(r, order("D1", "ACC1"))
    assert (ack.code, ack.error_code) == ("AE", "207")
    assert inbound_rows(factory) == [("D1", "AE", 207)]


def test_impossible_utc_offset_is_ae_102_not_a_dropped_connection(factory: sessionmaker[Session]) -> None:
    payload = order("T1", "ACC1").replace(b"|20261124135900\rOBR", b"|20240101120000+2400\rOBR", 1)
    assert b"+2400\rOBR" in payload  # ORC-9
    ack = send(router(factory), payload)
    assert (ack.code, ack.error_code) == ("AE", "102")
    assert "ORC" in ack.raw.split("ERR", 1)[1]


def test_adt_events_we_do_not_use_are_acknowledged(factory: sessionmaker[Session],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    r = router(factory)
    caplog.set_level(logging.DEBUG, logger="radservice.hl7")
    for event in ("A01", "A04", "A31", "A34"):
        payload = "\r".join([
            f"MSH|^~\\&|RIS|H|RS|R|20261124||ADT^{event}|ADT-{event}|P|2.5.1",
            segment("EVN", {1: event}),
            segment("PID", {1: "1", 3: "MRN-ADT^^^H^MR", 5: "SYNTH^ADT"}),
        ]).encode()
        ack = send(r, payload)
        assert (event, ack.code) == (event, "AA")
    assert accessions(factory) == set()
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warned) == 1 and "ADT^A34" in warned[0] and "not applied" in warned[0]  # a merge we do not apply
    empty = send(r, b"MSH|^~\\&|RIS|H|RS|R|20261124||ADT|ADT-NONE|P|2.5.1\rEVN|\r")
    assert (empty.code, empty.error_code) == ("AR", "201")


def test_merge_of_unknown_patient_names_mrg_1(factory: sessionmaker[Session]) -> None:
    payload = "\r".join([
        "MSH|^~\\&|RIS|H|RS|R|20261124||ADT^A40|M1|P|2.5.1",
        segment("PID", {1: "1", 3: "MRN-NEW^^^H^MR", 5: "SYNTH^MERGE"}),
        segment("MRG", {1: "MRN-NOBODY^^^H^MR"}),
    ]).encode()
    ack = send(router(factory), payload)
    assert (ack.code, ack.error_code) == ("AE", "204")
    err = next(line for line in ack.raw.split("\r") if line.startswith("ERR"))
    assert err.split("|")[2].startswith("MRG^1^1"), err


def test_failure_outside_the_transaction_is_still_answered_and_stored(factory: sessionmaker[Session],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    r = router(factory)
    real_record = worklist.record_inbound
    calls = []

    def record_inbound(**values: object) -> None:
        calls.append(values["ack_code"])
        if len(calls) == 1:
            raise RuntimeError("storage hiccup")
        real_record(**values)  # type: ignore[arg-type]

    monkeypatch.setattr(worklist, "record_inbound", record_inbound)
    ack = send(r, order("R1", "ACC1"))
    assert (ack.code, ack.error_code) == ("AE", "207")
    assert accessions(factory) == set()  # the order's transaction was rolled back
    assert inbound_rows(factory) == [("R1", "AE", 207)]
    monkeypatch.setattr(worklist, "record_inbound", real_record)
    assert send(r, order("R1", "ACC1")).code == "AA"  # the RIS resends: evaluated again, applied
    assert accessions(factory) == {"ACC1"}
    assert inbound_rows(factory) == [("R1", "AA", None)]


@pytest.mark.parametrize(("sent", "born", "precision"), [
    ("1970", "1970-01-01", "year"), ("197003", "1970-03-01", "month"), ("19700314", "1970-03-14", "day"),
    ("197003141230", "1970-03-14", "day"),
])
def test_birth_date_of_any_legal_precision_is_accepted_and_kept(factory: sessionmaker[Session], sent: str,
                                                                born: str, precision: str) -> None:
    payload = order("B1", "ACC1").replace(b"||19700101|F", f"||{sent}|F".encode())
    assert f"|{sent}|".encode() in payload
    assert send(router(factory), payload).code == "AA"
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        assert (str(study.patient.birth_date), study.patient.birth_date_precision) == (born, precision)


def test_merge_picks_the_mr_identifier_of_mrg_1_as_pid_3_does(factory: sessionmaker[Session]) -> None:
    r = router(factory)
    assert send(r, order("O1", "ACC1", patient_id="MRN-OLD")).code == "AA"
    payload = "\r".join([
        "MSH|^~\\&|RIS|H|RS|R|20261124||ADT^A40|M2|P|2.5.1",
        segment("PID", {1: "1", 3: "V-9^^^H^VN~MRN-NEW^^^H^MR", 5: "SYNTH^MERGE"}),
        segment("MRG", {1: "V-1^^^H^VN~MRN-OLD^^^TESTHOSP^MR"}),
    ]).encode()
    ack = send(r, payload)
    assert ack.code == "AA", ack.raw
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        assert study.patient.patient_id == "MRN-NEW"


def test_an_accession_longer_than_dicom_allows_is_refused_where_a_pacs_is_configured(
        factory: sessionmaker[Session]) -> None:
    with_pacs = Hl7Router(sessions=factory, sending_application="RADSERVICE", sending_facility="RAD",
                          max_accession_chars=16)
    ack = send(with_pacs, order("L1", "A" * 17))
    assert (ack.code, ack.error_code) == ("AE", "102") and "16 characters" in ack.raw
    assert "OBR^1^18" in ack.raw.replace("|", "^") or "OBR" in ack.raw.split("ERR", 1)[1]
    assert send(with_pacs, order("L2", "A" * 16)).code == "AA"
    assert send(router(factory), order("L3", "B" * 40)).code == "AA"  # no PACS: the RIS's 64 characters


class _PgError(Exception):
    """A DBAPI error as psycopg raises it: with a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("detail that may quote values")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("raised", "acked"), [
    (PoolTimeout("QueuePool limit of size 10 overflow 10 reached"), False),  # every connection busy
    (OperationalError("SELECT", {}, _PgError("40001")), False),  # serialization failure
    (OperationalError("SELECT", {}, _PgError("55P03")), False),  # lock not available
    (DataError("INSERT", {}, _PgError("22001")), True),  # value too long: this message, every time
    (OperationalError("INSERT", {}, _PgError("54000")), True),  # program limit exceeded: permanent
    (OperationalError("INSERT", {}, _PgError("25006")), False),  # read-only: a failover in progress
    (OperationalError("SELECT", {}, _PgError("42P01")), False),  # table missing: the deployment, not the message
    (OperationalError("SELECT", {}, _PgError("42883")), True),  # a bug on one path must not jam the feed
], ids=["pool-timeout", "serialization", "lock", "data", "limit", "read-only", "undefined-table", "bug"])
def test_only_passing_database_failures_go_unanswered(factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
                                                      raised: Exception, acked: bool) -> None:
    def apply_order(*, session: Session, order: object) -> object:
        raise raised

    monkeypatch.setattr(worklist, "apply_order", apply_order)
    answer = router(factory).handle(order("X1", "ACC1"), peer="127.0.0.1")
    if not acked:
        assert answer is None  # closed without an ACK: the RIS sends it again, nothing lost
        assert inbound_rows(factory) == []
    else:
        assert answer is not None
        ack = read_ack(answer)
        assert (ack.code, ack.error_code) == ("AE", "207")
        assert "may quote" not in ack.raw


def test_a_store_that_loses_the_race_replays_the_winner_s_aa(factory: sessionmaker[Session],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    r = router(factory)
    payload = order("W1", "ACC1")
    assert send(r, payload).code == "AA"  # the other connection's copy, applied and stored
    real_find = worklist.find_inbound
    calls = []

    def find_inbound(**kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("failure before the stored answer was read")
        return real_find(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(worklist, "find_inbound", find_inbound)
    assert send(r, payload).code == "AA"
    assert accessions(factory) == {"ACC1"} and inbound_rows(factory) == [("W1", "AA", None)]


def test_a_nul_in_a_field_is_dropped_not_a_lost_order(factory: sessionmaker[Session]) -> None:
    payload = order("N1", "ACC1").replace(b"SYNTH^TEST", b"SYN\\X00\\TH^TE\x00ST")
    assert send(router(factory), payload).code == "AA"
    with session_scope(factory) as session:
        patient = session.scalars(select(Study)).one().patient
        assert (patient.family_name, patient.given_name) == ("SYNTH", "TEST")
