"""GET /api/v1/worklist and /api/v1/studies/{accession} on a real database: filters, order, audit."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit.models import AuditEvent
from radservice.db.session import session_scope
from radservice.worklist import service as worklist
from radservice.worklist.intake import OrderControl, Priority
from tests.support import add_study as add
from tests.support import make_user, write_read_audit

pytestmark = pytest.mark.integration





@pytest.fixture
def token(factory: sessionmaker[Session]) -> str:
    add(factory, "R-OLD", minutes=0)
    add(factory, "R-NEW", minutes=30, modality="MR", procedure="MRI KNEE")
    add(factory, "S-LATE", minutes=50, priority=Priority.STAT, family="MÜLLER")
    add(factory, "S-EARLY", minutes=10, priority=Priority.STAT, modality="US", procedure="US ABDOMEN")
    add(factory, "A-ONE", minutes=5, priority=Priority.ASAP, family="O'NEIL")
    add(factory, "GONE", minutes=1)
    add(factory, "GONE", minutes=1, control=OrderControl.CANCEL)
    return make_user(factory, "dr.list", "resident")


def get(client: TestClient, token: str, path: str, **params: object) -> dict[str, object]:
    response = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def accessions(body: dict[str, object]) -> list[str]:
    return [row["accession_number"] for row in body["items"]]  # type: ignore[index, union-attr]


def test_stat_first_then_oldest_order_and_cancelled_left_out(client: TestClient, token: str) -> None:
    body = get(client, token, "/api/v1/worklist")
    assert accessions(body) == ["S-EARLY", "S-LATE", "A-ONE", "R-OLD", "R-NEW"]
    assert body["total"] == 5


def test_filters(client: TestClient, token: str) -> None:
    assert accessions(get(client, token, "/api/v1/worklist", modality="MR")) == ["R-NEW"]
    both = get(client, token, "/api/v1/worklist", modality="ct,us")
    assert accessions(both) == ["S-EARLY", "S-LATE", "A-ONE", "R-OLD"]
    assert accessions(get(client, token, "/api/v1/worklist", priority="S")) == ["S-EARLY", "S-LATE"]
    assert accessions(get(client, token, "/api/v1/worklist", status="cancelled")) == ["GONE"]
    assert accessions(get(client, token, "/api/v1/worklist", q="müller")) == ["S-LATE"]  # case-folded, non-ASCII
    assert accessions(get(client, token, "/api/v1/worklist", q="knee")) == ["R-NEW"]
    assert accessions(get(client, token, "/api/v1/worklist", q="o'neil")) == ["A-ONE"]
    assert accessions(get(client, token, "/api/v1/worklist", q="%")) == []  # a wildcard is just a character


def test_pagination(client: TestClient, token: str) -> None:
    page1 = get(client, token, "/api/v1/worklist", limit=2)
    page2 = get(client, token, "/api/v1/worklist", limit=2, offset=page1["next_offset"])
    page3 = get(client, token, "/api/v1/worklist", limit=2, offset=page2["next_offset"])
    assert accessions(page1) + accessions(page2) + accessions(page3) == [
        "S-EARLY", "S-LATE", "A-ONE", "R-OLD", "R-NEW"]
    assert page3["next_offset"] is None


@pytest.mark.parametrize("params", [{"status": "bogus"}, {"priority": "X"}, {"limit": 0}, {"limit": 10_000}])
def test_bad_filters_are_422_with_a_message(client: TestClient, token: str, params: dict[str, object]) -> None:
    response = client.get("/api/v1/worklist", params=params,  # type: ignore[arg-type]
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422
    assert response.json()["detail"]


def test_study_view_and_404(client: TestClient, token: str) -> None:
    body = get(client, token, "/api/v1/studies/S-LATE")
    assert body["patient"]["family_name"] == "MÜLLER"  # type: ignore[index]
    assert body["status"] == "scheduled"
    missing = client.get("/api/v1/studies/NOPE", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404
    assert "NOPE" in missing.json()["detail"]


def test_worklist_needs_a_token(client: TestClient) -> None:
    assert client.get("/api/v1/worklist").status_code == 401
    assert client.get("/api/v1/studies/R-OLD").status_code == 401


def test_every_read_of_patient_data_is_audited(client: TestClient, token: str,
                                               factory: sessionmaker[Session]) -> None:
    get(client, token, "/api/v1/worklist", limit=2)
    get(client, token, "/api/v1/studies/A-ONE")
    write_read_audit(client.app)
    with session_scope(factory) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.actor == "dr.list").order_by(AuditEvent.id)).all()
        rows = [(e.action, e.entity_id, e.detail) for e in events]
    assert rows[0][0] == "worklist.read"
    assert rows[0][2]["accessions"] == ["S-EARLY", "S-LATE"]  # type: ignore[index]
    assert rows[1][:2] == ("study.read", "A-ONE")
    assert all(e.at is not None for e in events)


def test_the_pages_own_refreshes_are_audited_when_they_show_something_new(
        client: TestClient, token: str, factory: sessionmaker[Session]) -> None:
    """A background refresh of the page (cookie session) showing the same studies again is not a
    new row; a person's read, a different page of studies, a new study, or any read with a
    token (a machine) is."""
    from radservice.users import signin

    with session_scope(factory) as session:
        signin.set_password(session=session, username="dr.list", password="a long test password")
    assert client.post("/api/v1/session", json={"username": "dr.list", "password": "a long test password"}
                       ).status_code == 200

    def read(background: bool, with_token: bool = False, **params: object) -> None:
        headers = ({"Authorization": f"Bearer {token}"} if with_token else {}) | (
            {"X-Radservice-Background": "1"} if background else {})
        assert client.get("/api/v1/worklist", params=params, headers=headers).status_code == 200

    def audited() -> list[tuple[int, list[str]]]:
        write_read_audit(client.app)
        with session_scope(factory) as session:
            details = session.scalars(select(AuditEvent.detail).where(AuditEvent.actor == "dr.list",
                                                                      AuditEvent.action == "worklist.read")
                                      .order_by(AuditEvent.id)).all()
        return [(d["offset"], d["accessions"]) for d in details]  # type: ignore[index]

    read(False, limit=2)
    for _ in range(3):
        read(True, limit=2)
    assert len(audited()) == 1
    read(True, limit=2, offset=2)  # other studies shown
    read(False, limit=2)  # the person asked: always a row
    assert [offset for offset, _ in audited()] == [0, 2, 0]
    read(True, with_token=True, limit=2)  # the header is the page's: a token's reads are all audited
    assert len(audited()) == 4
    add(factory, "S-NEWEST", minutes=-1000, priority=Priority.STAT)
    read(True, limit=2)
    assert audited()[-1][1][0] == "S-NEWEST"
    client.app.state.read_repeats.window_s = 0  # once the window has passed, a repeat is a row again
    read(True, limit=2)
    assert len(audited()) == 6


def test_a_refresh_whose_audit_row_failed_is_audited_by_the_next_one() -> None:
    """The key counts as audited only after its row was handed over."""
    from radservice.api.deps import ReadAuditor, RepeatedReads

    repeats = RepeatedReads()
    written: list[str] = []

    class Failing(ReadAuditor):
        fail = True

        def __call__(self, **row: object) -> None:
            if self.fail:
                raise RuntimeError("database unavailable")
            written.append(str(row["action"]))

    auditor = Failing(None, None, repeats, background=True)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        auditor.once(("worklist", 1), action="worklist.read")
    auditor.fail = False
    auditor.once(("worklist", 1), action="worklist.read")
    auditor.once(("worklist", 1), action="worklist.read")
    assert written == ["worklist.read"]
    assert len(RepeatedReads.digest(("worklist", 1, *range(500)))) == 16  # a key's memory does not grow with it


def test_count_is_capped_and_says_so(client: TestClient, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worklist, "COUNT_CAP", 3)
    page = get(client, token, "/api/v1/worklist", limit=2)
    assert (page["total"], page["total_is_exact"], page["next_offset"]) == (3, False, 2)
    last = get(client, token, "/api/v1/worklist", limit=2, offset=4)
    assert accessions(last) == ["R-NEW"]
    assert last["next_offset"] is None
    exact = get(client, token, "/api/v1/worklist", priority="S")
    assert (exact["total"], exact["total_is_exact"]) == (2, True)
