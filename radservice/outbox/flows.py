"""The delivery loop: claim due outbox rows of one destination, hand each to that destination's
sender, record what came back. One loop (one thread) per destination, so a peer that is down
delays only its own deliveries.

Senders are adapters (``integrations/``) behind the small :class:`Sender` interface; the loop
holds no session while a sender waits on the network.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from radservice.audit import service as audit
from radservice.config import OutboxSettings
from radservice.db.session import session_scope
from radservice.outbox import service as outbox
from radservice.outbox.service import OutgoingReport

log = logging.getLogger("radservice.outbox")


@dataclass(frozen=True)
class SendResult:
    """What a sender learnt: ``acked``, ``refused`` (the peer said no: a person must look) or
    ``later`` (the peer could not be reached or did not answer: try again after a backoff)."""

    outcome: str
    code: str = ""
    detail: str = ""
    #: A Study Instance UID the sender had to find or make (the study had none): kept on the study.
    study_instance_uid: str | None = None

    @classmethod
    def accepted(cls, code: str, detail: str = "", study_instance_uid: str | None = None) -> SendResult:
        return cls("acked", code, detail, study_instance_uid)

    @classmethod
    def refused(cls, code: str, detail: str) -> SendResult:
        return cls("refused", code, detail)

    @classmethod
    def later(cls, detail: str) -> SendResult:
        return cls("later", "", detail)


class Sender(Protocol):
    """Delivers one signed version to one peer; never raises for a peer's failure.

    ``longest_send_s``: the longest one send can take (its timeouts added up); the outbox's
    lease must be longer (checked when the settings are read).
    """

    destination: str
    longest_send_s: float

    def send(self, report: OutgoingReport) -> SendResult: ...

    def close(self) -> None: ...


class DeliveryLoop:
    """Sends the due rows of ``sender.destination`` until ``stop`` is set.

    Parameters
    ----------
    sessions
        Session factory of the radservice database.
    sender
        The destination's adapter.
    settings
        ``[outbox]``: poll interval, backoff, lease.
    owner
        This loop's name in lease records (unique per process and destination).
    observers
        Called with ``(destination, status)`` after each attempt (metrics); their errors are
        logged, never fatal.
    """

    def __init__(self, *, sessions: sessionmaker[Session], sender: Sender, settings: OutboxSettings, owner: str,
                 stop: threading.Event | None = None,
                 observers: Sequence[Callable[[str, str], None]] = ()) -> None:
        self.sessions = sessions
        self.observers = list(observers)
        self.sender = sender
        self.settings = settings
        self.owner = owner
        self.stop = stop or threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Claim what one lease can cover: each send may take the sender's longest exchange.
        longest = max(getattr(sender, "longest_send_s", 0.0), 0.001)
        self.batch = max(1, min(20, int(settings.lease_s // longest)))

    def wake(self) -> None:
        """Look for due rows now (a signature just queued one)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"outbox-{self.sender.destination}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        log.info("outbox %s: delivering as %s", self.sender.destination, self.owner)
        while not self.stop.is_set():
            self._wake.clear()
            try:
                sent = self.run_once()
            except SQLAlchemyError as exc:
                log.error("outbox %s: database unavailable: %s", self.sender.destination, type(exc).__name__)
                sent = 0
            if not sent:
                self._wake.wait(self.settings.poll_interval_s)
        self.sender.close()
        log.info("outbox %s: stopped", self.sender.destination)

    def run_once(self) -> int:
        """Send every row due now; return how many were tried."""
        with self.sessions() as session:
            claimed = outbox.claim_due(session=session, destination=self.sender.destination, owner=self.owner,
                                       lease=timedelta(seconds=self.settings.lease_s), limit=self.batch)
        for delivery_id in claimed:
            if self.stop.is_set():
                break  # the lease expires and another sender (or the next start) takes it
            self._deliver(delivery_id)
        return len(claimed)

    def _deliver(self, delivery_id: int) -> None:
        with self.sessions() as session:
            # Checked and extended before each send: a batch may outlast its first lease.
            if not outbox.renew(session=session, delivery_id=delivery_id, owner=self.owner,
                                lease=timedelta(seconds=self.settings.lease_s)):
                log.warning("outbox %s: delivery %d is no longer held by %s (lease lost); not sent",
                            self.sender.destination, delivery_id, self.owner)
                return
            report = outbox.outgoing(session=session, delivery_id=delivery_id)
        started = time.perf_counter()
        try:
            result = self.sender.send(report)
        except Exception as exc:  # a sender's bug must not stop deliveries: the row says what happened
            # the type only: an exception's text may quote the report or the patient (traceback at debug)
            log.error("outbox %s: sender raised %s for delivery %d", self.sender.destination, type(exc).__name__,
                      delivery_id)
            log.debug("outbox %s: traceback of delivery %d", self.sender.destination, delivery_id, exc_info=True)
            result = SendResult.later(f"internal error: {type(exc).__name__}")
        ms = (time.perf_counter() - started) * 1000
        with session_scope(self.sessions) as session:
            if result.outcome == "acked":
                kept = outbox.record_acked(session=session, delivery_id=delivery_id, owner=self.owner,
                                           ack_code=result.code, note=result.detail)
                status: str | None = "acked" if kept else None
                if kept and result.study_instance_uid:
                    outbox.remember_study_uid(session=session, delivery_id=delivery_id,
                                              uid=result.study_instance_uid)
            elif result.outcome == "refused":
                kept = outbox.record_refused(session=session, delivery_id=delivery_id, owner=self.owner,
                                             ack_code=result.code, error=result.detail)
                status = "failed" if kept else None
            else:
                status = outbox.record_retry(session=session, delivery_id=delivery_id, owner=self.owner,
                                             error=result.detail,
                                             initial=timedelta(seconds=self.settings.retry_initial_s),
                                             maximum=timedelta(seconds=self.settings.retry_max_s))
            if status is not None:
                # the report left (or tried to leave) for a peer: PHI disclosure is audited
                audit.record(session=session, actor="outbox", action=f"report.delivery_{status}", entity_type="report",
                             entity_id=str(report.report_id),
                             detail={"accession": report.accession_number, "version": report.version,
                                     "destination": report.destination, "message_id": report.message_id,
                                     "ack_code": result.code})
        self._notify(status)
        # identifiers only: accession, version, control ID (never report text or names)
        if status is None:
            log.warning("outbox %s: delivery %d finished after its lease was lost; outcome not recorded",
                        self.sender.destination, delivery_id)
        else:
            level = logging.INFO if status == "acked" else logging.WARNING
            log.log(level, "outbox %s: %s v%d (message %s) %s in %.1f ms%s", self.sender.destination,
                    report.accession_number, report.version, report.message_id, status, ms,
                    f": {result.detail}" if result.outcome != "acked" else "")

    def _notify(self, status: str | None) -> None:
        if status is None:
            return
        for observer in self.observers:
            try:
                observer(self.sender.destination, status)
            except Exception:  # an observer (metrics) must never stop deliveries
                log.exception("outbox %s: observer failed", self.sender.destination)
