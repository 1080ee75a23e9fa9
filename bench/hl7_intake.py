"""ORM^O01 intake throughput over MLLP: radservice (ACK after commit) beside a bare echo-ACK server.

The ceiling is python-hl7's asyncio MLLP server answering every message with an ACK and doing
nothing else: the most a Python listener can do on this machine. radservice is started with
`radservice serve` on SQLite and on PostgreSQL; clients are separate processes, each holding
one connection and sending messages one after another (a RIS waits for each ACK).

    .venv/bin/python bench/hl7_intake.py [--messages 1000] [--pg-url postgresql+psycopg://postgres@127.0.0.1/test]

Prints messages per second for 1 and 4 connections and the ratio to the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import hl7  # noqa: E402
import hl7.mllp  # noqa: E402
import httpx  # noqa: E402

from tests.hl7_peer import RisClient, order, read_ack  # noqa: E402
from tests.support import free_port, fresh_pg_database  # noqa: E402


def _echo_server(port: int) -> None:
    async def client(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while True:
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await hl7.mllp.start_hl7_server(client, "127.0.0.1", port, encoding="utf-8")
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _listener_only(port: int) -> None:
    """radservice's listener and codec with no database: what the framing, threads and ACKs cost."""
    from integrations.hl7.ack import build_ack
    from integrations.hl7.listener import MllpListener
    from integrations.hl7.message import decode, parse
    from radservice.serve import bind_tcp

    class NoDatabase:
        def handle(self, payload: bytes, peer: str = "") -> bytes:
            text, codec = decode(payload)
            msg = parse(text, codec)
            return build_ack(code="AA", original=msg, sending_application="RS", sending_facility="R").encode(codec)

    async def main() -> None:
        listener = MllpListener(router=NoDatabase(), max_message_bytes=1 << 20, allowed_hosts=[],  # type: ignore[arg-type]
                                idle_timeout_s=600)
        await listener.start(bind_tcp("127.0.0.1", port, what="bench"))
        await asyncio.Event().wait()

    asyncio.run(main())


def _client(args: tuple[int, int, str]) -> tuple[float, int]:
    port, count, prefix = args
    bad = 0
    with RisClient(port, timeout=30) as ris:
        started = time.perf_counter()
        for i in range(count):
            ack = read_ack(ris.send(order(f"{prefix}-{i}", f"{prefix}-{i}", patient_id=f"MRN-{prefix}-{i % 50}")))
            bad += ack.code != "AA"
        return time.perf_counter() - started, bad


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def run_load(port: int, connections: int, per_connection: int, label: str) -> float:
    """Messages per second over `connections` parallel connections (wall clock, all ACKs in)."""
    prefix = f"{label}-{uuid.uuid4().hex[:6]}"
    with mp.get_context("spawn").Pool(connections) as pool:
        # a short warm-up so connection set-up and first-query costs are not measured
        pool.map(_client, [(port, 5, f"W{prefix}-{c}") for c in range(connections)])
        started = time.perf_counter()
        results = pool.map(_client, [(port, per_connection, f"{prefix}-{c}") for c in range(connections)])
        wall = time.perf_counter() - started
    errors = sum(bad for _, bad in results)
    if errors:
        raise RuntimeError(f"{label}: {errors} messages not acknowledged AA")
    return connections * per_connection / wall


@contextmanager
def in_process_server(target: Callable[[int], None]) -> Iterator[int]:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=target, args=(port,), daemon=True)
    proc.start()
    try:
        _wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.join(5)


@contextmanager
def radservice(db_url: str) -> Iterator[int]:
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-"))
    api_port, mllp_port = free_port(), free_port()
    config = workdir / "radservice.toml"
    config.write_text(
        f'[server]\nport = {api_port}\n[database]\nurl = "{db_url}"\n'
        f'[storage]\ndata_dir = "{workdir}/data"\n[hl7]\nlisten_port = {mllp_port}\n'
    )
    log = (workdir / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "radservice.cli", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "serve.log").read_text())
            time.sleep(0.1)
        yield mllp_port
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000, help="messages per run (split over connections)")
    parser.add_argument("--pg-url", default=os.environ.get("RADSERVICE_TEST_PG_URL",
                                                           "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    print(f"# ORM^O01 intake, {args.messages} messages per run, {os.cpu_count()} cores")
    rows: list[tuple[str, int, float]] = []
    for connections in (1, 4):
        per = args.messages // connections
        with in_process_server(_echo_server) as port:
            ceiling = run_load(port, connections, per, "echo")
        rows.append(("python-hl7 echo ACK (ceiling)", connections, ceiling))
        with in_process_server(_listener_only) as port:
            rows.append(("radservice listener, no database", connections, run_load(port, connections, per, "nodb")))
        with tempfile.TemporaryDirectory() as tmp, radservice(f"sqlite:///{tmp}/bench.db") as port:
            rows.append(("radservice, SQLite", connections, run_load(port, connections, per, "sqlite")))
        with fresh_pg_database(args.pg_url, prefix="rs_bench") as url, radservice(url) as port:
            rows.append(("radservice, PostgreSQL", connections, run_load(port, connections, per, "pg")))
    print(f"{'server':34} {'conns':>5} {'msg/s':>8} {'of ceiling':>10}")
    for name, connections, rate in rows:
        ceiling = next(r for n, c, r in rows if c == connections and n.startswith("python-hl7"))
        print(f"{name:34} {connections:5d} {rate:8.0f} {rate / ceiling:10.2f}")


if __name__ == "__main__":
    main()
