"""Auth end to end through the HTTP API on a real database: tokens, 401, 403, audit, readiness."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.api.app import create_app
from radservice.audit.models import AuditEvent
from radservice.config import Settings
from radservice.db.base import utcnow
from radservice.db.session import make_engine, session_scope
from radservice.users import service as users
from radservice.users.models import ApiToken
from tests.support import make_user, write_read_audit

pytestmark = pytest.mark.integration




def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_me_returns_the_callers_name_and_role(client: TestClient, factory: sessionmaker[Session]) -> None:
    token = make_user(factory, "dr.ames", "attending")
    response = client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"username": "dr.ames", "display_name": "dr.ames", "role": "radiologist",
                               "page": {"max_offline_s": 120, "record_key": "F4", "hold_key": ""}}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer rs_not-a-real-token"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["no-token", "unknown-token", "wrong-scheme"],
)
def test_missing_or_bad_token_is_401_with_a_message(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_wrong_role_is_403_and_the_right_role_passes(client: TestClient, factory: sessionmaker[Session]) -> None:
    radiologist = make_user(factory, "dr.bell", "radiologist")
    admin = make_user(factory, "it.admin", "admin")
    denied = client.get("/api/v1/admin/users", headers=bearer(radiologist))
    assert denied.status_code == 403
    assert "admin" in denied.json()["detail"]
    allowed = client.get("/api/v1/admin/users", headers=bearer(admin))
    assert allowed.status_code == 200
    assert {u["username"] for u in allowed.json()} == {"dr.bell", "it.admin"}
    write_read_audit(client.app)
    with session_scope(factory) as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "it.admin")).all()
    assert actions == ["users.list"]


def test_expired_token_is_401(client: TestClient, factory: sessionmaker[Session]) -> None:
    token = make_user(factory, "dr.cole", "resident")
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    with session_scope(factory) as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == users.hash_token(token)))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_revoked_user_is_401(client: TestClient, factory: sessionmaker[Session]) -> None:
    token = make_user(factory, "dr.dunn", "editor")
    with session_scope(factory) as session:
        assert users.revoke_user(session=session, username="dr.dunn") == 1
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_tokens_are_stored_hashed(factory: sessionmaker[Session]) -> None:
    token = make_user(factory, "dr.eve", "radiologist")
    with session_scope(factory) as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert token not in stored
    assert stored == [users.hash_token(token)]


def test_readyz_reports_the_database(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_readyz_is_503_when_the_database_is_gone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/gone/rs.db")
    settings = Settings()
    app = create_app(settings, engine)
    (tmp_path / "gone").rename(tmp_path / "moved")
    (tmp_path / "gone").write_text("not a directory")  # the file's folder is now a plain file
    with TestClient(app) as test_client:
        response = test_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"


def test_metrics_count_requests_by_route(client: TestClient, factory: sessionmaker[Session]) -> None:
    token = make_user(factory, "dr.fox", "radiologist")
    client.get("/api/v1/me", headers=bearer(token))
    client.get("/api/v1/me")
    text = client.get("/metrics").text
    assert 'radservice_http_requests_total{method="GET",route="/api/v1/me",status="200"} 1.0' in text
    assert 'radservice_http_requests_total{method="GET",route="/api/v1/me",status="401"} 1.0' in text


def test_metrics_show_the_backlog_an_admin_alerts_on(client: TestClient, factory: sessionmaker[Session]) -> None:
    from radservice.db.session import session_scope
    from radservice.jobs import service as jobs
    from tests.support import add_report, add_study, sign_report

    text = client.get("/metrics").text
    assert 'radservice_outbox_open{destination="ris",status="pending"} 0.0' in text
    assert "\nradservice_jobs_oldest_queued_seconds 0.0" in text
    add_study(factory, "MET-1")
    report_id = add_report(factory, "MET-1", {"findings": "Normal.", "impression": "Normal."})
    token = make_user(factory, "dr.metrics", "radiologist")
    assert sign_report(client, report_id, "final", headers=bearer(token)).status_code == 200
    with session_scope(factory) as session:
        jobs.enqueue(session=session, kind="transcribe", payload={})
    time.sleep(0.05)
    text = client.get("/metrics").text
    for destination in ("ris", "pacs"):  # nothing sends in this test: both wait
        assert f'radservice_outbox_open{{destination="{destination}",status="pending"}} 1.0' in text
        assert f'radservice_outbox_open{{destination="{destination}",status="failed"}} 0.0' in text
        waiting = float(text.split(f'radservice_outbox_oldest_waiting_seconds{{destination="{destination}"}} ')[1]
                        .split()[0])
        assert 0 < waiting < 60
    assert 'radservice_jobs_open{kind="transcribe",status="queued"} 1.0' in text
    assert 0 < float(text.split("\nradservice_jobs_oldest_queued_seconds ")[1].split()[0]) < 60
