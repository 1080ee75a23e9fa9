"""Settings: file, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from radservice.config import ConfigError, LlmSettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "radservice.toml"
    path.write_text(text)
    return path


def test_documented_default_file_loads_and_matches_builtin_defaults() -> None:
    settings = load_settings(REPO / "config" / "radservice.toml")
    assert settings.server.port == 8000
    assert settings.hl7.listen_port == 2575
    assert settings.dicom.listen_port == 11112
    assert settings.database.url == "sqlite:///var/radservice.db"
    assert settings.hl7.accession_field == "OBR-18"
    assert (settings.whisper.model, settings.whisper.live_model) == ("base", "tiny.en")


def test_values_come_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 9123\nenvironment = "production"\n[hl7]\nallowed_hosts = ["10.0.0.5"]\n')
    settings = load_settings(path)
    assert settings.server.port == 9123
    assert settings.server.environment == "production"
    assert settings.hl7.allowed_hosts == ["10.0.0.5"]
    assert settings.source_file == path
    # keys the file leaves out keep their defaults
    assert settings.pacs.ae_title == "ORTHANC"


def test_environment_overrides_a_file_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///from-file.db"\n[server]\nport = 9000\n')
    monkeypatch.setenv("RADSERVICE_DATABASE__URL", "postgresql+psycopg://u@h/db")
    settings = load_settings(path)
    assert settings.database.url == "postgresql+psycopg://u@h/db"
    assert settings.server.port == 9000  # untouched keys still come from the file


def test_radservice_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 4\n")
    monkeypatch.setenv("RADSERVICE_CONFIG", str(path))
    assert load_settings().worker.concurrency == 4


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[database]\nurll = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "database.urll" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'databse'"):
        load_settings(write(tmp_path, "[databse]\nurl = 'x'\n"))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[server]\nport = 'eighty'\n"))
    assert "server.port" in str(info.value)


def test_wrong_type_from_environment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSERVICE_WORKER__CONCURRENCY", "many")
    with pytest.raises(ConfigError, match="worker.concurrency"):
        load_settings(write(tmp_path, ""))


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\nport = 1\n"))


def test_secrets_are_masked_in_the_logged_config(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[llm]\napi_key = "s3cret-key"\n'))
    assert settings.llm.api_key.get_secret_value() == "s3cret-key"
    assert "s3cret-key" not in repr(settings.redacted())


def test_the_outbox_lease_must_outlast_one_send() -> None:
    from pydantic import ValidationError

    from radservice.config import Settings

    with pytest.raises(ValidationError, match="lease_s"):
        Settings(outbox={"lease_s": 60}, ris={"host": "ris", "ack_timeout_s": 30})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="pacs 170 s"):
        Settings(pacs={"host": "pacs", "timeout_s": 30, "connect_timeout_s": 10},  # type: ignore[arg-type]
                 outbox={"lease_s": 120})
    # a peer that is not configured sends nothing: its timeouts do not count
    assert Settings(outbox={"lease_s": 100}, pacs={"timeout_s": 60}).outbox.lease_s == 100  # type: ignore[arg-type]
    assert Settings().outbox.lease_s > Settings(ris={"host": "r"}, pacs={"host": "p"}).pacs.longest_send_s  # type: ignore[arg-type]


def test_the_hold_key_is_one_of_the_named_keys_and_not_the_record_key(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, '[web]\nhold_key = "Space"\n')).web.hold_key == "Space"
    with pytest.raises(ConfigError, match="hold_key"):
        load_settings(write(tmp_path, '[web]\nhold_key = "a"\n'))
    with pytest.raises(ConfigError, match="one key cannot do both"):
        load_settings(write(tmp_path, '[web]\nhold_key = "F9"\nrecord_key = "F9"\n'))


def test_database_password_and_llm_key_come_from_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "db_password").write_text("s3cr:t/p@ss\n")
    (tmp_path / "llm_api_key").write_text("sk-test-key\n")
    monkeypatch.setenv("RADSERVICE_DATABASE__URL", "postgresql+psycopg://radservice@postgres:5432/radservice")
    monkeypatch.setenv("RADSERVICE_DATABASE__PASSWORD_FILE", str(tmp_path / "db_password"))
    monkeypatch.setenv("RADSERVICE_LLM__API_KEY_FILE", str(tmp_path / "llm_api_key"))
    settings = Settings()
    url = make_url(settings.database.url)
    assert (url.username, url.password, url.host, url.database) == ("radservice", "s3cr:t/p@ss", "postgres",
                                                                   "radservice")
    assert settings.llm.api_key.get_secret_value() == "sk-test-key"
    assert "s3cr" not in str(settings.redacted()) and "sk-test" not in str(settings.redacted())


def test_an_empty_key_file_means_no_key_but_an_empty_password_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    assert LlmSettings(api_key_file=tmp_path / "empty").api_key.get_secret_value() == ""
    config = tmp_path / "radservice.toml"
    config.write_text(f'[database]\npassword_file = "{tmp_path / "empty"}"\n')
    with pytest.raises(ConfigError, match=r"database.password_file .*empty"):
        load_settings(config)
    config.write_text(f'[database]\npassword_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError, match=r"database.password_file .*missing: cannot read"):
        load_settings(config)


def test_certificate_end_is_the_earliest_in_a_bundle(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    import trustme

    from radservice import tls

    ca = trustme.CA()
    now = datetime.now(UTC).replace(microsecond=0)
    later = ca.issue_cert("a.test", not_after=now + timedelta(days=400))
    soon = ca.issue_cert("b.test", not_after=now + timedelta(days=5))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(later.cert_chain_pems[0].bytes() + soon.cert_chain_pems[0].bytes())
    assert tls.not_after(bundle) == now + timedelta(days=5)
    assert 4 < tls.days_until(tls.not_after(bundle)) < 6
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(tls.TlsError, match="no PEM certificate"):
        tls.not_after(tmp_path / "junk.pem")
