"""`radservice serve`: the HTTP API, the HL7 MLLP listener and the outbox senders in one process
(composition root)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence

import uvicorn
from sqlalchemy import Engine

from integrations.dicom.listener import DicomListener
from integrations.dicom.scu import PacsSender
from integrations.hl7.listener import MllpListener
from integrations.hl7.routing import Hl7Router
from integrations.hl7.sender import RisSender
from radservice import tls
from radservice.api.app import create_app
from radservice.config import Settings
from radservice.db.session import make_sessionmaker
from radservice.handlers import failure_markers
from radservice.jobs.processes import WorkerPool
from radservice.jobs.scheduled import start_scheduler
from radservice.outbox.flows import DeliveryLoop

log = logging.getLogger("radservice.serve")


class ListenError(Exception):
    """A listener could not bind its address (port in use, address not local, ...)."""


def bind_tcp(host: str, port: int, *, what: str) -> socket.socket:
    """Bind a listening TCP socket, or raise ListenError with a message an admin can act on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP, and without it every HTTP response written in two parts waited 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ListenError(f"{what}: cannot listen on {host}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` owns SIGTERM/SIGINT for every listener."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(settings: Settings, engine: Engine) -> int:
    """Serve until SIGTERM or SIGINT on a migrated database; return the process exit code.

    Raises
    ------
    ListenError
        A port cannot be bound.
    tls.TlsError
        A certificate, key or CA file the settings name cannot be used (checked before any bind).
    """
    secure = tls.contexts(settings)
    api_sock = bind_tcp(settings.server.host, settings.server.port, what="HTTP API")
    try:
        mllp_sock = bind_tcp(settings.hl7.listen_host, settings.hl7.listen_port, what="HL7 MLLP listener")
    except ListenError:
        api_sock.close()
        raise
    app = create_app(settings, engine)
    server = settings.server
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            ws_max_size=server.ws_max_kb << 10, limit_concurrency=server.max_connections,
                            timeout_keep_alive=server.keep_alive_s,
                            proxy_headers=bool(server.trusted_proxies), forwarded_allow_ips=server.trusted_proxies)
    if secure.https is not None:
        config.load()
        # our context (BCP 195: TLS 1.2+, AEAD suites) instead of uvicorn's defaults; uvicorn
        # tells https from http by the connection's transport, so the scheme follows
        config.ssl = secure.https
    api = _ApiServer(config)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    router = Hl7Router(
        sessions=make_sessionmaker(engine),
        sending_application=settings.hl7.sending_application,
        sending_facility=settings.hl7.sending_facility,
        accession_field=settings.hl7.accession_field,
        max_accession_chars=16 if settings.pacs.host else 64,
        observers=[lambda kind, code: app.state.metrics.hl7_messages.labels(kind, code).inc()],
    )
    mllp = MllpListener(router=router, max_message_bytes=settings.hl7.max_message_bytes,
                        allowed_hosts=settings.hl7.allowed_hosts, idle_timeout_s=settings.hl7.idle_timeout_s,
                        frame_timeout_s=settings.hl7.frame_timeout_s, max_connections=settings.hl7.max_connections,
                        ssl_context=secure.mllp)
    await mllp.start(mllp_sock)
    app.state.listeners["hl7"] = mllp.is_up
    host, port = mllp_sock.getsockname()[:2]
    log.info("HL7 MLLP listening on %s:%d", host, port)
    dicom = DicomListener(settings.dicom, ssl_context=secure.dicom)
    try:
        host, port = dicom.start()
    except OSError as exc:
        await mllp.close()
        api_sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ListenError(f"DICOM listener: cannot listen on {settings.dicom.listen_host}:"
                          f"{settings.dicom.listen_port}: {reason}") from None
    app.state.listeners["dicom"] = dicom.is_up
    log.info("DICOM listening on %s:%d as %s (C-ECHO)", host, port, settings.dicom.ae_title)

    # Workers are child processes (models never live in the API process); duties run on a scheduler.
    pool = WorkerPool(settings, settings.worker.serve_workers)
    pool.start()
    if settings.worker.serve_workers:
        app.state.listeners["worker"] = lambda: pool.alive() > 0
    scheduler = start_scheduler(settings, make_sessionmaker(engine), failure_markers())
    senders = start_senders(settings, engine, secure, observers=[
        lambda destination, status: app.state.metrics.outbox_deliveries.labels(destination, status).inc()])
    app.state.outbox_wake = lambda: wake_senders(senders)
    for delivery in senders:
        app.state.listeners[f"outbox-{delivery.sender.destination}"] = delivery.is_alive

    # Everything built so far (modules, the app, its schemas and routes, listeners, scheduler,
    # senders) lives as long as the process: out of the collector's sight, a full collection no
    # longer walks it. Measured (bench/concurrency.py --target): pauses of the API of 140-190 ms
    # became 15-50 ms, and they were the worklist's slowest answers. (Workers are spawned, not
    # forked: they do not inherit this.)
    gc.collect()
    gc.freeze()
    api_task = asyncio.create_task(api.serve(sockets=[api_sock]), name="api")
    while not api.started and not api_task.done():
        await asyncio.sleep(0.02)
    if api_task.done():
        api_task.result()
        log.error("HTTP API stopped during start-up")
        await mllp.close()
        dicom.stop()
        scheduler.shutdown(wait=False)
        stop_senders(senders)
        pool.stop(timeout=10)
        return 1
    host, port = api_sock.getsockname()[:2]
    log.info("HTTP API listening on %s://%s:%d", "https" if server.tls_cert else "http", host, port)

    stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
    while not (api_task.done() or stop_task.done()):
        await asyncio.wait({api_task, stop_task}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        pool.check()
    log.info("shutting down")
    await mllp.close()
    await asyncio.to_thread(dicom.stop)
    scheduler.shutdown(wait=False)
    await asyncio.to_thread(stop_senders, senders)
    await asyncio.to_thread(pool.stop, 15)
    api.should_exit = True
    await api_task
    stop_task.cancel()
    log.info("stopped")
    return 0


def start_senders(settings: Settings, engine: Engine, secure: tls.Contexts,
                  observers: Sequence[Callable[[str, str], None]] = ()) -> list[DeliveryLoop]:
    """One delivery loop per destination (a thread each: a peer that is down delays only its own rows)."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    ris = RisSender(settings.ris, sending_application=settings.hl7.sending_application,
                    sending_facility=settings.hl7.sending_facility, ssl_context=secure.ris)
    if not settings.ris.host:
        log.warning("ris.host is not configured: signed reports wait in the outbox until it is")
    pacs = PacsSender(settings.pacs, settings.dicom, institution=settings.hl7.sending_facility,
                      ssl_context=secure.pacs)
    if not settings.pacs.host:
        log.warning("pacs.host is not configured: signed reports' SRs wait in the outbox until it is")
    loops = [DeliveryLoop(sessions=make_sessionmaker(engine), sender=sender, settings=settings.outbox,
                          owner=f"{owner}:{sender.destination}", observers=observers) for sender in (ris, pacs)]
    for loop in loops:
        loop.start()
    if settings.ris.host:
        log.info("outbox: ORU^R01 to the RIS at %s:%d", settings.ris.host, settings.ris.port)
    if settings.pacs.host:
        log.info("outbox: SR C-STORE to %s at %s:%d", settings.pacs.ae_title, settings.pacs.host, settings.pacs.port)
    return loops


def wake_senders(loops: list[DeliveryLoop]) -> None:
    for loop in loops:
        loop.wake()


def stop_senders(loops: list[DeliveryLoop]) -> None:
    """Stop each loop after the delivery it is in, waiting a few seconds at most: a delivery cut
    short stays claimed until its lease expires and is sent again then (same control ID)."""
    for loop in loops:
        loop.join(timeout=5)
