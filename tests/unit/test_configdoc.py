"""docs/configuration.md is generated from Settings and config/radservice.toml; it must be current
and every key must have its meaning written beside it in the documented default file."""

from __future__ import annotations

from pathlib import Path

from radservice.configdoc import meanings, render, undocumented

REPO = Path(__file__).resolve().parents[2]
TOML = (REPO / "config" / "radservice.toml").read_text()


def test_configuration_doc_is_current() -> None:
    current = (REPO / "docs" / "configuration.md").read_text()
    assert current == render(TOML), ("docs/configuration.md is stale: "
                                     ".venv/bin/python -m radservice.configdoc > docs/configuration.md")


def test_every_setting_has_its_meaning_in_the_documented_default_file() -> None:
    assert undocumented(TOML) == []


def test_a_key_without_a_comment_is_found_missing() -> None:
    lines = [line for line in TOML.splitlines() if not line.startswith("ack_timeout_s = ")]
    assert undocumented("\n".join(lines)) == ["ris.ack_timeout_s"]


def test_meanings_read_commented_out_keys_and_continued_comments() -> None:
    found = meanings('[outbox]\nlease_s = 300.0  # taken again\n                 # after its sender stopped\n'
                     '[server]\n# tls_cert = "/x.pem"  # HTTPS certificate\n')
    assert found == {("outbox", "lease_s"): "taken again after its sender stopped",
                     ("server", "tls_cert"): "HTTPS certificate"}
    assert "| `tls_cert` | path (optional) | `(none)` | `RADSERVICE_SERVER__TLS_CERT` |" in render(TOML)
