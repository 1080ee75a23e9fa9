"""The MLLP listener's socket behaviour, in-process: split and joined frames, limits, peers, load."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from integrations.hl7.listener import MllpListener
from integrations.hl7.mllp import wrap
from integrations.hl7.routing import Hl7Router
from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker, session_scope
from radservice.serve import bind_tcp
from radservice.worklist.models import InboundMessage, Study
from tests.hl7_peer import RisClient, order, read_ack
from tests.support import free_port

pytestmark = pytest.mark.integration


class RunningListener:
    def __init__(self, port: int, loop: asyncio.AbstractEventLoop, listener: MllpListener) -> None:
        self.port = port
        self.loop = loop
        self.listener = listener


@contextmanager
def listening(db_url: str, *, migrate_first: bool = True, **options: object) -> Iterator[RunningListener]:
    """A listener on a free port, its loop in a thread; closed (connections and all) afterwards."""
    engine = make_engine(db_url)
    if migrate_first:
        migrate.upgrade(engine)
    router = Hl7Router(sessions=make_sessionmaker(engine), sending_application="RADSERVICE", sending_facility="RAD")
    settings: dict[str, object] = {"max_message_bytes": 1_048_576, "allowed_hosts": [], "idle_timeout_s": 30.0}
    settings.update(options)
    listener = MllpListener(router=router, **settings)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    port = free_port()
    sock = bind_tcp("127.0.0.1", port, what="test MLLP")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(listener.start(sock), loop).result(10)
    try:
        yield RunningListener(port, loop, listener)
    finally:
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        engine.dispose()


def recv_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def count(db_url: str, model: type[object]) -> int:
    engine = make_engine(db_url)
    with session_scope(make_sessionmaker(engine)) as session:
        n = session.scalar(select(func.count()).select_from(model))  # type: ignore[arg-type]
    engine.dispose()
    return int(n or 0)


def test_frame_dribbled_byte_groups_and_frames_joined(db_url: str) -> None:
    with listening(db_url) as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        framed = wrap(order("SPLIT-1", "ACC-S1"))
        for start in range(0, len(framed), 7):  # seven bytes at a time, with pauses
            sock.sendall(framed[start : start + 7])
            time.sleep(0.002)
        first = read_ack(sock.recv(65536))
        assert (first.code, first.control_id) == ("AA", "SPLIT-1")
        sock.sendall(wrap(order("JOIN-1", "ACC-J1")) + wrap(order("JOIN-2", "ACC-J2")))
        received = b""
        while received.count(b"\x1c\r") < 2:
            received += sock.recv(65536)
        acks = [read_ack(part) for part in received.split(b"\x1c\r") if part.strip()]
        assert [(a.code, a.control_id) for a in acks] == [("AA", "JOIN-1"), ("AA", "JOIN-2")]
    assert count(db_url, Study) == 3


def test_peer_not_in_allowed_hosts_is_refused(db_url: str) -> None:
    with listening(db_url, allowed_hosts=["10.0.0.0/8"]) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        try:
            sock.sendall(wrap(order("DENIED-1", "ACC-D1")))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert recv_until_closed(sock) == b""
    assert count(db_url, Study) == 0


def test_peer_in_allowed_hosts_is_served(db_url: str) -> None:
    with listening(db_url, allowed_hosts=["10.1.2.3", "127.0.0.0/8"]) as srv, RisClient(srv.port) as ris:
        assert read_ack(ris.send(order("OK-1", "ACC-OK1"))).code == "AA"


def test_idle_connection_is_closed(db_url: str) -> None:
    with listening(db_url, idle_timeout_s=0.5) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        started = time.monotonic()
        assert recv_until_closed(sock) == b""
        assert time.monotonic() - started < 8


def test_junk_without_frames_closes_the_connection(db_url: str) -> None:
    with listening(db_url, max_message_bytes=1024) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            try:
                sock.sendall(b"GET / HTTP/1.1\r\n" + b"\x00\xff" * 2000)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert recv_until_closed(sock) == b""
        with RisClient(srv.port) as ris:
            assert read_ack(ris.send(order("AFTER-JUNK", "ACC-AJ"))).code == "AA"


def test_peer_vanishing_mid_frame_loses_nothing_accepted(db_url: str) -> None:
    with listening(db_url) as srv:
        with RisClient(srv.port) as ris:
            assert read_ack(ris.send(order("KEEP-1", "ACC-K1"))).code == "AA"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(wrap(order("HALF-1", "ACC-H1"))[:60])
        with RisClient(srv.port) as ris:
            assert read_ack(ris.send(order("KEEP-2", "ACC-K2"))).code == "AA"
    assert count(db_url, Study) == 2
    assert count(db_url, InboundMessage) == 2


def test_many_connections_at_once_each_many_messages(db_url: str) -> None:
    per_connection, connections = 15, 6

    def ris(number: int) -> list[str]:
        with RisClient(srv.port) as client:
            return [read_ack(client.send(order(f"C{number}-{i}", f"ACC-C{number}-{i}",
                                                patient_id=f"MRN-C{number}"))).code
                    for i in range(per_connection)]

    with listening(db_url) as srv, ThreadPoolExecutor(connections) as pool:
        results = list(pool.map(ris, range(connections)))
    assert results == [["AA"] * per_connection] * connections
    assert count(db_url, Study) == per_connection * connections


def test_database_down_closes_without_ack_so_the_ris_resends() -> None:
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    with listening(dead, migrate_first=False) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock:
        sock.sendall(wrap(order("LOST-1", "ACC-L1")))
        assert recv_until_closed(sock, timeout=15) == b""


def test_frames_complete_before_a_fault_are_answered(db_url: str) -> None:
    with listening(db_url, max_message_bytes=2048) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            # one whole order, then (in the same write) the start of a frame that is too large
            sock.sendall(wrap(order("FIRST-1", "ACC-FIRST")) + b"\x0b" + b"x" * 4096)
            answer = recv_until_closed(sock)
    assert read_ack(answer).code == "AA"
    assert count(db_url, Study) == 1


def test_junk_between_frames_is_counted_per_gap_not_for_the_connection_s_life(db_url: str) -> None:
    with listening(db_url, max_message_bytes=1024) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.settimeout(10)
            for n in range(4):  # 4 x 800 junk bytes: more than the limit in all, less in any gap
                sock.sendall(b"\r\n" * 400 + wrap(order(f"JUNK-{n}", f"ACC-J{n}")))
                assert read_ack(sock.recv(65536)).code == "AA"
    assert count(db_url, Study) == 4


def test_a_frame_trickled_byte_by_byte_is_cut_at_the_frame_deadline(db_url: str) -> None:
    with listening(db_url, frame_timeout_s=1.0, idle_timeout_s=30.0) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"\x0b")
            closed = False
            for byte in order("SLOW-1", "ACC-SLOW")[:40]:
                time.sleep(0.2)  # never idle for long, never finishing
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            assert closed, "the trickling peer kept its frame open"
            assert time.monotonic() - started < 5
    assert count(db_url, Study) == 0


def test_connections_over_max_connections_are_refused(db_url: str) -> None:
    with listening(db_url, max_connections=2) as running:
        held = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in range(2)]
        try:
            time.sleep(0.3)  # the listener has taken both
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as third:
                assert recv_until_closed(third, timeout=5) == b""
            held[0].sendall(wrap(order("HELD-1", "ACC-HELD")))  # the ones within the cap are served
            held[0].settimeout(10)
            assert read_ack(held[0].recv(65536)).code == "AA"
        finally:
            for sock in held:
                sock.close()


def test_a_peer_that_sends_only_junk_loses_its_slot_at_the_idle_deadline(db_url: str) -> None:
    with listening(db_url, frame_timeout_s=30.0, idle_timeout_s=1.0) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"\r\n")  # junk now and then is no message
            assert recv_until_closed(sock, timeout=5) == b""
            assert time.monotonic() - started < 4


def test_junk_does_not_keep_an_idle_connection_open(db_url: str) -> None:
    with listening(db_url, frame_timeout_s=30.0, idle_timeout_s=1.5) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(wrap(order("IDLE-1", "ACC-IDLE")))
            sock.settimeout(10)
            assert read_ack(sock.recv(65536)).code == "AA"
            started = time.monotonic()
            closed = False
            for _ in range(20):
                time.sleep(0.3)
                try:
                    sock.sendall(b"\r")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            assert closed, "a byte of junk every 0.3 s kept the connection"
            assert time.monotonic() - started < 5
