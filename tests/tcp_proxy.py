"""A TCP proxy between a browser and the service whose network can be cut: every open connection
is dropped at once (no close handshake reaches either side in order) and new ones are refused
until the cut ends."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class CuttableProxy:
    """Listens on 127.0.0.1:``port`` and forwards to 127.0.0.1:``target``."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down_until = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self.cuts = 0

    def __enter__(self) -> CuttableProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        self._drop_all()

    def cut(self, seconds: float) -> None:
        """The network goes away for ``seconds``: open connections are reset, new ones refused."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self.cuts += 1
        self._drop_all()

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()  # a reset, as when a network path dies under a connection

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
