"""ORU^R01 to the RIS over MLLP: one kept-open connection, a timeout on every step, the ACK read
and turned into the outbox's terms (acked, refused, try again later).

Layers as on the way in: ``mllp`` frames the bytes, ``oru`` builds the message, this module
only connects, writes, reads the one ACK that answers our control ID and classifies it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass

from integrations.hl7.message import MessageError, decode, parse
from integrations.hl7.mllp import FrameReader, FrameTooLarge, wrap
from integrations.hl7.oru import OruHeader, build_oru
from radservice import tls
from radservice.config import RisSettings
from radservice.outbox.flows import SendResult
from radservice.outbox.service import OutgoingReport

log = logging.getLogger("radservice.hl7.sender")

#: Largest ACK we read (an ACK is a few hundred bytes; more is a peer gone wrong).
MAX_ACK_BYTES = 65_536


class PeerUnavailable(Exception):
    """The peer could not be reached, closed the connection or did not answer in time."""


@dataclass(frozen=True)
class Ack:
    """MSA-1, MSA-2 and the text a person needs when the peer refused the message."""

    code: str
    control_id: str
    text: str


def read_ack(payload: bytes) -> Ack:
    """The acknowledgement in one frame: code, the control ID it answers, and why (MSA-3, ERR).

    Raises
    ------
    MessageError
        The frame is not an HL7 message with an MSA segment.
    """
    text, codec = decode(payload)  # by the answer's MSH-18, as inbound messages are read
    message = parse(text, codec)
    msa = message.first("MSA")
    if msa is None:
        raise MessageError("AR", 100, "answer has no MSA segment")
    reasons = [msa.get(3)]
    for err in message.all("ERR"):
        # v2.5: ERR-3 condition (code^text), ERR-8 user message; v2.3: ERR-1.4 code&text.
        condition = " ".join(p for p in (err.get(3, 1), err.get(3, 2)) if p)
        legacy = " ".join(p for p in (err.get(1, 4, 1), err.get(1, 4, 2)) if p)
        where = "-".join(p for p in (err.get(2, 1), err.get(2, 3)) if p) or err.get(1, 1)
        parts = [err.get(8), condition or legacy, f"at {where}" if where else ""]
        reasons.append(" ".join(p for p in parts if p))
    return Ack(code=msa.get(1).upper(), control_id=msa.get(2), text="; ".join(r for r in reasons if r))


#: Said with a TLS connection the RIS ended right after the handshake (how TLS 1.3 refuses a client
#: certificate).
TLS_REFUSED_HINT = " (over TLS: does the RIS accept our certificate? see ris.tls_cert)"


class MllpConnection:
    """A client connection to an MLLP peer, opened on first use and kept open between messages.

    Parameters
    ----------
    host, port
        The peer.
    connect_timeout, ack_timeout
        Seconds to wait for the TCP connection and for the answer to one message.
    """

    def __init__(self, host: str, port: int, *, connect_timeout: float, ack_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.connect_timeout, self.ack_timeout = connect_timeout, ack_timeout
        self._sock: socket.socket | None = None
        self._reader = FrameReader(MAX_ACK_BYTES)
        self._frames: list[bytes] = []

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = FrameReader(MAX_ACK_BYTES)
                self._frames = []

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise PeerUnavailable(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.ssl_context is not None:
            try:  # the handshake within the connect timeout (create_connection's timeout is still set)
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise PeerUnavailable(f"TLS to {self.host}:{self.port}: the RIS's certificate is not trusted: "
                                      f"{exc.verify_message}") from None
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise PeerUnavailable(f"TLS to {self.host}:{self.port} failed: {tls.failure_reason(exc)}") from None
        self._sock = sock
        return sock

    def exchange(self, payload: bytes, control_id: str) -> Ack:
        """Send one message and return the ACK that answers ``control_id``.

        A kept connection the peer closed since the last message is found out on the write or
        the first read and replaced once by a new one (the message is sent again: receivers
        recognise a resend by its control ID). ACKs for other control IDs (late answers to an
        earlier, timed-out message) are skipped.

        Raises
        ------
        PeerUnavailable
            No connection, the connection broke, or no answer within ``ack_timeout``; the
            connection is closed then, so a late answer cannot be taken for the next message's.
        """
        for attempt in (1, 2):
            reused = self._sock is not None
            sock = self._sock or self._connect()
            try:
                sock.sendall(wrap(payload))
                return self._await_ack(sock, control_id)
            except _Closed as exc:
                self.close()
                if reused and attempt == 1 and not exc.partial:
                    continue  # a stale kept connection: once more on a fresh one
                # TLS 1.3: a RIS that refuses our certificate says so only after our handshake ended
                hint = TLS_REFUSED_HINT if self.ssl_context is not None and not reused else ""
                raise PeerUnavailable(f"{exc}{hint}") from None
            except ssl.SSLError as exc:
                self.close()
                raise PeerUnavailable(f"TLS with {self.host}:{self.port} ended: {tls.failure_reason(exc)}"
                                      f"{TLS_REFUSED_HINT if 'ALERT' in str(exc.reason) else ''}") from None
            except OSError as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise PeerUnavailable(f"connection to {self.host}:{self.port} failed: "
                                      f"{exc.strerror or type(exc).__name__}") from None
            except PeerUnavailable:
                self.close()
                raise
        raise AssertionError("unreachable")

    def _await_ack(self, sock: socket.socket, control_id: str) -> Ack:
        deadline = time.monotonic() + self.ack_timeout
        while True:
            while self._frames:
                frame = self._frames.pop(0)
                try:
                    ack = read_ack(frame)
                except MessageError as exc:
                    log.warning("MLLP %s:%d: unreadable answer skipped: %s", self.host, self.port, exc.text)
                    continue
                if ack.control_id == control_id:
                    return ack
                log.warning("MLLP %s:%d: answer to %s skipped while waiting for %s", self.host, self.port,
                            ack.control_id, control_id)
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerUnavailable(f"no ACK from {self.host}:{self.port} within {self.ack_timeout:g} s")
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise PeerUnavailable(f"no ACK from {self.host}:{self.port} within {self.ack_timeout:g} s") from None
            if not data:
                raise _Closed(f"{self.host}:{self.port} closed the connection before its ACK",
                              partial=self._reader.pending > 0)
            try:
                self._frames.extend(self._reader.feed(data))
            except FrameTooLarge:
                raise PeerUnavailable(f"{self.host}:{self.port} sent an answer over {MAX_ACK_BYTES} bytes") from None


class _Closed(Exception):
    def __init__(self, message: str, *, partial: bool) -> None:
        super().__init__(message)
        self.partial = partial


class RisSender:
    """The outbox's sender for destination ``ris``: ORU^R01 over a kept MLLP connection.

    AA (or CA) -> acked; AE (CE) -> refused with the peer's reason; AR (CR) -> tried again
    later up to ``ris.ar_attempts`` attempts when ``ris.retry_on_ar`` (in original mode AR also
    means "system down"), else refused; no connection, a broken one or no answer in time -> try
    again later. Without ``ris.host`` every delivery waits, saying so.
    """

    destination = "ris"

    def __init__(self, ris: RisSettings, *, sending_application: str, sending_facility: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = ris
        self.longest_send_s = ris.longest_send_s
        self.header = OruHeader(sending_application, sending_facility, ris.receiving_application,
                                ris.receiving_facility)
        self.connection = (MllpConnection(ris.host, ris.port, connect_timeout=ris.connect_timeout_s,
                                          ack_timeout=ris.ack_timeout_s, ssl_context=ssl_context)
                           if ris.host else None)

    def send(self, report: OutgoingReport) -> SendResult:
        if self.connection is None:
            return SendResult.later("ris.host is not configured: set [ris] host and port")
        payload = build_oru(report, self.header).encode("utf-8")
        try:
            ack = self.connection.exchange(payload, report.message_id)
        except PeerUnavailable as exc:
            return SendResult.later(str(exc))
        reason = f"{ack.code}: {ack.text or 'no reason given'}"
        if ack.code in ("AA", "CA"):
            return SendResult.accepted(ack.code)
        if ack.code in ("AR", "CR") and self.settings.retry_on_ar and report.attempts < self.settings.ar_attempts:
            return SendResult.later(f"{reason} (AR read as 'system down': attempt {report.attempts} of "
                                    f"{self.settings.ar_attempts}, ris.retry_on_ar)")
        if ack.code in ("AE", "AR", "CE", "CR"):
            return SendResult.refused(ack.code, reason)
        return SendResult.refused(ack.code, f"unknown acknowledgement code {ack.code!r}")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
