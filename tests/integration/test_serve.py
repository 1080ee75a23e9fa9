"""`radservice serve` as an admin runs it: a real process, real sockets, SIGTERM."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, radservice, serve, write_config

pytestmark = pytest.mark.integration


def test_serve_answers_healthz_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with serve(write_config(tmp_path, port=port), tmp_path) as proc:
        response = httpx.get(proc.base_url + "/healthz", timeout=5)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert httpx.get(proc.base_url + "/openapi.json", timeout=5).status_code == 200
        assert proc.stop() == 0
        log = proc.log()
    assert f"HTTP API listening on http://127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_production_mode_turns_docs_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, port=free_port())
    config.write_text(config.read_text().replace("[server]\n", '[server]\nenvironment = "production"\n'))
    with serve(config, tmp_path) as proc:
        assert httpx.get(proc.base_url + "/docs", timeout=5).status_code == 404
        assert httpx.get(proc.base_url + "/openapi.json", timeout=5).status_code == 404
        assert httpx.get(proc.base_url + "/healthz", timeout=5).status_code == 200


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = radservice("serve", "--config", str(write_config(tmp_path, port=port)), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_add_token_works_against_a_running_server(tmp_path: Path, db_url: str) -> None:
    """The admin's path: `user add` prints a token; `serve` (which migrates) accepts it."""
    config = write_config(tmp_path, port=free_port(), db_url=db_url)
    added = radservice("user", "add", "dr.grey", "--role", "radiologist", "--display-name", "Dr Grey",
                       "--config", str(config), cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("rs_")
    admin = radservice("user", "add", "ops", "--role", "admin", "--config", str(config), cwd=tmp_path)
    admin_token = admin.stdout.strip().splitlines()[-1]

    with serve(config, tmp_path) as proc:
        me = httpx.get(proc.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200
        assert me.json() == {"username": "dr.grey", "display_name": "Dr Grey", "role": "radiologist",
                             "page": {"max_offline_s": 120, "record_key": "F4", "hold_key": ""}}
        bad = httpx.get(proc.base_url + "/api/v1/me", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 401
        forbidden = httpx.get(proc.base_url + "/api/v1/admin/users",
                              headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert forbidden.status_code == 403
        listed = httpx.get(proc.base_url + "/api/v1/admin/users",
                           headers={"Authorization": f"Bearer {admin_token}"}, timeout=5)
        assert [u["username"] for u in listed.json()] == ["dr.grey", "ops"]
        ready = httpx.get(proc.base_url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == "ok"
        metrics = httpx.get(proc.base_url + "/metrics", timeout=5)
        assert "radservice_http_requests_total" in metrics.text

        revoked = radservice("user", "revoke", "dr.grey", "--config", str(config), cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        after = httpx.get(proc.base_url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert after.status_code == 401
        assert proc.stop() == 0
