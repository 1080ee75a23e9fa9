"""A failed version never holds back a later one (issue 26): each version carries the whole
report. Later versions supersede failed ones; an admin may skip or supersede a failed row, and
may not retry one that a newer version already replaced. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit.models import AuditEvent
from radservice.outbox import service as outbox
from radservice.outbox.models import Delivery
from tests.support import add_report, add_study, make_user, sign_report

pytestmark = pytest.mark.integration

TEXT = {"findings": "Lungs: clear.", "impression": "No acute finding."}
LEASE = timedelta(seconds=60)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(factory: sessionmaker[Session]) -> dict[str, dict[str, str]]:
    return {role: _auth(make_user(factory, f"u.{role}", role)) for role in ("radiologist", "resident", "admin")}


def _signed(client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]],
            accession: str, *kinds: str) -> int:
    add_study(factory, accession)
    report_id = add_report(factory, accession, TEXT)
    for kind in kinds:
        who = "resident" if kind == "preliminary" else "radiologist"
        signed = sign_report(client, report_id, kind, headers=people[who])
        assert signed.status_code == 200, signed.text
    return report_id


def _ris_rows(factory: sessionmaker[Session], accession: str) -> dict[int, Delivery]:
    with factory() as session:
        rows = session.scalars(select(Delivery).where(Delivery.destination == "ris",
                                                      Delivery.accession_number == accession)).all()
        return {row.version: row for row in rows}


def _set_status(factory: sessionmaker[Session], delivery_id: int, status: str) -> None:
    with factory() as session:
        session.get_one(Delivery, delivery_id).status = status
        session.commit()


def test_a_refused_preliminary_does_not_hold_back_the_final(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    _signed(client, factory, people, "FAIL-1", "preliminary", "final")
    with factory() as session:
        first = outbox.claim_due(session=session, destination="ris", owner="t", lease=LEASE)
        assert [session.get_one(Delivery, i).version for i in first] == [1]  # v2 waits while v1 is open
        assert outbox.record_refused(session=session, delivery_id=first[0], owner="t", ack_code="AE",
                                     error="AE: preliminary results not accepted")
        session.commit()
        second = outbox.claim_due(session=session, destination="ris", owner="t", lease=LEASE)
        assert [session.get_one(Delivery, i).version for i in second] == [2]  # the final leaves anyway
        assert outbox.record_acked(session=session, delivery_id=second[0], owner="t", ack_code="AA")
        session.commit()
    rows = _ris_rows(factory, "FAIL-1")
    assert (rows[1].status, rows[2].status) == ("superseded", "acked")
    assert "version 2" in rows[1].last_error


def test_retrying_a_version_older_than_one_already_sent_is_refused(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    _signed(client, factory, people, "FAIL-2", "preliminary", "final")
    rows = _ris_rows(factory, "FAIL-2")
    _set_status(factory, rows[1].id, "failed")
    _set_status(factory, rows[2].id, "sent")
    refused = client.post(f"/api/v1/admin/outbox/{rows[1].id}/retry", headers=people["admin"])
    assert refused.status_code == 409 and "newer" in refused.json()["detail"]


def test_an_admin_skips_or_supersedes_a_failed_row_and_it_is_audited(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    _signed(client, factory, people, "FAIL-3", "preliminary")
    rows = _ris_rows(factory, "FAIL-3")
    url = f"/api/v1/admin/outbox/{rows[1].id}"
    assert client.post(f"{url}/skip", json={"reason": "x"}, headers=people["admin"]).status_code == 409  # pending
    _set_status(factory, rows[1].id, "failed")
    assert client.post(f"{url}/skip", json={"reason": "x"}, headers=people["radiologist"]).status_code == 403
    nothing_later = client.post(f"{url}/supersede", headers=people["admin"])
    assert nothing_later.status_code == 409 and "newest" in nothing_later.json()["detail"]
    assert client.post(f"{url}/skip", json={"reason": ""}, headers=people["admin"]).status_code == 422
    skipped = client.post(f"{url}/skip", json={"reason": "this RIS takes final reports only"},
                          headers=people["admin"])
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["status"] == "skipped"

    _signed(client, factory, people, "FAIL-4", "preliminary", "final")
    rows4 = _ris_rows(factory, "FAIL-4")
    _set_status(factory, rows4[1].id, "failed")
    superseded = client.post(f"/api/v1/admin/outbox/{rows4[1].id}/supersede", headers=people["admin"])
    assert superseded.status_code == 200, superseded.text
    assert superseded.json()["status"] == "superseded"
    with factory() as session:
        actions = [a for a, in session.execute(select(AuditEvent.action).where(AuditEvent.action.like("outbox.%")))]
    assert sorted(actions) == ["outbox.skip", "outbox.supersede"]


def test_retry_is_refused_once_a_newer_version_was_tried_even_without_an_answer(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    _signed(client, factory, people, "FAIL-5", "preliminary", "final")
    with factory() as session:
        (first,) = outbox.claim_due(session=session, destination="ris", owner="t", lease=LEASE)
        outbox.record_refused(session=session, delivery_id=first, owner="t", ack_code="AE", error="AE: no")
        session.commit()
        (second,) = outbox.claim_due(session=session, destination="ris", owner="t", lease=LEASE)
        # v2 went out and no ACK came back in time: pending again, but the RIS may well have it
        assert outbox.record_retry(session=session, delivery_id=second, owner="t", error="no ACK",
                                   initial=timedelta(seconds=0), maximum=timedelta(seconds=0)) == "pending"
        session.commit()
    refused = client.post(f"/api/v1/admin/outbox/{first}/retry", headers=people["admin"])
    assert refused.status_code == 409 and "may have reached the peer" in refused.json()["detail"]
    with factory() as session:
        assert outbox.claim_due(session=session, destination="ris", owner="t", lease=LEASE) == [second]
