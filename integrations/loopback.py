"""Loopback peers for `radservice demo`: a RIS that receives ORU^R01 over MLLP and acknowledges
each with AA, and a PACS (pynetdicom storage SCP, and Study Root C-FIND over what it holds) that
keeps every object it is sent in a folder.

Both listen on 127.0.0.1 only, on a port the system picks, and keep what they received for the
caller to show. They are demonstration peers, not test doubles of a particular product.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydicom import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from integrations.dicom.scu import set_nodelay
from integrations.hl7.ack import build_ack
from integrations.hl7.message import MessageError, decode, parse
from integrations.hl7.mllp import FrameReader, wrap

log = logging.getLogger("radservice.loopback")
T = TypeVar("T")

#: Largest message the loopback RIS reads (a report is far smaller).
MAX_FRAME_BYTES = 4 << 20


class _Inbox(Generic[T]):
    """What a peer received, in order, for another thread to wait for."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[T] = []
        self._changed = threading.Condition()

    def add(self, item: T) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def snapshot(self) -> list[T]:
        with self._changed:
            return list(self.items)

    def wait_for(self, count: int, timeout_s: float) -> list[T]:
        """The first ``count`` items, waiting up to ``timeout_s`` for them."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"received {len(self.items)} of {count} {self.what}")
                self._changed.wait(left)
            return self.items[:count]


class LoopbackRis:
    """An MLLP receiver on 127.0.0.1 that answers AA to every message and keeps their texts."""

    def __init__(self, *, application: str = "DEMO-RIS", facility: str = "DEMO",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.application, self.facility = application, facility
        self.inbox: _Inbox[str] = _Inbox("messages")
        self.received = self.inbox.items
        self.wait_for = self.inbox.wait_for
        ris = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(60)
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if ssl_context is not None:
                    try:
                        self.request = ssl_context.wrap_socket(self.request, server_side=True)
                    except (ssl.SSLError, OSError) as exc:
                        log.warning("loopback RIS: TLS handshake failed: %s", exc)
                        return
                reader = FrameReader(MAX_FRAME_BYTES)
                while True:
                    try:
                        data = self.request.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    for frame in reader.feed(data):
                        self.request.sendall(wrap(ris._answer(frame)))

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=True)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-ris", daemon=True)

    def _answer(self, frame: bytes) -> bytes:
        try:
            text, codec = decode(frame)
            message = parse(text, codec)
        except MessageError as exc:
            ack = build_ack(code="AR", original=None, sending_application=self.application,
                            sending_facility=self.facility, error=exc)
            return ack.encode("utf-8")
        self.inbox.add(text)
        return build_ack(code="AA", original=message, sending_application=self.application,
                         sending_facility=self.facility).encode(codec)

    def __enter__(self) -> LoopbackRis:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class LoopbackPacs:
    """A DICOM storage SCP (and C-ECHO) on 127.0.0.1 writing each received object to ``folder``."""

    def __init__(self, folder: Path, *, ae_title: str = "DEMO-PACS", ssl_context: ssl.SSLContext | None = None) -> None:
        self.folder = folder
        self.ssl_context = ssl_context
        self.ae_title = ae_title
        self.inbox: _Inbox[Dataset] = _Inbox("objects")
        self.received = self.inbox.items
        self.wait_for = self.inbox.wait_for
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = StoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server: ThreadedAssociationServer | None = None
        self.port = 0

    def _on_store(self, event: Event) -> int:
        dataset: Dataset = event.dataset
        dataset.file_meta = event.file_meta
        dataset.save_as(self.folder / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
        self.inbox.add(dataset)
        return 0x0000

    def _on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        """Study Root C-FIND at STUDY level, matched on the accession number, from what it holds."""
        query: Dataset = event.identifier
        accession = str(query.get("AccessionNumber", "") or "")
        held = self.inbox.snapshot()
        studies: dict[str, Dataset] = {}
        for stored in held:
            if not accession or stored.get("AccessionNumber", "") == accession:
                answer = Dataset()
                answer.QueryRetrieveLevel = "STUDY"
                answer.StudyInstanceUID = stored.StudyInstanceUID
                answer.AccessionNumber = stored.get("AccessionNumber", "")
                answer.PatientID = stored.get("PatientID", "")
                answer.IssuerOfPatientID = stored.get("IssuerOfPatientID", "")
                studies[str(stored.StudyInstanceUID)] = answer
        for answer in studies.values():
            yield 0xFF00, answer
        yield 0x0000, None

    def __enter__(self) -> LoopbackPacs:
        self.folder.mkdir(parents=True, exist_ok=True)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find),
                               (evt.EVT_C_ECHO, lambda event: 0x0000),
                               (evt.EVT_CONN_OPEN, lambda event: set_nodelay(event.assoc))]
        server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers,
                                      ssl_context=self.ssl_context)
        assert server is not None
        self._server = server
        self.port = int(server.server_address[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
