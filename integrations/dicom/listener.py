"""Our DICOM listener (pynetdicom SCP): answers C-ECHO, so a PACS or an admin can verify us."""

from __future__ import annotations

import logging

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from integrations.dicom.scu import set_nodelay
from radservice.config import DicomSettings

log = logging.getLogger("radservice.dicom")


def _on_echo(event: Event) -> int:
    log.info("DICOM C-ECHO from %s", event.assoc.requestor.ae_title)
    return 0x0000


def _on_open(event: Event) -> None:
    set_nodelay(event.assoc)


class DicomListener:
    """C-ECHO SCP on ``dicom.listen_host:listen_port`` with ``dicom.ae_title``."""

    def __init__(self, settings: DicomSettings) -> None:
        self.settings = settings
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
        server = self.ae.start_server((self.settings.listen_host, self.settings.listen_port), block=False,
                                      evt_handlers=[(evt.EVT_C_ECHO, _on_echo), (evt.EVT_CONN_OPEN, _on_open)])
        assert server is not None
        self.server = server
        host, port = server.server_address[:2]
        return str(host), int(port)

    def is_up(self) -> bool:
        return self.server is not None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
