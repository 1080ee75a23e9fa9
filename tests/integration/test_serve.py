"""`radservice serve` as an admin runs it: a real process, real sockets, SIGTERM."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, radservice, serve

pytestmark = pytest.mark.integration


def write_config(tmp_path: Path, *, port: int, extra: str = "") -> Path:
    path = tmp_path / "radservice.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/rs.db"\n'
        f'[storage]\ndata_dir = "{tmp_path}/data"\n{extra}'
    )
    return path


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
