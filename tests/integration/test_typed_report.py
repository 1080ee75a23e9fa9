"""A report typed without dictating: POST /studies/{accession}/report makes the draft from the
study's template (201), or returns the one that exists (200)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit.models import AuditEvent
from radservice.db.session import session_scope
from radservice.worklist.models import Study
from tests.support import add_study, make_user

pytestmark = pytest.mark.integration


def test_the_draft_is_made_once_from_the_template_and_can_be_typed(client: TestClient,
                                                                   factory: sessionmaker[Session]) -> None:
    headers = {"Authorization": f"Bearer {make_user(factory, 'ty.dr', 'radiologist')}"}
    add_study(factory, "TY-1", modality="CT", procedure="CT CHEST")
    made = client.post("/api/v1/studies/TY-1/report", headers=headers)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["status"] == "draft" and body["accession_number"] == "TY-1"
    keys = [t["key"] for t in body["section_titles"]]
    assert "findings" in keys and "impression" in keys
    assert all(text == "" for text in body["sections"].values())
    again = client.post("/api/v1/studies/TY-1/report", headers=headers)
    assert again.status_code == 200 and again.json()["report_id"] == body["report_id"]
    typed = client.patch(f"/api/v1/reports/{body['report_id']}", headers=headers,
                         json={"sections": {"findings": "Lungs are clear."}, "revision": body["revision"]})
    assert typed.status_code == 200 and typed.json()["sections"]["findings"] == "Lungs are clear."
    study = client.get("/api/v1/studies/TY-1", headers=headers).json()
    assert study["report_id"] == body["report_id"]
    with factory() as session:
        created = session.scalars(select(AuditEvent).where(AuditEvent.action == "report.created")).all()
    assert [(e.actor, e.entity_id) for e in created] == [("ty.dr", str(body["report_id"]))]


def test_who_may_and_which_studies(client: TestClient, factory: sessionmaker[Session]) -> None:
    resident = {"Authorization": f"Bearer {make_user(factory, 'ty.res', 'resident')}"}
    admin = {"Authorization": f"Bearer {make_user(factory, 'ty.it', 'admin')}"}
    add_study(factory, "TY-2", modality="MR", procedure="MR BRAIN")
    add_study(factory, "TY-3")
    with session_scope(factory) as session:
        session.scalars(select(Study).where(Study.accession_number == "TY-3")).one().status = "cancelled"
    assert client.post("/api/v1/studies/TY-2/report", headers=admin).status_code == 403
    assert client.post("/api/v1/studies/TY-2/report", headers=resident).status_code == 201
    assert client.post("/api/v1/studies/NOPE/report", headers=resident).status_code == 404
    cancelled = client.post("/api/v1/studies/TY-3/report", headers=resident)
    assert cancelled.status_code == 409 and "cancelled" in cancelled.json()["detail"]


def test_the_draft_says_whether_this_call_made_it(factory: sessionmaker[Session]) -> None:
    """Two first requests at once: the second waits for the study's lock, finds the first's
    draft and says it did not make it (so the route answers 200 and audits no second creation)."""
    from radservice.pipeline.compose import Templates
    from radservice.reports import service as reports
    from tests.support import REPO

    add_study(factory, "TY-4")
    template = Templates.load(REPO / "config" / "templates").pick(modality="CT", procedure_text="CT CHEST")
    with session_scope(factory) as session:
        study = session.scalars(select(Study).where(Study.accession_number == "TY-4")).one()
        first, made = reports.draft_for(session=session, study=study, template=template)
        assert made
    with session_scope(factory) as session:
        study = session.scalars(select(Study).where(Study.accession_number == "TY-4")).one()
        again, made = reports.draft_for(session=session, study=study, template=template)
        assert not made and again.id == first.id
