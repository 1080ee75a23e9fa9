"""The PACS in the tests: a real Orthanc (Debian package `orthanc`) on free loopback ports from a
temporary configuration, and dcmtk's `storescp` as a second receiver. Started and stopped by
the tests; nothing outlives them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom

from tests.conftest import IN_CI
from tests.support import free_port, wait_until_up

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
STORESCP = shutil.which("storescp")
MISSING = [name for name, path in (("Orthanc", ORTHANC), ("storescp", STORESCP)) if path is None]
if MISSING and IN_CI:
    raise RuntimeError(f"CI needs {', '.join(MISSING)}: scripts/system-packages.sh orthanc dcmtk")


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM port and AE title, its REST API."""

    dicom_port: int
    http_port: int
    ae_title: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=10)
        response.raise_for_status()
        return response.json()

    def instances(self) -> list[str]:
        ids: list[str] = self.get("/instances")
        return ids

    def dataset(self, instance_id: str) -> pydicom.Dataset:
        response = httpx.get(f"{self.url}/instances/{instance_id}/file", timeout=10)
        response.raise_for_status()
        return pydicom.dcmread(BytesIO(response.content))

    def upload(self, ds: pydicom.Dataset) -> None:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        httpx.post(self.url + "/instances", content=buffer.getvalue(), timeout=10).raise_for_status()


@contextmanager
def orthanc(workdir: Path, *, dicom_port: int | None = None, check_called_aet: bool = False,
            ae_title: str = "ORTHANC", tls: tuple[Path, Path, Path] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with its own storage under ``workdir``; wait until its REST API answers.

    ``tls`` = (certificate, key, trusted CA certificates): DICOM TLS on its DICOM port, with
    callers' certificates required (Orthanc's default since 1.9)."""
    assert ORTHANC is not None, "Orthanc is not installed"
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = dicom_port or free_port(), free_port()
    config = {
        "Name": "radservice-test", "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"), "DicomAet": ae_title, "DicomPort": dicom_port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowEcho": True,
        "DicomCheckCalledAet": check_called_aet, "DicomScpTimeout": 2, "Plugins": [], "SaveJobs": False,
        "StableAge": 1, "ConcurrentJobs": 1, "HttpThreadsCount": 4,
    }
    if tls is not None:
        config |= {"DicomTlsEnabled": True, "DicomTlsCertificate": str(tls[0]), "DicomTlsPrivateKey": str(tls[1]),
                   "DicomTlsTrustedCertificates": str(tls[2]), "DicomTlsRemoteCertificateRequired": True}
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config))
    log_path = workdir / "orthanc.log"
    with log_path.open("wb") as log:
        # TCP_NODELAY=1: Orthanc's DCMTK reads it from the environment (Nagle costs ~90 ms a store)
        proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TCP_NODELAY": "1"})
    running = Orthanc(dicom_port, http_port, ae_title, proc, log_path)
    try:
        wait_until_up(proc, running.url + "/system", what="Orthanc", wait_s=30,
                      log=lambda: log_path.read_text()[-3000:])
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def storescp(folder: Path, *, ae_title: str = "STORESCP") -> Iterator[int]:
    """dcmtk's storescp writing every received object under ``folder``; yields its port."""
    assert STORESCP is not None, "storescp is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([STORESCP, "--aetitle", ae_title, "--output-directory", str(folder), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TCP_NODELAY": "1"})
    try:
        deadline = time.monotonic() + 10
        import socket
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("storescp did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
