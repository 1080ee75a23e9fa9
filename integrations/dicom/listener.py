"""Our DICOM listener (pynetdicom SCP): answers C-ECHO, so a PACS or an admin can verify us.

With DICOM TLS on, each connection's handshake runs in that connection's own thread with a
timeout: pynetdicom's own server shakes hands in its accept loop, where one caller that connects
and says nothing would hold every other caller out.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from integrations.dicom.scu import set_nodelay
from radservice import tls
from radservice.config import DicomSettings

log = logging.getLogger("radservice.dicom")


def _on_echo(event: Event) -> int:
    log.info("DICOM C-ECHO from %s", event.assoc.requestor.ae_title)
    return 0x0000


def _on_open(event: Event) -> None:
    set_nodelay(event.assoc)


#: Seconds a caller has to finish its whole TLS handshake.
HANDSHAKE_TIMEOUT_S = 10.0
#: TLS handshakes in progress at once; a caller beyond them is closed at once, with a log line.
MAX_HANDSHAKES = 32


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the TLS handshake moved into the connection's thread,
    bounded in time and in number. (CPython's handshake takes a socket's timeout as a deadline for
    the whole handshake, not for each read: a caller feeding it a byte every 0.2 s was cut at the
    1 s limit in tests/integration/test_tls.py.)"""

    tls_context: ssl.SSLContext | None = None
    handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)

    def process_request_thread(self, request: socket.socket | tuple[bytes, socket.socket],
                               client_address: tuple[str, int] | str) -> None:
        if self.tls_context is not None and isinstance(request, socket.socket):
            peer = client_address[0] if isinstance(client_address, tuple) else client_address
            if not self.handshakes.acquire(blocking=False):
                log.warning("dicom: refused connection from %s: %d TLS handshakes in progress", peer, MAX_HANDSHAKES)
                request.close()
                return
            try:
                request.settimeout(HANDSHAKE_TIMEOUT_S)
                request = self.tls_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                log.warning("dicom: TLS handshake from %s failed: %s", peer, tls.failure_reason(exc))
                try:
                    request.close()
                except OSError:
                    pass
                return
            finally:
                self.handshakes.release()
        super().process_request_thread(request, client_address)


class DicomListener:
    """C-ECHO SCP on ``dicom.listen_host:listen_port`` with ``dicom.ae_title``, over TLS when
    ``ssl_context`` is given (BCP 195; a client CA in it makes client certificates required)."""

    def __init__(self, settings: DicomSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.add_supported_context(Verification)
        self.server: ThreadedAssociationServer | None = None

    def start(self) -> tuple[str, int]:
        """Start serving in a thread; the address it listens on.

        Raises
        ------
        OSError
            The address cannot be bound (port in use, not a local address).
        """
        server = self.ae.make_server((self.settings.listen_host, self.settings.listen_port),
                                     evt_handlers=[(evt.EVT_C_ECHO, _on_echo), (evt.EVT_CONN_OPEN, _on_open)],
                                     server_class=TlsAssociationServer)
        assert isinstance(server, TlsAssociationServer)
        server.tls_context = self.ssl_context
        server.handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        thread.start()
        self.ae._servers.append(server)
        self.server = server
        host, port = server.server_address[:2]
        return str(host), int(port)

    def is_up(self) -> bool:
        return self.server is not None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
