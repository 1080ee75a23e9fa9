"""The MLLP listener: many connections, many messages each, one misbehaving peer costs only itself.

Each connection reads with an idle timeout, deframes (mllp.FrameReader), hands each frame to
the router in a worker thread (the database is synchronous) and writes the ACK back before
reading the next frame, so a connection's messages apply in the order sent. A frame must end
within ``frame_timeout_s`` of its start (a peer trickling a byte a second cannot hold it open);
frames complete in the same read as a fault are answered before the connection is closed; at
most ``max_connections`` connections are served at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from typing import Any

from integrations.hl7.mllp import FrameReader, FrameTooLarge, wrap
from integrations.hl7.routing import Hl7Router
from radservice import tls

log = logging.getLogger("radservice.hl7")

READ_CHUNK = 65536


def _client_name(cert: dict[str, Any] | None) -> str:
    """", client certificate CN=..." for a mutual-TLS peer (its common name is not patient data)."""
    if not cert:
        return ""
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return f", client certificate CN={names[0]}" if names else ", client certificate"


def _allowed(peer_host: str, allowed: list[str]) -> bool:
    """Is the peer in ``hl7.allowed_hosts`` (addresses or networks; empty allows all)?"""
    if not allowed:
        return True
    try:
        address = ipaddress.ip_address(peer_host)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if entry == peer_host:
                return True
    return False


class MllpListener:
    """An asyncio MLLP server bound to a socket the caller opened.

    Parameters
    ----------
    router
        Turns each message into its ACK.
    max_message_bytes
        Larger frames close the connection.
    allowed_hosts
        Peer addresses or networks allowed to connect; empty allows any.
    idle_timeout_s
        A connection silent this long (or half-open) is closed.
    frame_timeout_s
        A frame not ended this long after its start mark closes the connection.
    max_connections
        Connections beyond this many are closed at once, with a log line.
    """

    def __init__(self, *, router: Hl7Router, max_message_bytes: int, allowed_hosts: list[str],
                 idle_timeout_s: float, write_timeout_s: float = 30.0, frame_timeout_s: float = 60.0,
                 max_connections: int = 64, ssl_context: ssl.SSLContext | None = None) -> None:
        self.router = router
        self.max_message_bytes = max_message_bytes
        self.allowed_hosts = allowed_hosts
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        # TLS starts on each connection after its address and the connection count are checked
        # (_connection), so a refused peer never costs a handshake
        self._server = await asyncio.start_server(self._connection, sock=sock, limit=READ_CHUNK)

    def is_up(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        """Stop accepting, let messages in flight finish their ACK, then close connections."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=10)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        peer_text = f"{peer[0]}:{peer[1]}"
        sock = writer.get_extra_info("socket")
        try:
            if not _allowed(str(peer[0]), self.allowed_hosts):
                log.warning("hl7: refused connection from %s (not in hl7.allowed_hosts)", peer_text)
                return
            if len(self._connections) > self.max_connections:
                log.warning("hl7: refused connection from %s: %d connections open (hl7.max_connections)",
                            peer_text, self.max_connections)
                return
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.ssl_context is None:
                log.info("hl7: connection from %s", peer_text)
            else:
                # the whole handshake within the frame timeout; a failure is logged (IHE ATNA: a
                # node that fails authentication is worth a line), never a traceback
                try:
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=self.frame_timeout_s)
                except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
                    log.warning("hl7: TLS handshake from %s failed: %s", peer_text, tls.failure_reason(exc))
                    return
                log.info("hl7: connection from %s over %s%s", peer_text, writer.get_extra_info("ssl_object").version(),
                         _client_name(writer.get_extra_info("peercert")))
            await self._serve(reader, writer, peer_text)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as exc:
            log.info("hl7: connection from %s ended: %s", peer_text, type(exc).__name__)
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), timeout=5)
            except (TimeoutError, OSError, asyncio.CancelledError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        frames = FrameReader(self.max_message_bytes)
        # Deadlines count from the last complete message (or the connection's start), never from
        # bytes that complete nothing: junk trickled now and then does not keep a slot.
        # (An interface engine may open its connection when its channel starts and send the first
        # message hours later: the first message gets the idle timeout too.)
        waiting_since = time.monotonic()
        frame_deadline: float | None = None  # monotonic time by which the open frame must end
        while True:
            if frame_deadline is not None:
                deadline, why = frame_deadline, "frame"
            else:
                deadline, why = waiting_since + self.idle_timeout_s, "idle"
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK),
                                              timeout=max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                if why == "frame":
                    log.warning("hl7: closing connection from %s: a frame open for over %g s (%d bytes dropped)",
                                peer, self.frame_timeout_s, frames.pending)
                else:
                    log.info("hl7: closing idle connection from %s", peer)
                return
            if not data:
                if frames.in_frame:
                    log.warning("hl7: %s closed the connection inside a frame (%d bytes dropped)",
                                peer, frames.pending)
                return
            was_in_frame = frames.in_frame
            fault = ""
            try:
                payloads = frames.feed(data)
            except FrameTooLarge as exc:
                payloads = exc.complete
                fault = f"message over {self.max_message_bytes} bytes"
            if not fault and frames.junk_run > self.max_message_bytes:
                fault = f"{frames.junk_run} bytes outside MLLP frames"
            for payload in payloads:  # whole messages are answered even when a fault follows them
                ack = await asyncio.to_thread(self.router.handle, payload, peer)
                if ack is None:
                    log.warning("hl7: closing connection from %s without ACK (not stored; sender will resend)", peer)
                    return
                writer.write(wrap(ack))
                await asyncio.wait_for(writer.drain(), timeout=self.write_timeout_s)
            if fault:
                log.warning("hl7: closing connection from %s: %s", peer, fault)
                return
            now = time.monotonic()
            if payloads:
                waiting_since = now
            if not frames.in_frame:
                frame_deadline = None
            elif payloads or not was_in_frame or frame_deadline is None:
                frame_deadline = now + self.frame_timeout_s  # a new frame began in this read
