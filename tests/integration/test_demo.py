"""`radservice demo`: the whole loop with loopback peers, as a newcomer runs it; a failure names
its step; `--keep` leaves a service a person can sign in to, and Ctrl-C/SIGTERM ends it cleanly."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def _serving(workdir: Path) -> list[int]:
    """Processes whose command line names a file in ``workdir`` (the demo's serve)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(workdir) in cmdline.read_text():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def test_a_demo_stopped_midway_stops_its_service_and_removes_its_files(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "radservice.cli", "demo"], stdout=fh,
                                stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while "[5/9]" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        workdir = Path(re.search(r"; files in (\S+)", log.read_text()).group(1))  # type: ignore[union-attr]
        assert _serving(workdir)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 130, log.read_text()
    assert "interrupted at step" in log.read_text() and "Traceback" not in log.read_text()
    assert not workdir.exists() and not _serving(workdir)


def test_a_failed_step_is_named_and_exits_non_zero() -> None:
    # a transcription that does not finish in time (0.5 s): the step is named, serve's log shown
    from radservice import demo

    out = io.StringIO()
    assert demo.run(keep=False, out=out, transcribe_timeout_s=0.5) == 1
    text = out.getvalue()
    assert "FAILED at step 6 (Transcribing with faster-whisper" in text and "no transcription after 0.5 s" in text
    assert "last lines of radservice serve's log:" in text and "Traceback" not in text
    workdir = Path(re.search(r"; files in (\S+)", text).group(1))  # type: ignore[union-attr]
    assert not workdir.exists()


def test_demo_runs_the_whole_loop_then_keep_leaves_a_service_until_stopped(tmp_path: Path) -> None:
    # this machine's own settings in the environment must not reach the demo's service: it would
    # file its synthetic patient in the real database and send to the real RIS
    real_db = tmp_path / "real.db"
    log = tmp_path / "demo.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "radservice.cli", "demo", "--keep"], stdout=fh,
                                stderr=subprocess.STDOUT, text=True, cwd=tmp_path,  # any folder will do
                                env={**os.environ, "RADSERVICE_DATABASE__URL": f"sqlite:///{real_db}",
                                     "RADSERVICE_RIS__HOST": "192.0.2.1"})
    try:
        deadline = time.monotonic() + 600
        while "Press Ctrl-C to stop" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        out = log.read_text()
        for number in range(1, 10):
            assert f"[{number}/9] " in out
        assert out.count("      ok in ") == 9 and "FAILED" not in out
        assert "ACK: MSA|AA|" in out
        # the ORU as the loopback RIS received it: a final result for the demo's accession
        obr = next(line for line in out.splitlines() if line.startswith("  OBR|"))
        assert obr.split("|")[18] == "DEMO0001" and obr.split("|")[25] == "F", obr
        assert re.search(r"^  OBX\|1\|FT\|18782-3\^.*pulmonary nodule", out, flags=re.M), out
        # the SR's content tree as the loopback PACS stored it
        assert "CONTAINER Diagnostic Imaging Report (18748-4, LN)" in out
        assert "CONTAINS CONTAINER Findings (59776-5, LN)" in out and "PNAME Person Observer Name" in out
        assert "completion COMPLETE, verification VERIFIED" in out
        assert "pacs: acked, ris: acked" in out
        base = re.search(r"The page: (http://127\.0\.0\.1:\d+)/", out).group(1)  # type: ignore[union-attr]
        password = re.search(r"sign in as demo with the password (\S+)", out).group(1)  # type: ignore[union-attr]
        workdir = Path(re.search(r"; files in (\S+)", out).group(1))  # type: ignore[union-attr]
        with httpx.Client(base_url=base, timeout=10) as page:
            signed_in = page.post("/api/v1/session", json={"username": "demo", "password": password},
                                  headers={"Origin": base})
            assert signed_in.status_code == 200, signed_in.text
            assert page.get("/api/v1/worklist").status_code == 200
        assert workdir.is_dir() and workdir.name.startswith("radservice-demo-")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert not workdir.exists(), "the temporary folder outlived the demo"
    assert not real_db.exists()
