"""`radservice demo`: the whole loop on this machine, with the bundled fixtures and loopback peers
(composition root).

It starts `radservice serve` on free loopback ports with a temporary SQLite database and audio
folder, a loopback RIS (MLLP, answers AA) and a loopback PACS (DICOM storage SCP), then sends an
order, uploads a bundled dictation, waits for the draft, signs it final and shows what the RIS and
the PACS received, timing each step. All patient data is synthetic.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydicom import Dataset
from pydicom.uid import generate_uid

from integrations.hl7.mllp import FrameReader, wrap
from integrations.loopback import LoopbackPacs, LoopbackRis, free_port
from radservice.db.session import make_engine, make_sessionmaker, session_scope
from radservice.users import service as users
from radservice.users import signin

REPO = Path(__file__).resolve().parents[1]
#: The bundled dictation: synthetic speech (espeak-ng) with both a findings and an impression part.
DICTATION_ID = "ct_chest_nodule"
ACCESSION = "DEMO0001"
USERNAME = "demo"
STEPS = 9


class DemoFailed(Exception):
    """A step did not do what it should; the message says what was seen."""


@dataclass
class Demo:
    """What a run has: where things are and how to reach them."""

    workdir: Path
    config: Path
    base_url: str
    mllp_port: int
    ris: LoopbackRis
    pacs: LoopbackPacs
    serve: subprocess.Popen[bytes]
    log_path: Path
    token: str = ""
    password: str = ""


class Progress:
    """Numbered steps with the time each took, on ``out``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.number = 0
        self.failed_step = ""

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        print(f"[{self.number}/{STEPS}] {title} ...", file=self.out, flush=True)
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.failed_step = f"step {self.number} ({title})"
            raise
        print(f"      ok in {time.perf_counter() - started:.2f} s", file=self.out, flush=True)


def bundled_files() -> tuple[Path, Path, dict[str, Any]]:
    """The config folder, the dictation file and its manifest entry (from the source tree)."""
    config_dir, manifest = REPO / "config", REPO / "fixtures" / "audio" / "manifest.toml"
    if not (config_dir / "templates").is_dir() or not manifest.is_file():
        raise DemoFailed(f"the bundled config and fixtures are not beside the package ({REPO}): run the demo "
                         "from a clone of the repository")
    entries = {entry["id"]: entry for entry in tomllib.loads(manifest.read_text())["dictation"]}
    entry = entries[DICTATION_ID]
    return config_dir, manifest.parent / f"{DICTATION_ID}.{entry['format']}", entry


def write_config(workdir: Path, config_dir: Path, *, http_port: int, mllp_port: int, dicom_port: int,
                 ris_port: int, pacs_port: int, pacs_ae: str) -> Path:
    """A config for the demo: loopback only, a temporary SQLite database, the bundled templates."""
    path = workdir / "radservice.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f'[database]\nurl = "sqlite:///{workdir / "radservice.db"}"\n'
        f'[storage]\ndata_dir = "{workdir / "data"}"\n'
        f'[hl7]\nlisten_host = "127.0.0.1"\nlisten_port = {mllp_port}\n'
        f'[dicom]\nlisten_host = "127.0.0.1"\nlisten_port = {dicom_port}\n'
        f'[ris]\nhost = "127.0.0.1"\nport = {ris_port}\nreceiving_application = "DEMO-RIS"\n'
        f'receiving_facility = "DEMO"\nack_timeout_s = 10\n'
        f'[pacs]\nhost = "127.0.0.1"\nport = {pacs_port}\nae_title = "{pacs_ae}"\n'
        f'[whisper]\nvocabulary_dir = "{config_dir / "vocabulary"}"\n'
        f'[report]\ntemplates_dir = "{config_dir / "templates"}"\nmacros_file = "{config_dir / "macros.toml"}"\n'
        f'lexicon_file = "{config_dir / "lexicon.txt"}"\n'
        # No LLM is installed with the project: the demo refines with the rules alone, as the
        # service does whenever Ollama does not answer.
        f'[llm]\nenabled = false\nprompts_dir = "{config_dir / "prompts"}"\n'
        "[worker]\nserve_workers = 1\npoll_interval_s = 0.2\n"
        "[outbox]\npoll_interval_s = 0.2\nretry_initial_s = 1\nretry_max_s = 5\n"
    )
    return path


def order_message(entry: dict[str, Any]) -> bytes:
    """An ORM^O01 (v2.3.1, IHE SWF, with the Study Instance UID in ZDS-1) for a synthetic patient."""
    now = time.strftime("%Y%m%d%H%M%S")
    study_uid = generate_uid()
    procedure = str(entry["procedure"]).upper()
    segments = [
        f"MSH|^~\\&|DEMO-RIS|DEMO|RADSERVICE|RADIOLOGY|{now}||ORM^O01|DEMO-ORM-{now}|P|2.3.1",
        "PID|1||DEMO-MRN-1^^^DEMO^MR||DEMO^PATIENT||19700101|O",
        "PV1|1|O",
        f"ORC|NW|P-{ACCESSION}|F-{ACCESSION}||SC||^^^^^R||{now}",
        f"OBR|1|P-{ACCESSION}|F-{ACCESSION}|DEMO1^{procedure}|||{now}|||||||||||{ACCESSION}|RP-{ACCESSION}|"
        f"SPS-{ACCESSION}|||||{entry['modality']}",
        f"ZDS|{study_uid}^RADSERVICE^Application^DICOM",
    ]
    return ("\r".join(segments) + "\r").encode("ascii")


def send_order(port: int, payload: bytes, timeout_s: float = 15) -> str:
    """Send one message over MLLP and return the ACK's text."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(wrap(payload))
        reader = FrameReader(1 << 20)
        while True:
            data = sock.recv(65536)
            if not data:
                raise DemoFailed("the MLLP listener closed the connection without an ACK")
            frames = reader.feed(data)
            if frames:
                return frames[0].decode("utf-8", "replace")


def wait(check: Callable[[], Any], what: str, timeout_s: float, serve: subprocess.Popen[bytes]) -> Any:
    """Poll ``check`` until it returns something true; fail when serve exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if serve.poll() is not None:
            raise DemoFailed(f"radservice serve exited with {serve.returncode} while waiting for {what}")
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"no {what} after {timeout_s:g} s")
        time.sleep(0.2)


def content_tree(dataset: Dataset, depth: int = 0) -> list[str]:
    """An SR's content tree, one line per item: relationship, value type, concept, value."""
    lines = []
    for item in dataset.get("ContentSequence", []):
        concept = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        name = f"{concept.CodeMeaning} ({concept.CodeValue}, {concept.CodingSchemeDesignator})" if concept else ""
        kind = item.ValueType
        value = ""
        if kind == "TEXT":
            value = str(item.TextValue)
        elif kind == "PNAME":
            value = str(item.PersonName)
        elif kind == "CODE":
            code = item.ConceptCodeSequence[0]
            value = f"{code.CodeMeaning} ({code.CodeValue}, {code.CodingSchemeDesignator})"
        text = f"{'  ' * depth}{item.RelationshipType} {kind} {name}" + (f": {value}" if value else "")
        lines.append(text)
        lines += content_tree(item, depth + 1)
    return lines


def _stop(serve: subprocess.Popen[bytes]) -> None:
    if serve.poll() is None:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)


def run(*, keep: bool, out: TextIO = sys.stdout, ready_timeout_s: float = 120,
        transcribe_timeout_s: float = 600) -> int:
    """The demo; its exit code (0 when every step did what it should)."""
    progress = Progress(out)
    workdir = Path(tempfile.mkdtemp(prefix="radservice-demo-"))

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind as Ctrl-C does: serve stopped, temporary files removed

    previous = signal.signal(signal.SIGTERM, on_term)
    kept = False
    try:
        with ExitStack() as stack:
            demo = _start(stack, progress, workdir, ready_timeout_s)
            _loop(demo, progress, transcribe_timeout_s)
            progress.say("\nThe whole loop worked: order in, dictation transcribed, report signed, "
                         "ORU^R01 at the RIS, SR at the PACS.")
            if keep:
                kept = True
                _keep(demo, progress)
        return 0
    except KeyboardInterrupt:
        if kept:
            progress.say("stopped")
            return 0
        progress.say(f"\ninterrupted at {progress.failed_step or 'start'}; stopped")
        return 130
    except (DemoFailed, httpx.HTTPError, OSError, TimeoutError) as exc:
        progress.say(f"\nFAILED at {progress.failed_step or 'start'}: {exc}")
        log = workdir / "serve.log"
        if log.exists():
            progress.say("last lines of radservice serve's log:\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-20:]))
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)


def _start(stack: ExitStack, progress: Progress, workdir: Path, ready_timeout_s: float) -> Demo:
    with progress.step("Starting a loopback RIS (MLLP receiver) and PACS (DICOM storage SCP)"):
        config_dir, _, _ = bundled_files()
        ris = stack.enter_context(LoopbackRis())
        pacs = stack.enter_context(LoopbackPacs(workdir / "pacs"))
        progress.say(f"      RIS on 127.0.0.1:{ris.port}, PACS {pacs.ae_title} on 127.0.0.1:{pacs.port}")
    with progress.step("Starting radservice serve (temporary SQLite database, free loopback ports)"):
        http_port, mllp_port = free_port(), free_port()
        config = write_config(workdir, config_dir, http_port=http_port, mllp_port=mllp_port, dicom_port=free_port(),
                              ris_port=ris.port, pacs_port=pacs.port, pacs_ae=pacs.ae_title)
        log_path = workdir / "serve.log"
        log_fh = stack.enter_context(log_path.open("wb"))
        # none of this machine's RADSERVICE_* settings: they would override the demo's file and
        # could point it at the real database, RIS or PACS
        own = {key: value for key, value in os.environ.items() if not key.upper().startswith("RADSERVICE_")}
        serve = subprocess.Popen([sys.executable, "-m", "radservice.cli", "serve", "--config", str(config)],
                                 stdout=log_fh, stderr=subprocess.STDOUT, cwd=workdir, env=own)
        stack.callback(_stop, serve)
        base_url = f"http://127.0.0.1:{http_port}"

        def ready() -> bool:
            try:
                return httpx.get(base_url + "/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait(ready, "answer from /readyz", ready_timeout_s, serve)
        progress.say(f"      API and page on {base_url}, MLLP on 127.0.0.1:{mllp_port}; files in {workdir}")
    return Demo(workdir=workdir, config=config, base_url=base_url, mllp_port=mllp_port, ris=ris, pacs=pacs,
                serve=serve, log_path=log_path)


def _loop(demo: Demo, progress: Progress, transcribe_timeout_s: float) -> None:
    _, audio, entry = bundled_files()
    with progress.step(f"Creating a radiologist '{USERNAME}'"):
        engine = make_engine(f"sqlite:///{demo.workdir / 'radservice.db'}")
        try:
            with session_scope(make_sessionmaker(engine)) as session:
                user = users.create_user(session=session, username=USERNAME, role=users.parse_role("radiologist"),
                                         display_name="Demo Radiologist")
                demo.password = secrets.token_urlsafe(12)
                signin.set_password(session=session, username=USERNAME, password=demo.password)
                demo.token = users.issue_token(session=session, user=user, ttl_hours=24)
        finally:
            engine.dispose()
    http = httpx.Client(base_url=demo.base_url, headers={"Authorization": f"Bearer {demo.token}"}, timeout=30)
    with progress.step(f"Sending an order (ORM^O01, accession {ACCESSION}) over MLLP"):
        ack = send_order(demo.mllp_port, order_message(entry))
        msa = next((segment for segment in ack.split("\r") if segment.startswith("MSA|")), "")
        progress.say(f"      ACK: {msa}")
        if not msa.startswith("MSA|AA|"):
            raise DemoFailed(f"the order was not accepted: {msa or ack!r}")
        if http.get(f"/api/v1/studies/{ACCESSION}").status_code != 200:
            raise DemoFailed("the order is not on the worklist")
    with progress.step(f"Uploading the dictation {audio.name} (synthetic speech, {entry['procedure']})"):
        uploaded = http.post(f"/api/v1/studies/{ACCESSION}/dictations",
                             files={"audio": (audio.name, audio.read_bytes())}, data={"section": "findings"})
        if uploaded.status_code != 202:
            raise DemoFailed(f"upload answered {uploaded.status_code}: {uploaded.text[:200]}")
        job_id = uploaded.json()["job_id"]
    with progress.step("Transcribing with faster-whisper (the bundled model, on this CPU)"):
        def transcribed() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] == "failed":
                raise DemoFailed(f"transcription failed: {job['error']}")
            return job if job["status"] == "done" else None

        job = wait(transcribed, "transcription", transcribe_timeout_s, demo.serve)
        progress.say(f"      heard: {job['result']['text']}")
    with progress.step("Drafting the report (rules refine the text and fill the sections)"):
        def drafted() -> dict[str, Any] | None:
            report_id = http.get(f"/api/v1/studies/{ACCESSION}").json().get("report_id")
            if report_id is None:
                return None
            report: dict[str, Any] = http.get(f"/api/v1/reports/{report_id}").json()
            return report if report.get("sections", {}).get("findings", "").strip() else None

        report = wait(drafted, "draft report", 120, demo.serve)
        for name, text in report["sections"].items():
            if text.strip():
                progress.say(f"      {name}: {text.strip()}")
    with progress.step("Signing the report final"):
        signed = http.post(f"/api/v1/reports/{report['report_id']}/sign",
                           json={"status": "final", "revision": report["revision"]})
        if signed.status_code != 200:
            raise DemoFailed(f"signing answered {signed.status_code}: {signed.text[:300]}")
    with progress.step("Delivering: ORU^R01 to the RIS, Structured Report to the PACS"):
        def delivered() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = http.get(f"/api/v1/reports/{report['report_id']}/deliveries").json()
            failed = [row for row in rows if row["status"] == "failed"]
            if failed:
                raise DemoFailed(f"delivery failed: {failed[0]['destination']}: {failed[0]['last_error']}")
            return rows if rows and all(row["status"] == "acked" for row in rows) else None

        rows = wait(delivered, "acknowledged deliveries", 60, demo.serve)
        progress.say("      " + ", ".join(f"{row['destination']}: {row['status']}" for row in rows))
    (oru,) = demo.ris.wait_for(1, 5)
    progress.say("\nThe RIS received this ORU^R01:")
    for segment in oru.strip("\r").split("\r"):
        progress.say(f"  {segment}")
    (sr,) = demo.pacs.wait_for(1, 5)
    progress.say(f"\nThe PACS received this SR (SOP Instance UID {sr.SOPInstanceUID}, "
                 f"completion {sr.CompletionFlag}, verification {sr.VerificationFlag}):")
    root = sr.ConceptNameCodeSequence[0]
    progress.say(f"  CONTAINER {root.CodeMeaning} ({root.CodeValue}, {root.CodingSchemeDesignator})")
    for line in content_tree(sr, 1):
        progress.say(f"  {line}")
    http.close()


def _keep(demo: Demo, progress: Progress) -> None:
    """Leave the service running until Ctrl-C, with a sign-in for the page."""
    progress.say(f"\nStill running (--keep). The page: {demo.base_url}/\n"
                 f"  sign in as {USERNAME} with the password {demo.password}\n"
                 f"  API token: {demo.token}\n"
                 f"  MLLP orders: 127.0.0.1:{demo.mllp_port}; temporary files in {demo.workdir}\n"
                 "Press Ctrl-C to stop (everything temporary is removed).")
    while demo.serve.poll() is None:  # until Ctrl-C or SIGTERM (KeyboardInterrupt)
        time.sleep(0.5)
    raise DemoFailed(f"radservice serve exited with {demo.serve.returncode}")
