"""Behind a reverse proxy: X-Forwarded-For and X-Forwarded-Proto are believed from the proxies in
server.trusted_proxies only (the client's address for sign-in locks and the audit; https for the
cookie's Secure flag), never from anyone else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.browser import PASSWORD
from tests.support import free_port, radservice, serve, write_config

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("trusted", "believed"), [('["127.0.0.1"]', True), ("[]", False)])
def test_forwarded_headers_only_from_trusted_proxies(tmp_path: Path, trusted: str, believed: bool) -> None:
    config = write_config(tmp_path, port=free_port())
    config.write_text(config.read_text().replace("[server]\n", f"[server]\ntrusted_proxies = {trusted}\n"))
    added = radservice("user", "add", "dr.proxy", "--role", "radiologist", "--password-stdin", "--config",
                       str(config), cwd=tmp_path, input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    with serve(config, tmp_path) as running:
        forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                     "Origin": "https://" + running.base_url.split("://", 1)[1]}
        wrong = httpx.post(running.base_url + "/api/v1/session", json={"username": "dr.proxy", "password": "nope"},
                           headers=forwarded, timeout=10)
        assert wrong.status_code == 401
        if not believed:
            forwarded["Origin"] = running.base_url
        right = httpx.post(running.base_url + "/api/v1/session", json={"username": "dr.proxy", "password": PASSWORD},
                           headers=forwarded, timeout=10)
        assert right.status_code == 200, right.text
        assert ("secure" in right.headers["set-cookie"].lower()) is believed
    engine = create_engine(f"sqlite:///{tmp_path}/rs.db")
    with engine.connect() as conn:
        clients = set(conn.execute(text("SELECT client FROM audit_events WHERE action LIKE 'auth.sign_in%'")).scalars())
    engine.dispose()
    assert clients == ({"203.0.113.7"} if believed else {"127.0.0.1"}), clients
