"""Worker processes: `radservice worker --concurrency N` and the one child `radservice serve` starts.

Each worker is its own process (spawned, not forked: models and database connections are
never shared), builds its handlers once (the speech model loads and warms up here, never in
the API process) and runs the job loop until SIGTERM. The parent restarts a child that died.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from multiprocessing.process import BaseProcess

from radservice.config import Settings
from radservice.db.session import make_engine, make_sessionmaker
from radservice.jobs.worker import Handler, Worker
from radservice.logs import configure_logging

log = logging.getLogger("radservice.worker")

#: Where the job handlers of a normal installation come from (``module:function(settings)``).
DEFAULT_HANDLERS = "radservice.handlers:handlers"
HandlerFactory = Callable[[Settings], Mapping[str, Handler]]


def load_handler_factory(spec: str) -> HandlerFactory:
    """Import ``module:function``; raise ValueError with the spec when it cannot be found."""
    module_name, _, attr = spec.partition(":")
    try:
        factory: HandlerFactory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"job handlers '{spec}' cannot be loaded: {exc}") from None
    return factory


def worker_main(settings: Settings, handlers_spec: str, index: int) -> None:
    """Entry point of one worker process."""
    configure_logging()
    # Models load from local folders only; the Hugging Face hub must never be asked (no network here).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    owner = f"{socket.gethostname()}:{os.getpid()}"
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), stop), name="parent-watch", daemon=True).start()
    started = time.perf_counter()
    handlers = load_handler_factory(handlers_spec)(settings)
    log.info("worker %s (#%d) ready in %.1fs", owner, index, time.perf_counter() - started)
    engine = make_engine(settings.database.url)
    try:
        Worker(sessions=make_sessionmaker(engine), handlers=handlers, owner=owner,
               lease=timedelta(seconds=settings.worker.lease_s), poll_interval=settings.worker.poll_interval_s,
               stop=stop).run()
    finally:
        engine.dispose()


def _stop_when_orphaned(parent: int, stop: threading.Event, every_s: float = 1.0) -> None:
    """Stop the worker when the process that started it is gone (killed without a chance to
    stop its children): a worker nobody supervises would poll a database forever."""
    while not stop.wait(every_s):
        if os.getppid() != parent:
            log.warning("worker %d: parent process %d is gone; stopping", os.getpid(), parent)
            stop.set()


class WorkerPool:
    """N worker processes, restarted when one dies, stopped together."""

    def __init__(self, settings: Settings, concurrency: int, handlers_spec: str = DEFAULT_HANDLERS) -> None:
        load_handler_factory(handlers_spec)  # fail here, in the parent, on a bad spec
        self.settings = settings
        self.handlers_spec = handlers_spec
        self.concurrency = concurrency
        self._ctx = mp.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._stopping = False

    def _spawn(self, index: int) -> BaseProcess:
        proc = self._ctx.Process(target=worker_main, args=(self.settings, self.handlers_spec, index),
                                 name=f"radservice-worker-{index}", daemon=False)
        proc.start()
        return proc

    def start(self) -> None:
        self._procs = [self._spawn(i) for i in range(self.concurrency)]
        if self._procs:
            log.info("started %d worker process(es): pids %s", len(self._procs),
                     ", ".join(str(p.pid) for p in self._procs))

    def check(self) -> None:
        """Restart any child that exited while we were not stopping."""
        for i, proc in enumerate(self._procs):
            if not proc.is_alive() and not self._stopping:
                log.error("worker process %s exited with %s; starting another", proc.pid, proc.exitcode)
                self._procs[i] = self._spawn(i)

    def alive(self) -> int:
        return sum(p.is_alive() for p in self._procs)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every child (each finishes its current job), then kill what is left after ``timeout``."""
        self._stopping = True
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker process %s did not stop in %.0fs; killed (its job runs again)", proc.pid, timeout)
                proc.kill()
                proc.join(5)


def run_pool(settings: Settings, concurrency: int, handlers_spec: str = DEFAULT_HANDLERS) -> int:
    """`radservice worker`: run the pool until SIGTERM/SIGINT; the exit code."""
    pool = WorkerPool(settings, concurrency, handlers_spec)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pool.start()
    while not stop.wait(1.0):
        pool.check()
    log.info("stopping workers")
    pool.stop()
    return 0
