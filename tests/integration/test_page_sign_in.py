"""People sign in on the page: passwords, the session cookie and its rules (Origin on changes and
on the WebSocket, idle expiry, sign-out, revocation), and the lock after repeated failures."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.websockets import WebSocketDisconnect

from radservice.api.app import create_app
from radservice.audit.models import AuditEvent
from radservice.config import Settings
from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.users import service as users
from radservice.users import signin
from radservice.users.models import SignInFailure, User, WebSession
from tests.support import add_report, add_study, free_port, make_user, write_config, write_read_audit

pytestmark = pytest.mark.integration

OWN = "http://testserver"  # the TestClient's host: the page's own origin
PASSWORD = "correct horse battery"


def _person(factory: sessionmaker[Session], username: str, role: str = "radiologist") -> None:
    make_user(factory, username, role)
    with session_scope(factory) as session:
        signin.set_password(session=session, username=username, password=PASSWORD)


def _app(factory: sessionmaker[Session], tmp_path: Path, **auth: Any) -> TestClient:
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},
                        storage={"data_dir": tmp_path / "data"}, auth=auth)
    return TestClient(create_app(settings, engine))


@pytest.fixture
def page(factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from radservice.api.routes import signin as route
    monkeypatch.setattr(route, "FAILURE_DELAY_S", 0.01)  # the slowing is asserted by its setting, not waited for
    with _app(factory, tmp_path) as client:
        yield client


def _sign_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/session", json={"username": username, "password": password},
                       headers={"origin": OWN})


def _actions(factory: sessionmaker[Session], actor: str) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(AuditEvent.action).where(AuditEvent.actor == actor)
                                    .order_by(AuditEvent.id)))


def test_a_person_signs_in_and_the_cookie_is_httponly_strict_and_works_like_a_token(
        page: TestClient, factory: sessionmaker[Session]) -> None:
    _person(factory, "pg.hale")
    assert page.get("/api/v1/me").status_code == 401  # no cookie, no token
    answer = _sign_in(page, "pg.hale")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"username": "pg.hale", "display_name": "pg.hale", "role": "radiologist",
                             "idle_minutes": 30}
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("radservice_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over HTTPS the cookie is Secure
    assert PASSWORD not in answer.text
    me = page.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["username"] == "pg.hale"
    with factory() as session:
        stored = session.scalars(select(User.password_hash).where(User.username == "pg.hale")).one()
        assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
        web = session.scalars(select(WebSession)).one()
        assert web.token_hash != page.cookies["radservice_session"]  # only its hash is stored
    assert _actions(factory, "pg.hale") == ["auth.sign_in"]


def test_changes_with_the_cookie_must_come_from_the_own_page(page: TestClient,
                                                             factory: sessionmaker[Session]) -> None:
    _person(factory, "pg.csrf")
    add_study(factory, "PG-1")
    report_id = add_report(factory, "PG-1", {"findings": "Clear.", "impression": "Normal."})
    assert _sign_in(page, "pg.csrf").status_code == 200
    revision = page.get(f"/api/v1/reports/{report_id}").json()["revision"]  # a read needs no Origin
    body = {"sections": {"findings": "Clear lungs."}, "revision": revision}
    foreign = page.patch(f"/api/v1/reports/{report_id}", json=body, headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403 and "own page" in foreign.json()["detail"], foreign.text
    missing = page.patch(f"/api/v1/reports/{report_id}", json=body)
    assert missing.status_code == 403
    assert page.post(f"/api/v1/reports/{report_id}/sign", json={"status": "final", "revision": revision},
                     headers={"origin": "https://evil.example"}).status_code == 403
    assert page.delete("/api/v1/session", headers={"origin": "https://evil.example"}).status_code == 403
    own = page.patch(f"/api/v1/reports/{report_id}", json=body, headers={"origin": OWN})
    assert own.status_code == 200, own.text
    assert own.json()["sections"]["findings"] == "Clear lungs."
    # a bearer token is not a cookie: no Origin needed (machines)
    token = make_user(factory, "pg.machine", "radiologist")
    again = page.patch(f"/api/v1/reports/{report_id}", json={**body, "revision": own.json()["revision"]},
                       headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 200, again.text
    # signing in from another site's page is refused too (login cross-site request forgery)
    assert page.post("/api/v1/session", json={"username": "pg.csrf", "password": PASSWORD},
                     headers={"origin": "https://evil.example"}).status_code == 403
    write_read_audit(page.app)
    assert "auth.refused" in _actions(factory, "pg.csrf")


def test_sign_out_idle_expiry_revocation_and_a_new_password_end_the_session(
        page: TestClient, factory: sessionmaker[Session]) -> None:
    _person(factory, "pg.end")
    assert _sign_in(page, "pg.end").status_code == 200
    out = page.delete("/api/v1/session", headers={"origin": OWN})
    assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
    assert page.get("/api/v1/me").status_code == 401
    assert _actions(factory, "pg.end")[-1] == "auth.sign_out"

    assert _sign_in(page, "pg.end").status_code == 200
    with session_scope(factory) as session:  # 31 minutes without a request
        session.execute(update(WebSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    expired = page.get("/api/v1/me")
    assert expired.status_code == 401 and "30 minutes without activity" in expired.json()["detail"]

    assert _sign_in(page, "pg.end").status_code == 200
    with session_scope(factory) as session:  # used 29 minutes ago: still open, and the clock restarts
        newest = session.scalars(select(WebSession.id).order_by(WebSession.id.desc())).first()
        session.execute(update(WebSession).where(WebSession.id == newest)
                        .values(last_seen_at=utcnow() - timedelta(minutes=29)))
    # the page's own polling does not count as activity
    assert page.get("/api/v1/me", headers={"x-radservice-background": "1"}).status_code == 200
    with factory() as session:
        seen = session.scalars(select(WebSession.last_seen_at).where(WebSession.id == newest)).one()
        assert utcnow() - seen > timedelta(minutes=28)
    assert page.get("/api/v1/me").status_code == 200
    with factory() as session:
        seen = session.scalars(select(WebSession.last_seen_at).where(WebSession.id == newest)).one()
        assert utcnow() - seen < timedelta(minutes=1)

    with session_scope(factory) as session:
        signin.set_password(session=session, username="pg.end", password="another long password")
    assert page.get("/api/v1/me").status_code == 401  # a new password signs out everywhere

    assert _sign_in(page, "pg.end", "another long password").status_code == 200
    with session_scope(factory) as session:
        users.revoke_user(session=session, username="pg.end")
    assert page.get("/api/v1/me").status_code == 401
    assert _sign_in(page, "pg.end", "another long password").status_code == 401


def test_repeated_failures_lock_signing_in_for_the_user_and_for_the_address(
        page: TestClient, factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    _person(factory, "pg.lock")
    _person(factory, "pg.other")
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            wrong = _sign_in(page, "pg.lock", "not the password")
            assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong username or password"
        fifth = _sign_in(page, "pg.lock", "not the password")
        assert fifth.status_code == 429 and "locked for 15 minutes" in fifth.json()["detail"], fifth.text
        assert fifth.headers["retry-after"] == "900"
        # locked: even the right password is not checked
        right = _sign_in(page, "pg.lock")
        assert right.status_code == 429 and "locked" in right.json()["detail"]
        # the lock is on this address too: another user from the same computer waits
        assert _sign_in(page, "pg.other").status_code == 429
    assert "not the password" not in caplog.text and PASSWORD not in caplog.text
    assert _actions(factory, "pg.lock") == ["auth.sign_in_failed"] * 5 + ["auth.locked"]
    with factory() as session:
        for event in session.scalars(select(AuditEvent).where(AuditEvent.action.like("auth.%"))):
            assert "password" not in str(event.detail).replace("wrong password", "")
            assert event.client == "testclient"
        assert len(session.scalars(select(SignInFailure)).all()) == 5  # none recorded while locked
    with session_scope(factory) as session:  # 16 minutes later
        for failure in session.scalars(select(SignInFailure)):
            failure.at -= timedelta(minutes=16)
    assert _sign_in(page, "pg.lock").status_code == 200


def test_failures_of_unknown_users_count_for_the_address(page: TestClient, factory: sessionmaker[Session]) -> None:
    _person(factory, "pg.real")
    for n in range(5):
        assert _sign_in(page, f"nobody{n}", "guess guess").status_code in (401, 429)
    assert _sign_in(page, "pg.real").status_code == 429
    assert _actions(factory, "anonymous").count("auth.sign_in_failed") == 5


def test_the_websocket_takes_the_cookie_only_from_the_own_page(page: TestClient,
                                                               factory: sessionmaker[Session]) -> None:
    _person(factory, "pg.live")
    add_study(factory, "PG-WS", modality="CT", procedure="CT CHEST")
    assert _sign_in(page, "pg.live").status_code == 200
    url = "/api/v1/studies/PG-WS/dictations/stream?section=findings&format=wav"
    with page.websocket_connect(url, headers={"origin": "https://evil.example"}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4403
    with page.websocket_connect(url, headers={"origin": OWN}) as ws:
        started = ws.receive_json()
        assert started["type"] == "started" and started["dictation_id"]
        ws.send_text("stop")
    page.cookies.clear()
    with page.websocket_connect(url, headers={"origin": OWN}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


def test_a_body_with_the_cookie_passes_the_limits_and_sign_in_needs_no_credentials(
        page: TestClient, factory: sessionmaker[Session]) -> None:
    """The middleware that answers 401 before reading a body knows the cookie; signing in is the
    one body that comes without credentials."""
    _person(factory, "pg.body")
    add_study(factory, "PG-B")
    report_id = add_report(factory, "PG-B", {"findings": "Clear."})
    anonymous = page.patch(f"/api/v1/reports/{report_id}", json={"sections": {}, "revision": 1},
                           headers={"origin": OWN})
    assert anonymous.status_code == 401 and "body was not read" in anonymous.json()["detail"]
    assert _sign_in(page, "pg.body").status_code == 200
    revision = page.get(f"/api/v1/reports/{report_id}").json()["revision"]
    edited = page.patch(f"/api/v1/reports/{report_id}", json={"sections": {"findings": "Clear lungs."},
                                                               "revision": revision}, headers={"origin": OWN})
    assert edited.status_code == 200, edited.text
    too_long = page.post("/api/v1/session", json={"username": "pg.body", "password": "x" * 300})
    assert too_long.status_code == 422


def test_the_cli_sets_passwords_from_standard_input(tmp_path: Path, db_url: str) -> None:
    config = str(write_config(tmp_path, port=free_port(), db_url=db_url))
    added = subprocess_cli(["user", "add", "pg.cli", "--role", "radiologist", "--password-stdin", "--config", config],
                           tmp_path, PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    short = subprocess_cli(["user", "password", "pg.cli", "--config", config], tmp_path, "short\n")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    changed = subprocess_cli(["user", "password", "pg.cli", "--config", config], tmp_path, "a new long password\n")
    assert changed.returncode == 0 and "signed out" in changed.stdout
    unknown = subprocess_cli(["user", "password", "pg.nobody", "--config", config], tmp_path, "a new long password\n")
    assert unknown.returncode == 1 and "no user 'pg.nobody'" in unknown.stderr
    from radservice.db.session import make_engine, make_sessionmaker
    engine = make_engine(db_url)
    policy = signin.Policy(idle=timedelta(minutes=30), max_age=timedelta(hours=12), lock_after=5,
                           lock_window=timedelta(minutes=5), lock_for=timedelta(minutes=15))
    sessions = make_sessionmaker(engine)
    try:
        good = signin.sign_in(write=sessions, username="pg.cli", password="a new long password",
                              client="127.0.0.1", policy=policy)
        old = signin.sign_in(write=sessions, username="pg.cli", password=PASSWORD,
                             client="127.0.0.1", policy=policy)
    finally:
        engine.dispose()
    assert good.user is not None and good.cookie
    assert old.user is None


def subprocess_cli(args: list[str], cwd: Path, stdin: str) -> Any:
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "radservice.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=cwd)



def test_the_prune_duty_removes_only_what_no_lock_or_session_needs(factory: sessionmaker[Session]) -> None:
    from radservice.jobs.scheduled import duties

    _person(factory, "pg.prune")
    now = utcnow()
    with session_scope(factory) as session:
        user_id = session.scalars(select(User.id).where(User.username == "pg.prune")).one()
        session.add_all([SignInFailure(at=now - timedelta(minutes=21), username="a", client="c"),  # no lock needs it
                         SignInFailure(at=now - timedelta(minutes=19), username="b", client="c"),
                         WebSession(user_id=user_id, token_hash="0" * 64, created_at=now - timedelta(hours=37),
                                    last_seen_at=now - timedelta(hours=37)),
                         WebSession(user_id=user_id, token_hash="1" * 64, created_at=now, last_seen_at=now)])
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)})
    summary = duties(settings, factory)["sign-in-prune"].run()
    assert summary.startswith("2 ")
    with factory() as session:
        assert session.scalars(select(SignInFailure.username)).all() == ["b"]
        assert session.scalars(select(WebSession.token_hash)).all() == ["1" * 64]


def test_guesses_sent_at_once_cannot_pass_the_lock_and_an_unlock_ends_it(
        factory: sessionmaker[Session], tmp_path: Path, db_url: str) -> None:
    import threading

    _person(factory, "pg.race")
    policy = signin.Policy(idle=timedelta(minutes=30), max_age=timedelta(hours=12), lock_after=5,
                           lock_window=timedelta(minutes=5), lock_for=timedelta(minutes=15))
    outcomes: list[signin.SignIn] = []
    start = threading.Barrier(12)

    def guess() -> None:
        start.wait(10)
        outcomes.append(signin.sign_in(write=factory, username="pg.race", password="guess guess guess",
                                       client="198.51.100.9", policy=policy))

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 12
    with factory() as session:
        assert len(session.scalars(select(SignInFailure)).all()) == 5  # only 5 were ever checked
    assert sum(1 for o in outcomes if o.locked_until is not None and not o.lock_started) == 7
    config = str(write_config(tmp_path, port=free_port(), db_url=db_url))
    unlocked = subprocess_cli(["user", "unlock", "pg.race", "--address", "198.51.100.9", "--config", config],
                              tmp_path, "")
    assert unlocked.returncode == 0 and "5 failed sign-in(s) forgotten" in unlocked.stdout, unlocked.stderr
    good = signin.sign_in(write=factory, username="pg.race", password=PASSWORD, client="198.51.100.9", policy=policy)
    assert good.user is not None
    assert "auth.unlock" in _actions(factory, "cli")


def test_a_shared_workstation_is_not_locked_by_typos_its_users_then_correct(factory: sessionmaker[Session]) -> None:
    """Failures of a user who then signs in are forgotten for the address too; unknown usernames
    count for the address, whose own threshold (many people behind one NAT address) may differ."""
    _person(factory, "pg.ws.a")
    _person(factory, "pg.ws.b")
    policy = signin.Policy(idle=timedelta(minutes=30), max_age=timedelta(hours=12), lock_after=5,
                           lock_window=timedelta(minutes=5), lock_for=timedelta(minutes=15))

    def attempt(name: str, password: str, client: str, with_policy: signin.Policy = policy) -> signin.SignIn:
        return signin.sign_in(write=factory, username=name, password=password, client=client, policy=with_policy)

    for name in ("pg.ws.a", "pg.ws.b"):
        for _ in range(4):
            assert attempt(name, "typo typo typo", "10.0.0.5").user is None
        assert attempt(name, PASSWORD, "10.0.0.5").user is not None  # 8 failures from it, never locked
    for _ in range(4):
        assert attempt("pg.nobody", "typo typo typo", "10.0.0.6").locked_until is None
    roomy = signin.Policy(idle=policy.idle, max_age=policy.max_age, lock_after=5, lock_window=policy.lock_window,
                          lock_for=policy.lock_for, lock_after_address=8)
    assert attempt("pg.nobody", "typo typo typo", "10.0.0.6", roomy).locked_until is None  # 5 of 8
    assert attempt("pg.ws.a", PASSWORD, "10.0.0.6", roomy).user is not None
    assert attempt("pg.ws.a", PASSWORD, "10.0.0.6").locked_until is not None  # 5 of 5: the address is locked
    assert attempt("pg.ws.b", PASSWORD, "10.0.0.7").user is not None  # other addresses are not
    assert Settings(auth={"address_lock_after_failures": 8}).auth.address_lock_after_failures == 8
    assert signin.Policy.of(Settings(auth={"address_lock_after_failures": 8}).auth).lock_after_address == 8


def test_signing_in_on_a_browser_that_has_a_session_ends_that_one(page: TestClient,
                                                                   factory: sessionmaker[Session]) -> None:
    """The next person at a workstation signs in over the last one's cookie: one browser, one session."""
    _person(factory, "pg.first")
    _person(factory, "pg.next")
    assert _sign_in(page, "pg.first").status_code == 200
    first = page.cookies["radservice_session"]
    assert _sign_in(page, "pg.next", "a wrong password").status_code == 401  # a failure ends nothing
    assert page.get("/api/v1/me").json()["username"] == "pg.first"
    assert _sign_in(page, "pg.next").status_code == 200
    assert page.get("/api/v1/me").json()["username"] == "pg.next"
    other = TestClient(page.app)
    other.cookies.set("radservice_session", first)
    assert other.get("/api/v1/me").status_code == 401  # the first session ended, not just replaced
    with factory() as session:
        assert [w.ended_at is not None for w in session.scalars(select(WebSession).order_by(WebSession.id))] == [
            True, False]
    assert _actions(factory, "pg.first") == ["auth.sign_in", "auth.sign_out"]  # ended, and audited as its user
    # the page names its user: a tab still showing pg.first is refused, never served as pg.next
    stale = page.get("/api/v1/worklist", headers={"X-Radservice-User": "pg.first"})
    assert stale.status_code == 401 and "another user" in stale.json()["detail"]
    assert page.get("/api/v1/me", headers={"X-Radservice-User": "pg.next"}).status_code == 200
    assert "auth.refused" in _actions(factory, "pg.next")
