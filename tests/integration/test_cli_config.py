"""A bad configuration stops every command with exit 2 and names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import radservice

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("text", "key"),
    [("[server]\nport = 'x'\n", "server.port"), ("[hl7]\nbogus = 1\n", "hl7.bogus")],
)
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "radservice.toml"
    path.write_text(text)
    for command in (["serve"], ["check"]):
        proc = radservice(*command, "--config", str(path), cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert key in proc.stderr
        assert str(path) in proc.stderr
        assert "Traceback" not in proc.stderr
