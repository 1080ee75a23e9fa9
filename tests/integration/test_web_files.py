"""The page's npm packages served from node_modules: the allowed file with the page's headers;
anything else, or a package not installed, 404 (the page then goes without it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from radservice.api.app import create_app
from radservice.config import Settings

pytestmark = pytest.mark.integration


def client_with(factory: sessionmaker[Session], tmp_path: Path, vendor_dir: Path | None) -> TestClient:
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},  # type: ignore[arg-type]
                        storage={"data_dir": tmp_path / "data"}, web={"vendor_dir": vendor_dir})
    return TestClient(create_app(settings, engine))


def test_the_dictation_microphone_package_is_served_from_its_npm_folder(
        factory: sessionmaker[Session], tmp_path: Path) -> None:
    package = tmp_path / "modules" / "dictation_support" / "dist"
    package.mkdir(parents=True)
    (package / "index.js").write_text("self.DictationSupport = {};\n")
    (tmp_path / "modules" / "secret.js").write_text("not served")
    with client_with(factory, tmp_path, tmp_path / "modules") as client:
        served = client.get("/vendor/dictation_support.js")
        assert served.status_code == 200 and served.text == "self.DictationSupport = {};\n"
        assert served.headers["content-type"].startswith("text/javascript")
        assert "script-src 'self'" in served.headers["content-security-policy"]
        assert served.headers["x-content-type-options"] == "nosniff"
        for name in ("secret.js", "..%2Fsecret.js", "dictation_support%2Fdist%2Findex.js"):
            assert client.get(f"/vendor/{name}").status_code == 404, name
    with client_with(factory, tmp_path, tmp_path / "empty") as client:
        missing = client.get("/vendor/dictation_support.js")
        assert missing.status_code == 404 and "npm ci" in missing.json()["detail"]
