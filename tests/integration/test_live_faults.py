"""Live dictation at its edges, through the API in-process on SQLite and PostgreSQL (no worker
needed): who may resume whose dictation, a token revoked while the socket is open, a silent
socket, and a dictation whose API died."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.websockets import WebSocketDisconnect

from radservice.api.app import create_app
from radservice.api.routes import stream
from radservice.config import Settings
from radservice.db.base import utcnow
from radservice.db.session import session_scope
from radservice.dictation import service as dictations
from radservice.dictation.flows import LiveTranscribeFlow
from radservice.dictation.models import Dictation, Section
from radservice.jobs.service import ClaimedJob
from radservice.jobs.worker import JobContext
from radservice.users import service as users
from radservice.users.models import User
from radservice.worklist.models import Study
from tests import audio_samples
from tests.support import add_study, make_user

pytestmark = pytest.mark.integration


def _app(factory: sessionmaker[Session], tmp_path: Path, **auth: Any) -> TestClient:
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},
                        storage={"data_dir": tmp_path / "data"}, auth=auth)
    return TestClient(create_app(settings, engine))


def _url(token: str, dictation_id: str | None = None) -> str:
    resume = f"&dictation_id={dictation_id}" if dictation_id else ""
    return f"/api/v1/studies/LF-1/dictations/stream?section=findings&format=wav&token={token}{resume}"


def _closed_with(ws: Any, timeout: float = 15) -> int:
    """Wait (in a thread, bounded) for the server to close the socket; its close code."""
    codes: list[int] = []

    def wait() -> None:
        try:
            while True:
                ws.receive_json()
        except WebSocketDisconnect as closed:
            codes.append(closed.code)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(timeout)
    assert codes, "the server did not close the socket"
    return codes[0]


def _speak(client: TestClient, factory: sessionmaker[Session], token: str, dictation_id: str | None = None) -> str:
    """Open (or resume), send half a second of audio, drop the connection: interrupted."""
    with client.websocket_connect(_url(token, dictation_id)) as ws:
        started = ws.receive_json()
        assert started["type"] == "started", started
        ws.send_bytes(audio_samples.tone(0.5))
        ws.close()
        assert _wait_interrupted(factory, started["dictation_id"]).status == "interrupted"
    return str(started["dictation_id"])


def _wait_interrupted(factory: sessionmaker[Session], dictation_id: str) -> Dictation:
    import time
    deadline = time.monotonic() + 10
    while True:
        with factory() as session:
            dictation = session.get_one(Dictation, dictation_id)
        if dictation.status == "interrupted" or time.monotonic() > deadline:
            return dictation
        time.sleep(0.05)


@pytest.fixture
def people(factory: sessionmaker[Session]) -> dict[str, str]:
    add_study(factory, "LF-1")
    return {name: make_user(factory, name, role) for name, role in
            (("lf.author", "radiologist"), ("lf.other", "radiologist"), ("lf.resident", "resident"))}


def _ids(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {u.username: u.id for u in session.scalars(select(User))}


def test_only_the_author_resumes_and_each_part_records_its_speaker(
        factory: sessionmaker[Session], tmp_path: Path, people: dict[str, str]) -> None:
    ids = _ids(factory)
    with _app(factory, tmp_path) as client:
        dictation_id = _speak(client, factory, people["lf.author"])
        for other in ("lf.other", "lf.resident"):
            with client.websocket_connect(_url(people[other], dictation_id)) as ws:
                assert _closed_with(ws) == 4403
        assert _speak(client, factory, people["lf.author"], dictation_id) == dictation_id
    with _app(factory, tmp_path, resume_others_roles=["radiologist"]) as client:
        with client.websocket_connect(_url(people["lf.resident"], dictation_id)) as ws:
            assert _closed_with(ws) == 4403  # residents are not in the configured roles
        assert _speak(client, factory, people["lf.other"], dictation_id) == dictation_id
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        assert dictation.created_by == ids["lf.author"] and dictation.audio_parts == 3
        assert dictation.part_speakers == [ids["lf.author"], ids["lf.author"], ids["lf.other"]]


def test_a_token_revoked_while_dictating_closes_the_socket_within_seconds(
        factory: sessionmaker[Session], tmp_path: Path, people: dict[str, str]) -> None:
    import time

    with _app(factory, tmp_path) as client, client.websocket_connect(_url(people["lf.author"])) as ws:
        dictation_id = ws.receive_json()["dictation_id"]
        ws.send_bytes(audio_samples.tone(0.5))
        with session_scope(factory) as session:
            users.revoke_user(session=session, username="lf.author")
        revoked_at = time.monotonic()
        assert _closed_with(ws) == 4401
        assert time.monotonic() - revoked_at < dictations.LIVE_BEAT_S + 3
    assert _wait_interrupted(factory, dictation_id).status == "interrupted"


def test_a_silent_socket_is_closed_and_its_dictation_interrupted(
        factory: sessionmaker[Session], tmp_path: Path, people: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "RECEIVE_TIMEOUT_S", 0.5)
    with _app(factory, tmp_path) as client, client.websocket_connect(_url(people["lf.author"])) as ws:
        dictation_id = ws.receive_json()["dictation_id"]
        assert _closed_with(ws) == 4408
    assert _wait_interrupted(factory, dictation_id).status == "interrupted"


class NoDecoder:
    name = "unused"


def test_a_dictation_whose_api_died_is_interrupted_by_its_job_and_can_be_resumed(
        factory: sessionmaker[Session], tmp_path: Path, people: dict[str, str]) -> None:
    """kill -9 of the API: nobody renews live_seen_at. The live job ends (the worker is free)
    and the dictation is interrupted; resume is accepted; a live dictation whose API is still
    there is not resumable."""
    ids = _ids(factory)
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        dead, job = dictations.start_live(session=session, study=study, section=Section.FINDINGS,
                                          user_id=ids["lf.author"], dictation_id="dead-api", max_attempts=3)
        dead.live_seen_at = utcnow() - timedelta(seconds=60)
        alive, _ = dictations.start_live(session=session, study=study, section=Section.FINDINGS,
                                         user_id=ids["lf.author"], dictation_id="alive-api", max_attempts=3)
        job_id = job.id
    flow = LiveTranscribeFlow(decoder=NoDecoder(), data_dir=tmp_path, vocabulary=[])  # type: ignore[arg-type]
    ctx = JobContext(job=ClaimedJob(job_id, "transcribe_live", {"dictation_id": "dead-api", "session": 1}, 1, 3,
                                    utcnow()), sessions=factory)
    assert flow(ctx) == {"dictation_id": "dead-api", "interrupted": True, "text": ""}
    with session_scope(factory) as session:
        assert session.get_one(Dictation, "dead-api").status == "interrupted"
        with pytest.raises(dictations.DictationError, match="recording, not interrupted"):
            dictations.resume_live(session=session, dictation=session.get_one(Dictation, "alive-api"),
                                   max_attempts=3, user_id=ids["lf.author"])
        session.get_one(Dictation, "alive-api").live_seen_at = utcnow() - timedelta(seconds=60)
        dictations.resume_live(session=session, dictation=session.get_one(Dictation, "alive-api"),
                               max_attempts=3, user_id=ids["lf.author"])  # abandoned: resumable
        assert session.get_one(Dictation, "alive-api").stream_session == 2


def test_a_dictation_ended_by_a_worker_is_not_moved_on_by_the_socket(
        factory: sessionmaker[Session], tmp_path: Path, people: dict[str, str]) -> None:
    """A worker interrupted the dictation (it thought the API gone) while the socket was open: the
    socket closes with 4409 and a late "stop" does not make it `finalizing` (nothing would ever
    finish it); it stays interrupted, to resume or transcribe again."""
    with _app(factory, tmp_path) as client, client.websocket_connect(_url(people["lf.author"])) as ws:
        dictation_id = ws.receive_json()["dictation_id"]
        ws.send_bytes(audio_samples.tone(0.5))
        with session_scope(factory) as session:
            session.get_one(Dictation, dictation_id).status = "interrupted"
        ws.send_text("stop")
        assert _closed_with(ws) == 4409
    with factory() as session:
        assert session.get_one(Dictation, dictation_id).status == "interrupted"


def test_a_slow_final_pass_still_ends_with_the_final_event(
        factory: sessionmaker[Session], tmp_path: Path, people: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After "stop" the dictation is finalizing, no longer recording: the socket's beat must not
    read that as "ended elsewhere" (4409) while the final text is awaited (no worker here, so the
    wait runs out: `final` with `pending`, close 1000)."""
    monkeypatch.setattr(stream, "FINAL_TIMEOUT_S", 2.5 * dictations.LIVE_BEAT_S)
    with _app(factory, tmp_path) as client, client.websocket_connect(_url(people["lf.author"])) as ws:
        ws.receive_json()
        ws.send_bytes(audio_samples.tone(0.5))
        ws.send_text("stop")
        final = ws.receive_json()
        assert final["type"] == "final" and final["pending"] is True, final
        assert _closed_with(ws) == 1000


def test_an_earlier_connection_s_live_job_failing_leaves_the_resumed_dictation_alone(
        factory: sessionmaker[Session], people: dict[str, str]) -> None:
    ids = _ids(factory)
    with session_scope(factory) as session:
        study = session.scalars(select(Study)).one()
        dictation, _ = dictations.start_live(session=session, study=study, section=Section.FINDINGS,
                                             user_id=ids["lf.author"], dictation_id="resumed", max_attempts=3)
        dictation.stream_session = 2  # resumed: connection 2 records now
        LiveTranscribeFlow.on_failed(session, {"dictation_id": "resumed", "session": 1}, "worker lost")
        assert dictation.status == "recording"
        LiveTranscribeFlow.on_failed(session, {"dictation_id": "resumed", "session": 2}, "worker lost")
        assert dictation.status == "failed"
