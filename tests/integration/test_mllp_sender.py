"""The MLLP client connection against a scripted peer that replays raw bytes: answers split
across reads, a late ACK for another message, a kept connection the peer closed, junk."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from integrations.hl7.mllp import FrameReader, wrap
from integrations.hl7.sender import MllpConnection, PeerUnavailable

pytestmark = pytest.mark.integration

Script = Callable[[socket.socket, bytes, int], None]


def _ack(control_id: str, code: str = "AA") -> bytes:
    return wrap(f"MSH|^~\\&|RIS|H|RS|R|20261201||ACK|X|P|2.5.1\rMSA|{code}|{control_id}\r".encode())


class ScriptedPeer:
    """Accepts connections; for each received frame calls ``script(conn, frame, n)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frames: list[tuple[int, bytes]] = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._client, args=(conn, self.accepted), daemon=True).start()

    def _client(self, conn: socket.socket, number: int) -> None:
        reader = FrameReader(1 << 20)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for frame in reader.feed(data):
                    self.frames.append((number, frame))
                    try:
                        self.script(conn, frame, len(self.frames))
                    except OSError:
                        return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def peer() -> Iterator[Callable[[Script], ScriptedPeer]]:
    peers: list[ScriptedPeer] = []

    def make(script: Script) -> ScriptedPeer:
        peers.append(ScriptedPeer(script))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


def _control_id(frame: bytes) -> str:
    return frame.split(b"\r")[0].split(b"|")[9].decode()


def _message(control_id: str) -> bytes:
    return f"MSH|^~\\&|RS|R|RIS|H|20261201||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1||X\r".encode()


def test_an_ack_split_into_single_bytes_with_junk_before_it_is_read(peer: Callable[[Script], ScriptedPeer]) -> None:
    def script(conn: socket.socket, frame: bytes, n: int) -> None:
        conn.sendall(b"\r\n")  # junk outside a frame is skipped
        for byte in _ack(_control_id(frame)):
            conn.sendall(bytes([byte]))

    p = peer(script)
    conn = MllpConnection("127.0.0.1", p.port, connect_timeout=2, ack_timeout=5)
    assert conn.exchange(_message("C1"), "C1").code == "AA"
    assert conn.exchange(_message("C2"), "C2").code == "AA"
    assert p.accepted == 1  # kept open
    conn.close()


def test_a_late_ack_for_another_message_is_skipped(peer: Callable[[Script], ScriptedPeer]) -> None:
    def script(conn: socket.socket, frame: bytes, n: int) -> None:
        conn.sendall(_ack("EARLIER", "AE") + _ack(_control_id(frame)))

    p = peer(script)
    conn = MllpConnection("127.0.0.1", p.port, connect_timeout=2, ack_timeout=5)
    ack = conn.exchange(_message("C9"), "C9")
    assert (ack.code, ack.control_id) == ("AA", "C9")
    conn.close()


def test_a_kept_connection_the_peer_closed_is_replaced_once(peer: Callable[[Script], ScriptedPeer]) -> None:
    def script(conn: socket.socket, frame: bytes, n: int) -> None:
        conn.sendall(_ack(_control_id(frame)))
        if n == 1:
            conn.shutdown(socket.SHUT_RDWR)  # the RIS closes idle connections
            raise OSError("closed")

    p = peer(script)
    conn = MllpConnection("127.0.0.1", p.port, connect_timeout=2, ack_timeout=5)
    assert conn.exchange(_message("K1"), "K1").code == "AA"
    assert conn.exchange(_message("K2"), "K2").code == "AA"
    assert p.accepted == 2
    assert [(c, _control_id(f)) for c, f in p.frames][-1] == (2, "K2")
    conn.close()


def test_no_answer_and_no_listener_raise_peer_unavailable(peer: Callable[[Script], ScriptedPeer]) -> None:
    p = peer(lambda conn, frame, n: None)
    conn = MllpConnection("127.0.0.1", p.port, connect_timeout=2, ack_timeout=0.3)
    with pytest.raises(PeerUnavailable, match="no ACK .* within 0.3 s"):
        conn.exchange(_message("S1"), "S1")
    assert not conn.is_open  # closed: a late answer cannot be taken for the next message's
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    nobody = MllpConnection("127.0.0.1", free, connect_timeout=1, ack_timeout=1)
    with pytest.raises(PeerUnavailable, match="cannot connect"):
        nobody.exchange(_message("S2"), "S2")


def test_a_peer_that_closes_instead_of_answering_is_unavailable(peer: Callable[[Script], ScriptedPeer]) -> None:
    def script(conn: socket.socket, frame: bytes, n: int) -> None:
        conn.shutdown(socket.SHUT_RDWR)
        raise OSError("closed")

    p = peer(script)
    conn = MllpConnection("127.0.0.1", p.port, connect_timeout=2, ack_timeout=2)
    with pytest.raises(PeerUnavailable, match="closed the connection"):
        conn.exchange(_message("X1"), "X1")
