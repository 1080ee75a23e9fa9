"""The topology docker-compose.yml describes, run outside containers (Docker does not run here):
PostgreSQL, one `radservice serve` with no workers of its own, and two `radservice worker`
processes, each in a folder of its own (as the image's /app) with its own copy of the mounted
config file, sharing only the database and the audio folder. The commands and the environment
come from docker-compose.yml; only what names a container (hosts, paths, secrets) is mapped to
this machine, and the test says which."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.compose_file import load, mount_source, service_env
from tests.conftest import PG_URL
from tests.hl7_peer import RisClient, order, read_ack
from tests.ollama_standin import ollama_standin
from tests.support import free_port, fresh_pg_database, sign_report, wait_for, wait_job, wait_until_up

REPO = Path(__file__).resolve().parents[2]
AUDIO = REPO / "fixtures" / "audio" / "ct_head_noncontrast.wav"
pytestmark = [pytest.mark.postgres, pytest.mark.integration]

#: Variables of the compose file whose values name something inside the containers, replaced here.
MAPPED = {"RADSERVICE_CONFIG", "RADSERVICE_DATABASE__URL", "RADSERVICE_DATABASE__PASSWORD_FILE",
          "RADSERVICE_STORAGE__DATA_DIR", "RADSERVICE_LLM__URL", "RADSERVICE_LLM__API_KEY_FILE",
          # 0.0.0.0 in a container; a test listens on loopback only
          "RADSERVICE_SERVER__HOST", "RADSERVICE_HL7__LISTEN_HOST", "RADSERVICE_DICOM__LISTEN_HOST"}


def _container(service: str, compose: dict, home: Path, mapped: dict[str, str],  # type: ignore[type-arg]
               added: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one container of ``service``, as a process in ``home``."""
    env = service_env(compose, service)
    assert set(mapped) <= set(env) | {"RADSERVICE_SERVER__HOST", "RADSERVICE_HL7__LISTEN_HOST",
                                      "RADSERVICE_DICOM__LISTEN_HOST"}, set(mapped) - set(env)
    shutil.copytree(REPO / "config", home / "config")  # the image's /app/config
    config_source = mount_source(compose, service, "/etc/radservice/radservice.toml")
    shutil.copy(REPO / config_source, home / "radservice.toml")  # the read-only mount
    environment = {**env, **{key: value for key, value in mapped.items() if key in env},
                   "RADSERVICE_CONFIG": str(home / "radservice.toml"), **added}
    untouched = {key for key in env if key not in MAPPED}
    assert all(environment[key] == env[key] for key in untouched)
    command = [sys.executable, "-m", "radservice.cli", *compose["services"][service]["command"]]
    return command, environment


@contextmanager
def _process(command: list[str], env: dict[str, str], home: Path, name: str) -> Iterator[subprocess.Popen[str]]:
    log = (home / f"{name}.log").open("w")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RADSERVICE_")}
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=home,
                            env={**clean, **env})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
        log.close()
        assert code == 0, f"{name} exited with {code}:\n" + (home / f"{name}.log").read_text()[-3000:]


def test_an_order_a_dictation_a_draft_and_a_signature_through_the_compose_topology(tmp_path: Path) -> None:
    compose = load()
    audio = tmp_path / "audio-volume"  # the `audio` volume both services mount
    audio.mkdir()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db_password").write_text("unused-under-trust-auth\n")  # the test server trusts loopback
    (secrets / "llm_api_key").write_text("")
    http_port, mllp_port, dicom_port = free_port(), free_port(), free_port()
    with ExitStack() as stack:
        url = stack.enter_context(fresh_pg_database(PG_URL))
        llm = stack.enter_context(ollama_standin())
        mapped = {"RADSERVICE_DATABASE__URL": url,
                  "RADSERVICE_DATABASE__PASSWORD_FILE": str(secrets / "db_password"),
                  "RADSERVICE_STORAGE__DATA_DIR": str(audio),
                  "RADSERVICE_LLM__URL": llm.url,
                  "RADSERVICE_LLM__API_KEY_FILE": str(secrets / "llm_api_key"),
                  "RADSERVICE_SERVER__HOST": "127.0.0.1", "RADSERVICE_HL7__LISTEN_HOST": "127.0.0.1",
                  "RADSERVICE_DICOM__LISTEN_HOST": "127.0.0.1"}
        assert set(mapped) | {"RADSERVICE_CONFIG"} == MAPPED
        # compose publishes fixed container ports; here each gets a free one. tiny.en instead of
        # the default base keeps the test short (the model is not what this test is about).
        api_added = {"RADSERVICE_SERVER__PORT": str(http_port), "RADSERVICE_HL7__LISTEN_PORT": str(mllp_port),
                     "RADSERVICE_DICOM__LISTEN_PORT": str(dicom_port)}
        worker_added = {"RADSERVICE_WHISPER__MODEL": "tiny.en", "RADSERVICE_WORKER__POLL_INTERVAL_S": "0.2"}
        (tmp_path / "api").mkdir()
        api_command, api_env = _container("api", compose, tmp_path / "api", mapped, api_added)
        assert api_env["RADSERVICE_WORKER__SERVE_WORKERS"] == "0"  # from the compose file itself
        api = stack.enter_context(_process(api_command, api_env, tmp_path / "api", "api"))
        base = f"http://127.0.0.1:{http_port}"
        wait_until_up(api, base + "/readyz", what="api", wait_s=90,
                      log=lambda: (tmp_path / "api" / "api.log").read_text())
        # the image's HEALTHCHECK, run with the container's environment
        health = subprocess.run([sys.executable, "-m", "radservice.healthcheck"], capture_output=True, text=True,
                                cwd=tmp_path / "api", env={**os.environ, **api_env}, timeout=30)
        assert health.returncode == 0, health.stderr

        added = subprocess.run([*api_command[:-1], "user", "add", "dr.compose", "--role", "radiologist"],
                               capture_output=True, text=True, cwd=tmp_path / "api",
                               env={**os.environ, **api_env}, timeout=60)
        assert added.returncode == 0, added.stderr
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {added.stdout.split()[-1]}"},
                            timeout=30)
        with RisClient(mllp_port) as ris:
            assert read_ack(ris.send(order("CMP-1", "CMP-ACC", modality="CT", procedure="CT HEAD"))).code == "AA"
        uploaded = http.post("/api/v1/studies/CMP-ACC/dictations",
                             files={"audio": (AUDIO.name, AUDIO.read_bytes())}, data={"section": "findings"})
        assert uploaded.status_code == 202, uploaded.text
        job_id = uploaded.json()["job_id"]
        time.sleep(2)  # serve has no worker of its own: nothing takes the job until a worker runs
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"

        homes = []
        for n in (1, 2):
            home = tmp_path / f"worker-{n}"
            home.mkdir()
            command, env = _container("worker", compose, home, mapped, worker_added)
            stack.enter_context(_process(command, env, home, "worker"))
            homes.append(home)
        job = wait_job(http, job_id, timeout=180)
        assert job["status"] == "done", job
        logs = [(home / "worker.log").read_text() for home in homes]
        assert all(" ready in " in log for log in logs), logs
        assert sum(f"job {job_id} (transcribe) done" in log for log in logs) == 1, logs

        def drafted() -> bool:  # the draft is a job of its own (draft_report), after the transcription
            report_id = http.get("/api/v1/studies/CMP-ACC").json()["report_id"]
            return report_id is not None and len(
                http.get(f"/api/v1/reports/{report_id}").json()["sections"].get("findings", "").split()) >= 10

        wait_for(drafted, "the draft report", timeout=60)
        study = http.get("/api/v1/studies/CMP-ACC").json()
        # the workers refined with the model the compose file pulls, at the address it gives
        assert any(request.get("model") == compose_model(compose) for request in llm.requests), llm.requests
        signed = sign_report(http, study["report_id"], "final")
        assert signed.status_code == 200, signed.text
        assert signed.json()["status"] == "final"
        assert list((audio / "audio").iterdir()), "the audio was not written to the shared folder"
        http.close()
    assert "Traceback" not in (tmp_path / "api" / "api.log").read_text()


def compose_model(compose: dict) -> str:  # type: ignore[type-arg]
    return service_env(compose, "worker")["RADSERVICE_LLM__MODEL"]
