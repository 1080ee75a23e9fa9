"""Limits before reading: a body is not read before the caller is known, nor past its limit;
refused callers are audited with their address. On SQLite and PostgreSQL."""

from __future__ import annotations

import select as io_select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.api.app import create_app
from radservice.audit.models import AuditEvent
from radservice.config import Settings
from tests.support import add_report, add_study, free_port, make_user, write_read_audit

pytestmark = pytest.mark.integration
MiB = 1 << 20


def _sent_before_answer(port: int, head: bytes, total: int) -> tuple[int, bytes]:
    """Send ``head`` then up to ``total`` body bytes to a real server, stopping at its first
    answer; returns how many body bytes went out and the answer's first bytes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    sock.sendall(head)
    sent, chunk = 0, b"x" * (16 << 10)
    try:
        while sent < total:
            readable, writable, _ = io_select.select([sock], [sock], [], 5)
            if readable:
                break
            if writable:
                sent += sock.send(chunk)
        answer = sock.recv(4096)
    finally:
        sock.close()
    return sent, answer


@contextmanager
def real_server(settings: Settings, engine: Any) -> Iterator[int]:
    """The API under uvicorn on a free loopback port, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_real_server_answers_before_the_body_is_sent(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Over a socket: the 401 (anonymous) and the 413 (declared or streamed past the limit) come
    while most of the body is still unsent, and the server stops reading it."""
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},
                        storage={"data_dir": tmp_path / "data", "max_audio_mb": 2}, server={"max_body_kb": 64})
    token = make_user(factory, "lim.real", "radiologist")
    add_study(factory, "LIM-R")
    with real_server(settings, engine) as port:
        anonymous = (b"POST /api/v1/studies/LIM-R/dictations HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 31457280\r\n\r\n")
        sent, answer = _sent_before_answer(port, anonymous, 30 * MiB)
        assert answer.startswith(b"HTTP/1.1 401") and sent < 8 * MiB, (answer[:40], sent)
        chunked = (b"PATCH /api/v1/reports/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Authorization: Bearer " + token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(chunked)
            piece = b"x" * (16 << 10)
            sent = 0
            while sent < 40 * MiB:
                readable, _, _ = io_select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
            answer = sock.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            answer = sock.recv(4096)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 413") and sent < 8 * MiB, (answer[:40], sent)


class Body:
    """A streamed (chunked) request body of ``size`` bytes that counts what was read of it."""

    def __init__(self, size: int, chunk: int = 64 << 10) -> None:
        self.size, self.chunk, self.sent = size, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.size:
            self.sent += self.chunk
            yield b"x" * self.chunk


@pytest.fixture
def limited(factory: sessionmaker[Session], tmp_path: Path) -> Iterator[TestClient]:
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},
                        storage={"data_dir": tmp_path / "data", "max_audio_mb": 2}, server={"max_body_kb": 64})
    with TestClient(create_app(settings, engine), client=("192.0.2.7", 50000)) as client:
        yield client


def test_an_anonymous_body_is_refused_unread_and_audited(limited: TestClient, factory: sessionmaker[Session]) -> None:
    add_study(factory, "LIM-1")
    body = Body(30 * MiB)
    answer = limited.post("/api/v1/studies/LIM-1/dictations", content=body,
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 401 and "not read" in answer.json()["detail"]
    declared = limited.patch("/api/v1/reports/1", content=b"{" * 4096, headers={"Authorization": "Bearer rs_nope"})
    assert declared.status_code == 401
    for _ in range(50):  # a flood: counted, not written row by row
        assert limited.get("/api/v1/worklist").status_code == 401
    with factory() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.refused")
                                  .order_by(AuditEvent.id)).all()
        assert [(e.detail or {}).get("reason") for e in refused] == ["no token", "bad token"]
        assert {e.client for e in refused} == {"192.0.2.7"}
        assert all("rs_nope" not in str(e.detail) for e in refused)


def test_bodies_past_their_limit_are_cut_off_with_413(limited: TestClient, factory: sessionmaker[Session]) -> None:
    headers = {"Authorization": f"Bearer {make_user(factory, 'lim.dr', 'radiologist')}"}
    add_study(factory, "LIM-2")
    report_id = add_report(factory, "LIM-2", {"findings": "Clear."})
    big_json = Body(40 * MiB)
    answer = limited.patch(f"/api/v1/reports/{report_id}", content=big_json,
                           headers={**headers, "content-type": "application/json"})
    assert answer.status_code == 413 and "64 KiB" in answer.json()["detail"], answer.text
    declared = limited.patch(f"/api/v1/reports/{report_id}", content=b" " * (65 << 10),
                             headers={**headers, "content-type": "application/json"})
    assert declared.status_code == 413
    upload = Body(30 * MiB)
    answer = limited.post("/api/v1/studies/LIM-2/dictations", content=upload,
                          headers={**headers, "content-type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413 and "2 MiB" in answer.json()["detail"], answer.text
    # within the limits all is as before, and the read is audited with the client's address
    revision = limited.get(f"/api/v1/reports/{report_id}", headers=headers).json()["revision"]
    edited = limited.patch(f"/api/v1/reports/{report_id}", json={"sections": {"findings": "Clear lungs."},
                                                                 "revision": revision}, headers=headers)
    assert edited.status_code == 200, edited.text
    write_read_audit(limited.app)
    with factory() as session:
        read = session.scalars(select(AuditEvent).where(AuditEvent.action == "report.read")).one()
        assert read.client == "192.0.2.7" and read.actor == "lim.dr"
    assert limited.get("/api/v1/admin/outbox", headers=headers).status_code == 403
    with factory() as session:
        (forbidden,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.refused")).all()
        assert forbidden.actor == "lim.dr" and forbidden.client == "192.0.2.7"
