"""Signing through the API on SQLite and PostgreSQL: who may sign what, immutable versions, the
outbox rows written with the signature, addenda, the admin's outbox routes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.outbox.models import Delivery
from radservice.reports.models import ReportVersion
from tests.support import add_report, add_study, make_user, sign_report

pytestmark = pytest.mark.integration

TEXT = {"findings": "Lungs: clear.\nPleura: no effusion.", "impression": "No acute finding."}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(factory: sessionmaker[Session]) -> dict[str, dict[str, str]]:
    return {role: _auth(make_user(factory, f"u.{role}", role))
            for role in ("radiologist", "resident", "editor", "admin")}


def test_sign_preliminary_then_final_writes_versions_and_outbox_rows(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "SIGN-1")
    report_id = add_report(factory, "SIGN-1", TEXT)
    url = f"/api/v1/reports/{report_id}"
    revision = client.get(url, headers=people["radiologist"]).json()["revision"]

    stale = client.post(f"{url}/sign", json={"status": "preliminary", "revision": revision - 1},
                        headers=people["resident"])
    assert stale.status_code == 409 and "revision" in stale.json()["detail"]
    prelim = client.post(f"{url}/sign", json={"status": "preliminary", "revision": revision},
                         headers=people["resident"])
    assert prelim.status_code == 200, prelim.text
    body = prelim.json()
    assert body["status"] == "preliminary" and body["version"] == 1 and body["signed_by"] == "u.resident"
    assert [v["result_status"] for v in body["versions"]] == ["P"]
    # preliminary studies stay on the worklist; a signed version cannot be edited
    worklist = client.get("/api/v1/worklist", headers=people["radiologist"]).json()
    assert [s["accession_number"] for s in worklist["items"]] == ["SIGN-1"]
    edit = client.patch(url, json={"sections": {"impression": "changed"}, "revision": body["revision"]},
                        headers=people["radiologist"])
    assert edit.status_code == 409
    # a resident cannot sign final; editors and admins sign nothing
    signed_revision = {"status": "final", "revision": body["revision"]}
    assert client.post(f"{url}/sign", json=signed_revision, headers=people["resident"]).status_code == 403
    for role in ("editor", "admin"):
        refused = client.post(f"{url}/sign", json=signed_revision, headers=people[role])
        assert refused.status_code == 403 and "may not" in refused.json()["detail"]
    assert client.post(f"{url}/sign", json={"status": "amended"}, headers=people["radiologist"]).status_code == 422

    final = client.post(f"{url}/sign", json=signed_revision, headers=people["radiologist"])
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "final" and final.json()["version"] == 2
    assert [(v["version"], v["result_status"], v["signed_by"]) for v in final.json()["versions"]] == [
        (1, "P", "u.resident"), (2, "F", "u.radiologist")]
    again = client.post(f"{url}/sign", json={"status": "final", "revision": final.json()["revision"]},
                        headers=people["radiologist"])
    assert again.status_code == 409 and "addendum" in again.json()["detail"]
    # final: off the worklist, still readable, status final on the study
    assert client.get("/api/v1/worklist", headers=people["radiologist"]).json()["items"] == []
    assert client.get("/api/v1/studies/SIGN-1", headers=people["radiologist"]).json()["status"] == "final"

    deliveries = client.get(f"{url}/deliveries", headers=people["radiologist"]).json()
    assert [(d["version"], d["destination"], d["status"], d["attempts"]) for d in deliveries] == [
        (1, "pacs", "pending", 0), (1, "ris", "pending", 0), (2, "pacs", "pending", 0), (2, "ris", "pending", 0)]
    assert [d["waiting_for_version"] for d in deliveries] == [None, None, 1, 1]
    ids = [d["message_id"] for d in deliveries if d["destination"] == "ris"]
    assert len(set(ids)) == 2 and all(len(i) == 20 for i in ids)
    with factory() as session:
        versions = session.scalars(select(ReportVersion).order_by(ReportVersion.version)).all()
        assert [v.sections for v in versions] == [{**versions[0].sections, **TEXT}] * 2
        assert len({v.sr_instance_uid for v in versions}) == 2
        assert all(v.sr_instance_uid.startswith("2.25.") and len(v.sr_instance_uid) <= 64 for v in versions)


def test_addenda_need_a_final_report_and_carry_the_whole_report(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "ADD-1")
    report_id = add_report(factory, "ADD-1", TEXT)
    url = f"/api/v1/reports/{report_id}"
    early = client.post(f"{url}/addenda", json={"text": "Too early."}, headers=people["radiologist"])
    assert early.status_code == 409 and "final" in early.json()["detail"]
    assert sign_report(client, report_id, "final", headers=people["radiologist"]).status_code == 200
    assert client.post(f"{url}/addenda", json={"text": "  "}, headers=people["radiologist"]).status_code == 422
    assert client.post(f"{url}/addenda", json={"text": "x"}, headers=people["editor"]).status_code == 403
    first = client.post(f"{url}/addenda", json={"text": "Comparison with 2026-10-01: stable."},
                        headers=people["radiologist"])
    assert first.status_code == 201, first.text
    second = client.post(f"{url}/addenda", json={"text": "Discussed with Dr. Synth."}, headers=people["radiologist"])
    body = second.json()
    assert body["status"] == "amended" and body["version"] == 3
    assert [v["result_status"] for v in body["versions"]] == ["F", "C", "C"]
    assert body["sections"]["findings"] == TEXT["findings"]
    assert body["sections"]["addendum_1"] == "Comparison with 2026-10-01: stable."
    assert body["sections"]["addendum_2"] == "Discussed with Dr. Synth."
    titles = {t["key"]: t["title"] for t in body["section_titles"]}
    assert titles["addendum_2"].startswith("Addendum 2 (") and "u.radiologist" in titles["addendum_2"]
    with factory() as session:
        rows = session.scalars(select(Delivery).where(Delivery.destination == "ris").order_by(Delivery.version)).all()
        assert [(r.version, r.status) for r in rows] == [(1, "pending"), (2, "pending"), (3, "pending")]
        last = session.scalars(select(ReportVersion).where(ReportVersion.version == 3)).one()
        assert set(last.sections) >= {"findings", "impression", "addendum_1", "addendum_2"}


def test_signing_refuses_an_empty_report_and_a_cancelled_study(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "EMPTY-1")
    report_id = add_report(factory, "EMPTY-1", {"findings": "", "impression": ""})
    with factory() as session:
        from radservice.reports.models import Report
        report = session.get_one(Report, report_id)
        report.sections = {k: "" for k in report.sections}
        session.commit()
    empty = sign_report(client, report_id, "final", headers=people["radiologist"])
    assert empty.status_code == 422 and "no text" in empty.json()["detail"]
    assert client.post("/api/v1/reports/424242/sign", json={"status": "final", "revision": 1},
                       headers=people["radiologist"]).status_code == 404
    with factory() as session:
        assert session.scalars(select(Delivery)).all() == []


def test_admin_outbox_lists_filters_and_retries_only_failed_rows(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    for accession in ("OUT-1", "OUT-2"):
        add_study(factory, accession)
        report_id = add_report(factory, accession, TEXT)
        assert sign_report(client, report_id, "final", headers=people["radiologist"]).status_code == 200
    assert client.get("/api/v1/admin/outbox", headers=people["radiologist"]).status_code == 403
    rows = client.get("/api/v1/admin/outbox", headers=people["admin"]).json()
    assert [r["accession_number"] for r in rows] == ["OUT-2", "OUT-2", "OUT-1", "OUT-1"]
    one = client.get("/api/v1/admin/outbox", params={"accession": "OUT-1", "status": "pending",
                                                     "destination": "ris"}, headers=people["admin"]).json()
    assert [r["accession_number"] for r in one] == ["OUT-1"]
    assert client.get("/api/v1/admin/outbox", params={"status": "failed"}, headers=people["admin"]).json() == []
    assert client.get("/api/v1/admin/outbox", params={"status": "lost"}, headers=people["admin"]).status_code == 422
    pending = client.post(f"/api/v1/admin/outbox/{one[0]['id']}/retry", headers=people["admin"])
    assert pending.status_code == 409 and "only a failed row" in pending.json()["detail"]
    assert client.post("/api/v1/admin/outbox/999999/retry", headers=people["admin"]).status_code == 404
    with factory() as session:
        row = session.get_one(Delivery, one[0]["id"])
        row.status, row.last_error, row.ack_code = "failed", "AR: refused", "AR"
        session.commit()
    retried = client.post(f"/api/v1/admin/outbox/{one[0]['id']}/retry", headers=people["admin"])
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending" and retried.json()["message_id"] == one[0]["message_id"]


def test_control_characters_are_cleaned_where_text_enters_the_report(
        client: TestClient, factory: sessionmaker[Session], people: dict[str, dict[str, str]]) -> None:
    add_study(factory, "CTRL-1")
    report_id = add_report(factory, "CTRL-1", TEXT)
    url = f"/api/v1/reports/{report_id}"
    # Word's soft line break (VT), a NUL and a file separator pasted into the editor
    edited = client.patch(url, json={"sections": {"impression": "No acute\x0bfinding.\x00\x1c"},
                                    "revision": client.get(url, headers=people["radiologist"]).json()["revision"]},
                          headers=people["radiologist"])
    assert edited.status_code == 200, edited.text
    assert edited.json()["sections"]["impression"] == "No acute\nfinding."
    assert sign_report(client, report_id, "final", headers=people["radiologist"]).status_code == 200
    addendum = client.post(f"{url}/addenda", json={"text": "Compared\x0bwith prior.\x07"},
                           headers=people["radiologist"])
    assert addendum.status_code == 201, addendum.text
    with factory() as session:
        versions = session.scalars(select(ReportVersion).order_by(ReportVersion.version)).all()
        texts = "".join("".join(v.sections.values()) for v in versions)
    assert not [ch for ch in texts if ch < " " and ch not in "\n\t"]
    assert "Compared\nwith prior." in texts
