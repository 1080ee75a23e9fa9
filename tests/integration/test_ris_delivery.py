"""Signed reports to the RIS: the outbox's delivery loop and the MLLP sender against python-hl7's
asyncio server playing the RIS, on SQLite and PostgreSQL. Fields checked as a receiver reads
them, report text round-tripped exactly, and the faults: RIS down, AE, AR, no answer, ordering."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from integrations.hl7.sender import RisSender
from radservice.config import RisSettings
from radservice.db.session import session_scope
from radservice.outbox.flows import DeliveryLoop
from radservice.worklist import service as worklist
from radservice.worklist.intake import OrderControl, OrderData, PatientData, Priority
from tests.ris_peer import RisPeer
from tests.support import T0, add_report, free_port, make_user, sign_report, start_delivery_loop, wait_for

pytestmark = pytest.mark.integration

#: Every HL7 delimiter, line breaks (one blank line), non-ASCII letters.
FINDINGS = ("Lungs: 4 mm nodule | right ^ upper & lobe ~ stable \\ unchanged.\n\n"
            "Pleura: no effusion. Größe 5 × 3 cm, Ødem ñ.")
IMPRESSION = "1. Nodule, follow-up in 12 months.\n2. Ärztlich: no acute finding."
STUDY_UID = "1.2.826.0.1.3680043.8.498.12345"


def _order(accession: str, **extra: Any) -> OrderData:
    patient = PatientData(patient_id=f"MRN-{accession}", issuer="HOSP", family_name="SYNTH^ETIC", given_name="Tëst",
                          sex="F")
    return OrderData(control=OrderControl.NEW, patient=patient, accession_number=accession,
                     placer_order_number=f"PL-{accession}", filler_order_number=f"FL-{accession}",
                     requested_procedure_id=f"RP-{accession}", scheduled_step_id=f"SPS-{accession}",
                     study_instance_uid=STUDY_UID, procedure_code="CTCHEST", procedure_text="CT CHEST W/O",
                     modality="CT", priority=Priority.STAT, ordered_at=T0, **extra)


def _add(factory: sessionmaker[Session], accession: str) -> int:
    with session_scope(factory) as session:
        worklist.apply_order(session=session, order=_order(accession))
    return add_report(factory, accession, {"findings": FINDINGS, "impression": IMPRESSION})


@pytest.fixture
def ris_port() -> int:
    return free_port()


@pytest.fixture
def sender_loop(factory: sessionmaker[Session], client: TestClient,
                ris_port: int) -> Iterator[Callable[..., DeliveryLoop]]:
    """Starts the RIS delivery loop (short timeouts and backoff) and lets signatures wake it."""
    loops: list[DeliveryLoop] = []

    def start(**outbox: float) -> DeliveryLoop:
        ris = RisSettings(host="127.0.0.1", port=ris_port, ack_timeout_s=0.5, connect_timeout_s=1)
        sender = RisSender(ris, sending_application="RADSERVICE", sending_facility="RADIOLOGY")
        loops.append(start_delivery_loop(client.app.state, factory, sender, outbox,  # type: ignore[attr-defined]
                                         owner="test:ris"))
        return loops[-1]

    yield start
    for loop in loops:
        loop.join(10)


@pytest.fixture
def doctor(factory: sessionmaker[Session]) -> dict[str, str]:
    token = make_user(factory, "dr.sign", "radiologist")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(factory: sessionmaker[Session]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_user(factory, 'it.admin', 'admin')}"}


def _deliveries(client: TestClient, report_id: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/reports/{report_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = [r for r in response.json() if r["destination"] == "ris"]
    return rows


def _sign(client: TestClient, report_id: int, headers: dict[str, str], status: str) -> None:
    response = sign_report(client, report_id, status, headers=headers)
    assert response.status_code == 200, response.text


def test_each_signed_version_reaches_the_ris_with_its_fields_and_exact_text(
        client: TestClient, factory: sessionmaker[Session], sender_loop: Callable[..., DeliveryLoop],
        ris_port: int, doctor: dict[str, str]) -> None:
    report_id = _add(factory, "ORU-1")
    with factory() as session:
        from radservice.users.models import User
        user = session.query(User).filter_by(username="dr.sign").one()
        user.display_name = "Dr. Ada Q. Lovelace"
        session.commit()
    with RisPeer(ris_port) as ris:
        sender_loop()
        _sign(client, report_id, doctor, "preliminary")
        _sign(client, report_id, doctor, "final")
        added = client.post(f"/api/v1/reports/{report_id}/addenda", json={"text": "Addendum: size 5 | 6 mm."},
                            headers=doctor)
        assert added.status_code == 201, added.text
        received = ris.wait_for(3)
        wait_for(lambda: all(d["status"] == "acked" for d in _deliveries(client, report_id, doctor)), "three ACKs")
    deliveries = _deliveries(client, report_id, doctor)
    assert [(d["version"], d["ack_code"], d["attempts"]) for d in deliveries] == [(1, "AA", 1), (2, "AA", 1),
                                                                                  (3, "AA", 1)]
    # one kept-open connection for all three
    assert {m.connection for m in received} == {1}
    assert [m.field("MSH", 10) for m in received] == [d["message_id"] for d in deliveries]
    statuses = []
    for oru in received:
        assert oru.field("MSH", 3) == "RADSERVICE" and oru.field("MSH", 4) == "RADIOLOGY"
        assert oru.field("MSH", 5) == "RIS" and oru.field("MSH", 6) == "HOSPITAL"
        assert (oru.field("MSH", 9, 1), oru.field("MSH", 9, 2), oru.field("MSH", 9, 3)) == ("ORU", "R01", "ORU_R01")
        assert oru.field("MSH", 12) == "2.5.1" and oru.field("MSH", 18) == "UNICODE UTF-8"
        assert [s[0][0] for s in oru.message][:6] == ["MSH", "PID", "PV1", "ORC", "TQ1", "OBR"]
        assert oru.field("PID", 3, 1) == "MRN-ORU-1" and oru.field("PID", 3, 4) == "HOSP"
        assert oru.field("PID", 5, 1) == "SYNTH^ETIC" and oru.field("PID", 5, 2) == "Tëst"
        assert oru.field("PID", 8) == "F"
        assert oru.field("ORC", 1) == "RE"
        assert oru.field("ORC", 2) == "PL-ORU-1" and oru.field("ORC", 3) == "FL-ORU-1"
        assert oru.field("TQ1", 9) == "S"
        assert oru.field("OBR", 2) == "PL-ORU-1" and oru.field("OBR", 3) == "FL-ORU-1"
        assert oru.field("OBR", 4, 1) == "CTCHEST" and oru.field("OBR", 4, 2) == "CT CHEST W/O"
        assert oru.field("OBR", 7) == "20261124080000+0000"
        assert oru.field("OBR", 18) == "ORU-1" and oru.field("OBR", 19) == "RP-ORU-1"
        assert oru.field("OBR", 22)[:8] == time.strftime("%Y%m%d", time.gmtime())
        assert oru.field("OBR", 24) == "RAD"
        assert oru.field("OBR", 32, 1, 1) == "dr.sign"
        assert oru.field("OBR", 32, 1, 2) == "Lovelace" and oru.field("OBR", 32, 1, 3) == "Ada"
        assert oru.field("OBR", 32, 1, 4) == "Q." and oru.field("OBR", 32, 1, 6) == "Dr."  # middle, prefix
        assert oru.field("OBR", 44, 1) == "CTCHEST"
        status = oru.field("OBR", 25)
        statuses.append(status)
        assert {oru.obx_value(s, 11) for s in oru.obx()} == {status}
        assert [oru.obx_value(s, 1) for s in oru.obx()] == [str(n) for n in range(1, len(oru.obx()) + 1)]
        sections = oru.sections()
        assert sections["18782-3"] == FINDINGS
        assert sections["19005-8"] == IMPRESSION
        uids = {oru.obx_value(s, 3): oru.obx_value(s, 5) for s in oru.obx() if str(s[2]) == "ST"}
        assert uids["113014"] == STUDY_UID
        assert uids["SR_UID"].startswith("2.25.")
    assert statuses == ["P", "F", "C"]
    addendum = received[2].sections()["55107-7"]
    assert addendum == "Addendum: size 5 | 6 mm."
    report = client.get(f"/api/v1/reports/{report_id}", headers=doctor).json()
    assert [v["sr_instance_uid"] for v in report["versions"]] == [
        {r.obx_value(s, 3): r.obx_value(s, 5) for s in r.obx()}["SR_UID"] for r in received]


def test_ris_down_at_signing_then_up_is_delivered_once(
        client: TestClient, factory: sessionmaker[Session], sender_loop: Callable[..., DeliveryLoop],
        ris_port: int, doctor: dict[str, str]) -> None:
    report_id = _add(factory, "DOWN-1")
    sender_loop()
    _sign(client, report_id, doctor, "final")
    wait_for(lambda: (lambda r: r["attempts"] >= 2 and r["status"] == "pending")(
        _deliveries(client, report_id, doctor)[0]), "two failed attempts")
    (row,) = _deliveries(client, report_id, doctor)
    assert row["status"] == "pending" and "cannot connect" in row["last_error"], row
    assert row["next_attempt_at"] is not None
    with RisPeer(ris_port) as ris:
        wait_for(lambda: _deliveries(client, report_id, doctor)[0]["status"] == "acked", "the ACK", timeout=20)
        time.sleep(0.5)  # more polls: nothing more may go out
        assert len(ris.received) == 1
        assert ris.received[0].field("MSH", 10) == row["message_id"]
    (row,) = _deliveries(client, report_id, doctor)
    assert row["ack_code"] == "AA" and row["acked_at"] is not None


def test_ae_fails_with_the_ris_reason_and_an_admin_retry_resends_the_same_message(
        client: TestClient, factory: sessionmaker[Session], sender_loop: Callable[..., DeliveryLoop],
        ris_port: int, doctor: dict[str, str], admin: dict[str, str]) -> None:
    report_id = _add(factory, "AE-1")
    with RisPeer(ris_port, answer="AE") as ris:
        sender_loop()
        _sign(client, report_id, doctor, "final")
        wait_for(lambda: _deliveries(client, report_id, doctor)[0]["status"] == "failed", "the failure")
        (row,) = _deliveries(client, report_id, doctor)
        assert row["ack_code"] == "AE" and row["attempts"] == 1
        assert "Order not found in RIS" in row["last_error"] and "204" in row["last_error"], row
        failed = client.get("/api/v1/admin/outbox", params={"status": "failed"}, headers=admin).json()
        assert [f["id"] for f in failed] == [row["id"]]
        ris.answer = "AA"
        assert client.post(f"/api/v1/admin/outbox/{row['id']}/retry", headers=admin).status_code == 200
        wait_for(lambda: _deliveries(client, report_id, doctor)[0]["status"] == "acked", "the ACK after the retry")
        assert [m.field("MSH", 10) for m in ris.received] == [row["message_id"]] * 2
        assert ris.received[0].raw == ris.received[1].raw
    assert _deliveries(client, report_id, doctor)[0]["attempts"] == 2


def test_ar_is_retried_up_to_ar_attempts_then_fails(
        client: TestClient, factory: sessionmaker[Session], sender_loop: Callable[..., DeliveryLoop],
        ris_port: int, doctor: dict[str, str]) -> None:
    report_id = _add(factory, "AR-1")
    with RisPeer(ris_port, answer="AR") as ris:
        sender_loop()
        _sign(client, report_id, doctor, "final")
        wait_for(lambda: _deliveries(client, report_id, doctor)[0]["status"] == "failed", "the failure", timeout=30)
        time.sleep(1.0)  # several backoff periods: no attempt after the last
        assert len(ris.received) == 5  # ris.ar_attempts: AR may mean "system down"
    (row,) = _deliveries(client, report_id, doctor)
    assert row["ack_code"] == "AR" and row["attempts"] == 5 and row["last_error"].startswith("AR:")


def test_a_ris_that_never_answers_is_retried_with_backoff_then_given_up(
        client: TestClient, factory: sessionmaker[Session], sender_loop: Callable[..., DeliveryLoop],
        ris_port: int, doctor: dict[str, str]) -> None:
    from radservice.outbox.models import Delivery

    report_id = _add(factory, "SILENT-1")
    waits: list[timedelta] = []
    with RisPeer(ris_port, answer="silent") as ris:
        sender_loop(give_up_after_h=4 / 3600)  # 4 s after signing
        _sign(client, report_id, doctor, "final")
        seen = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with factory() as session:
                row = session.query(Delivery).filter_by(destination="ris").one()
                if row.status == "failed":
                    break
                if row.status == "pending" and row.attempts > seen:
                    seen = row.attempts
                    # the failure was recorded at updated_at; the next attempt is due after the backoff
                    waits.append(row.next_attempt_at - row.updated_at)
            time.sleep(0.02)
        (final,) = _deliveries(client, report_id, doctor)
        assert final["status"] == "failed", final
        assert final["last_error"].startswith("gave up after") and "no ACK" in final["last_error"], final
        # every attempt resent the same message; a new connection after each timeout
        assert len(ris.received) == final["attempts"] >= 3
        assert len({m.raw for m in ris.received}) == 1
        assert len({m.connection for m in ris.received}) == len(ris.received)
    # the waits double (0.2 s, 0.4 s, then at most 0.8 s; the last one is cut at give_up_at)
    seconds = [round(w.total_seconds(), 3) for w in waits]
    assert len(seconds) >= 2 and seconds[:2] == [0.2, 0.4], seconds
    assert all(s <= 0.8 for s in seconds), seconds


def test_an_addendum_signed_while_version_one_is_pending_goes_out_after_it(
        client: TestClient, factory: sessionmaker[Session], sender_loop: Callable[..., DeliveryLoop],
        ris_port: int, doctor: dict[str, str]) -> None:
    report_id = _add(factory, "ORDER-1")
    sender_loop()
    _sign(client, report_id, doctor, "final")
    added = client.post(f"/api/v1/reports/{report_id}/addenda", json={"text": "Late addendum."}, headers=doctor)
    assert added.status_code == 201
    wait_for(lambda: _deliveries(client, report_id, doctor)[0]["attempts"] >= 1, "a first attempt")
    first, second = _deliveries(client, report_id, doctor)
    assert second["waiting_for_version"] == 1 and second["attempts"] == 0, second
    with RisPeer(ris_port) as ris:
        received = ris.wait_for(2, timeout=20)
        wait_for(lambda: all(d["status"] == "acked" for d in _deliveries(client, report_id, doctor)), "both ACKs")
    # An ACK later than ack_timeout_s (a loaded machine) makes the sender resend the same message
    # (same control ID, by design): what counts is the order, each message after the one before.
    ids = [key for key, _ in itertools.groupby(m.field("MSH", 10) for m in received)]
    statuses = [key for key, _ in itertools.groupby(m.field("OBR", 25) for m in received)]
    assert statuses == ["F", "C"]
    assert ids == [first["message_id"], second["message_id"]]
