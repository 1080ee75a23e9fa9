"""One Settings object: a TOML file, overridden key by key by RADSERVICE_<SECTION>__<KEY>."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

#: The documented default file, relative to the working directory.
DEFAULT_CONFIG_PATH = Path("config/radservice.toml")
CONFIG_ENV_VAR = "RADSERVICE_CONFIG"


class _Section(BaseModel):
    # An unknown key is a typo an admin must hear about, not a silent default.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    environment: Literal["local", "production"] = "local"
    #: Largest body of a request other than an audio upload (JSON edits, signatures), in KiB.
    max_body_kb: int = Field(1024, ge=16)
    #: Largest WebSocket message (live audio arrives in chunks of a few KiB), in KiB.
    ws_max_kb: int = Field(1024, ge=16)
    #: Open HTTP connections and WebSockets at most (more are answered 503 by uvicorn).
    max_connections: int = Field(200, ge=1)
    #: An idle keep-alive connection is closed after this many seconds.
    keep_alive_s: int = Field(5, ge=1)
    #: HTTPS for the API, the page and its WebSocket: a PEM certificate (chain) and its key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Strict-Transport-Security max-age sent with HTTPS (0: no header).
    hsts_max_age_s: int = Field(31_536_000, ge=0)
    #: Reverse proxies (addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are
    #: believed: the client's address (sign-in locks, audit) and https (the cookie's Secure flag).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        _pair(self.tls_cert, self.tls_key, "server")
        return self


def _read_secret(path: Path, key: str, *, may_be_empty: bool = False) -> str:
    """The first line of a secret file (a compose secret, a Kubernetes secret volume)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{key} {path}: cannot read: {exc.strerror}") from None
    value = text.splitlines()[0] if text else ""
    if not value and not may_be_empty:
        raise ValueError(f"{key} {path}: the file is empty")
    return value


def _pair(cert: Path | None, key: Path | None, section: str) -> None:
    if (cert is None) != (key is None):
        raise ValueError(f"{section}.tls_cert and {section}.tls_key go together: set both or neither")


def _listener_tls(cert: Path | None, key: Path | None, client_ca: Path | None, section: str) -> None:
    _pair(cert, key, section)
    if client_ca is not None and cert is None:
        raise ValueError(f"{section}.tls_client_ca needs {section}.tls_cert and {section}.tls_key (TLS on)")


def _client_tls(tls: bool, ca: Path | None, cert: Path | None, key: Path | None, section: str) -> None:
    _pair(cert, key, section)
    if not tls and (ca is not None or cert is not None):
        raise ValueError(f"{section}.tls_ca / tls_cert are set but {section}.tls is false: set {section}.tls = true "
                         "(nothing is sent in plain text by mistake)")


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/radservice.db"
    echo: bool = False
    #: A file holding the database password (its first line), put into ``url``: the password
    #: stays out of the config file and the environment (compose secrets, /run/secrets/...).
    password_file: Path | None = None

    @model_validator(mode="after")
    def _password_from_file(self) -> DatabaseSettings:
        if self.password_file is not None:
            from sqlalchemy.engine import make_url

            password = _read_secret(self.password_file, "database.password_file")
            self.url = make_url(self.url).set(password=password).render_as_string(hide_password=False)
        return self


class StorageSettings(_Section):
    data_dir: Path = Path("var")
    audio_retention_days: int = Field(365, ge=1)
    max_audio_mb: int = Field(50, ge=1)
    max_audio_seconds: int = Field(900, ge=1)


class Hl7Settings(_Section):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(2575, ge=0, le=65535)
    sending_application: str = "RADSERVICE"
    sending_facility: str = "RADIOLOGY"
    allowed_hosts: list[str] = Field(default_factory=list)
    accession_field: str = Field("OBR-18", pattern=r"^[A-Z][A-Z0-9]{2}-[0-9]+$")
    max_message_bytes: int = Field(1_048_576, ge=1024)
    idle_timeout_s: float = Field(900.0, gt=0)
    #: A frame must end this long after its start mark, or the connection is closed.
    frame_timeout_s: float = Field(60.0, gt=0)
    #: Connections served at once; more are closed at once with a log line.
    max_connections: int = Field(64, ge=1)
    #: MLLP over TLS: our certificate and key; with a client CA, a sender must present a
    #: certificate it signed (mutual TLS, IHE ATNA).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @model_validator(mode="after")
    def _tls(self) -> Hl7Settings:
        _listener_tls(self.tls_cert, self.tls_key, self.tls_client_ca, "hl7")
        return self


class RisSettings(_Section):
    host: str = ""
    port: int = Field(2576, ge=0, le=65535)
    receiving_application: str = "RIS"
    receiving_facility: str = "HOSPITAL"
    ack_timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    #: In original acknowledgment mode an AR may also mean "system down": retry it (a few times)
    #: instead of failing the delivery at once. Off for a RIS whose AR always means "never".
    retry_on_ar: bool = True
    #: Attempts in all for a delivery the RIS keeps answering AR (then it fails for a person).
    ar_attempts: int = Field(5, ge=1, le=100)
    #: MLLP over TLS to the RIS: its certificate is checked against ``tls_ca`` (else the system's
    #: CAs) and ``host``; ``tls_cert``/``tls_key`` are ours, for a RIS that asks (mutual TLS).
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls(self) -> RisSettings:
        _client_tls(self.tls, self.tls_ca, self.tls_cert, self.tls_key, "ris")
        return self

    @property
    def longest_send_s(self) -> float:
        """The longest one ORU exchange can take: connect and wait for the ACK, twice (a kept
        connection found closed is replaced once)."""
        return 2 * (self.connect_timeout_s + self.ack_timeout_s)


class DicomSettings(_Section):
    ae_title: str = Field("RADSERVICE", min_length=1, max_length=16)
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(11112, ge=0, le=65535)
    #: DICOM TLS (BCP 195 profile) on our listener; with a client CA, callers need its certificate.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @model_validator(mode="after")
    def _tls(self) -> DicomSettings:
        _listener_tls(self.tls_cert, self.tls_key, self.tls_client_ca, "dicom")
        return self


class PacsSettings(_Section):
    host: str = ""
    port: int = Field(4242, ge=0, le=65535)
    ae_title: str = Field("ORTHANC", min_length=1, max_length=16)
    find_on_intake: bool = False
    #: The issuer (assigning authority) the PACS names for the RIS's patient IDs, when it uses a
    #: name of its own: a C-FIND match with another issuer is not taken as our patient's study.
    patient_issuer: str = ""
    connect_timeout_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)
    #: DICOM TLS to the PACS (C-STORE, C-FIND, C-ECHO): its certificate is checked against
    #: ``tls_ca`` (else the system's CAs) and ``host``; ``tls_cert``/``tls_key`` are ours.
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls(self) -> PacsSettings:
        _client_tls(self.tls, self.tls_ca, self.tls_cert, self.tls_key, "pacs")
        return self

    @property
    def longest_send_s(self) -> float:
        """The longest one SR delivery can take: connect, association, C-FIND and C-STORE, then a
        new association and C-STORE once more when the kept association was found dropped."""
        return 2 * self.connect_timeout_s + 5 * self.timeout_s


class WhisperSettings(_Section):
    model: str = "base"
    live_model: str = "tiny.en"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    beam_size: int = Field(5, ge=1)
    hotwords: str = ""
    vocabulary_dir: Path = Path("config/vocabulary")
    cpu_threads: int = Field(0, ge=0)


class ReportSettings(_Section):
    templates_dir: Path = Path("config/templates")
    macros_file: Path = Path("config/macros.toml")
    lexicon_file: Path = Path("config/lexicon.txt")


class LlmSettings(_Section):
    enabled: bool = True
    api: Literal["ollama", "openai"] = "ollama"
    url: str = "http://127.0.0.1:11434"
    model: str = "llama3.2:3b"
    timeout_s: float = Field(30.0, gt=0)
    api_key: SecretStr = SecretStr("")
    #: A file holding the API key (its first line; empty: no key), instead of ``api_key``.
    api_key_file: Path | None = None
    prompts_dir: Path = Path("config/prompts")

    @model_validator(mode="after")
    def _key_from_file(self) -> LlmSettings:
        if self.api_key_file is not None:
            self.api_key = SecretStr(_read_secret(self.api_key_file, "llm.api_key_file", may_be_empty=True))
        return self


class WorkerSettings(_Section):
    concurrency: int = Field(1, ge=1)
    poll_interval_s: float = Field(1.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    lease_s: float = Field(120.0, ge=1)
    serve_workers: int = Field(1, ge=0)


class OutboxSettings(_Section):
    poll_interval_s: float = Field(1.0, gt=0)
    retry_initial_s: float = Field(5.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    give_up_after_h: float = Field(72.0, gt=0)
    lease_s: float = Field(300.0, ge=1)


class AuthSettings(_Section):
    token_ttl_hours: int = Field(720, ge=0)
    #: The page's cookie session ends after this many minutes without a request (a shared
    #: reading-room workstation), and after ``session_max_hours`` in any case.
    session_idle_minutes: int = Field(30, ge=1, le=24 * 60)
    session_max_hours: int = Field(12, ge=1, le=24 * 7)
    #: ``lock_after_failures`` failed sign-ins within ``lock_window_minutes`` (for one username,
    #: or from one address) lock sign-in for it for ``lock_minutes``.
    lock_after_failures: int = Field(5, ge=1, le=100)
    #: Failures from one address that lock it, when that should differ from ``lock_after_failures``
    #: (many people behind one NAT address); a success removes that user's failures from both counts.
    address_lock_after_failures: int | None = Field(None, ge=1, le=1000)
    lock_window_minutes: int = Field(5, ge=1, le=24 * 60)
    lock_minutes: int = Field(15, ge=1, le=24 * 60)
    #: Roles that may resume another user's interrupted live dictation (the author always may).
    resume_others_roles: list[Literal["radiologist", "resident"]] = Field(default_factory=list)


class WebSettings(_Section):
    """The radiologists' page."""

    #: A live dictation whose connection has been gone this long stops reconnecting; the page
    #: keeps the recording and offers to upload it as a file.
    max_offline_s: int = Field(120, ge=10, le=3600)
    #: The key that starts and stops recording (a KeyboardEvent key name: F1-F12, Pause, ...).
    record_key: str = Field("F4", pattern=r"^(F([1-9]|1[0-2])|Pause|ScrollLock|Insert)$")
    #: A key held to talk (recording while it is down), or "" for none. "Space": a tap still
    #: types a space; held for 0.3 s it records until released.
    hold_key: str = Field("", pattern=r"^(|Space|F([1-9]|1[0-2])|Pause|ScrollLock|Insert)$")
    #: Where the page's npm packages are (``npm ci``); empty: ``node_modules`` beside the
    #: radservice package. Without them the page works, without dictation microphone buttons.
    vendor_dir: Path | None = None

    @model_validator(mode="after")
    def _keys_differ(self) -> WebSettings:
        if self.hold_key and self.hold_key == self.record_key:
            raise ValueError(f"web.hold_key and web.record_key are both {self.record_key!r}: one key cannot do both")
        return self


class Settings(BaseSettings):
    """Every setting of radservice, grouped by the sections of ``config/radservice.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="RADSERVICE_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    hl7: Hl7Settings = Field(default_factory=Hl7Settings)
    ris: RisSettings = Field(default_factory=RisSettings)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    pacs: PacsSettings = Field(default_factory=PacsSettings)
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    #: The file these settings were read from (None: built-in defaults only).
    _source_file: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _lease_covers_one_send(self) -> Settings:
        # A sender whose lease runs out mid-send could see another sender take the row and send a
        # later version first; the lease must outlast the longest single exchange.
        # Only the destinations that are configured send anything.
        sends = {name: peer.longest_send_s for name, peer in (("ris", self.ris), ("pacs", self.pacs)) if peer.host}
        if sends and self.outbox.lease_s <= max(sends.values()):
            worst = ", ".join(f"{name} {seconds:g} s" for name, seconds in sends.items())
            raise ValueError(f"outbox.lease_s ({self.outbox.lease_s:g} s) must be longer than one delivery can take "
                             f"({worst}: ris 2 x (connect + ack timeouts), pacs 2 x connect + 5 x timeout)")
        return self

    @property
    def source_file(self) -> Path | None:
        """The file these settings were read from, or None for built-in defaults."""
        return self._source_file

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then the file's values (passed as init kwargs): env wins.
        return (env_settings, init_settings)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with secrets masked, for the start-up log."""
        from sqlalchemy.engine import make_url

        dumped: dict[str, Any] = self.model_dump(mode="json")
        dumped["database"]["url"] = make_url(self.database.url).render_as_string(hide_password=True)
        return dumped


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def resolve_config_path(explicit: str | Path | None) -> tuple[Path | None, bool]:
    """Which file to read: ``--config``, else ``RADSERVICE_CONFIG``, else the default.

    Returns
    -------
    (path, required)
        ``required`` is False only for the default path, which may be absent.
    """
    if explicit:
        return Path(explicit), True
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env), True
    return DEFAULT_CONFIG_PATH, False


def _format_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(top level)"
        env = "RADSERVICE_" + "__".join(loc).upper()
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: key '{key}' (or {env}): {err['msg']}")
    return "\n".join(lines)


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Build the Settings once, at start.

    Raises
    ------
    ConfigError
        The file is unreadable or not TOML, a key is unknown, or a value has the wrong type.
    """
    path, required = resolve_config_path(config_file)
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None and (required or path.exists()):
        source = str(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    else:
        path = None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None
    settings._source_file = path
    return settings
