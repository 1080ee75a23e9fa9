"""`radservice ...`: the command line admins and scripts use (contract in DESIGN.md)."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from radservice.audit import service as audit
from radservice.config import ConfigError, Settings, load_settings
from radservice.db.session import make_sessionmaker, session_scope
from radservice.logs import configure_logging
from radservice.tls import TlsError
from radservice.users import service as users
from radservice.users import signin
from radservice.users.names import PersonName

log = logging.getLogger("radservice")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="radservice: radiology dictation and reporting.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
user_app = typer.Typer(no_args_is_help=True, help="API users and their tokens.")
jobs_app = typer.Typer(no_args_is_help=True, help="Periodic duties and the job queue.")
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(jobs_app, name="jobs")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: $RADSERVICE_CONFIG, then config/radservice.toml)."),
]
CLI_ACTOR = "cli"


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"radservice: {message}", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    """Load settings or exit 2 with the file and key named."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        _fail(f"configuration error\n{exc}", 2)


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database.url).render_as_string(hide_password=True)


def _migrated_engine(settings: Settings) -> Engine:
    """An engine on a database brought to the newest schema, or exit 1 saying why."""
    from radservice.db import migrate
    from radservice.db.session import make_engine

    engine = make_engine(settings.database.url, echo=settings.database.echo)
    try:
        migrate.upgrade(engine)
    except SQLAlchemyError as exc:
        _fail(f"database {_safe_url(settings)}: {type(exc).__name__}: {exc.orig if hasattr(exc, 'orig') else exc}", 1)
    return engine


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the API and listeners in one process until SIGTERM (migrates the database first)."""
    settings = _settings(config)
    configure_logging()
    log.info("configuration from %s", settings.source_file or "built-in defaults and environment")
    effective = settings.redacted()
    effective["database"]["url"] = _safe_url(settings)
    log.info("effective configuration: %s", json.dumps(effective, sort_keys=True))
    from radservice import serve as serve_mod

    engine = _migrated_engine(settings)
    try:
        code = asyncio.run(serve_mod.run(settings, engine))
    except serve_mod.ListenError as exc:
        _fail(str(exc), 1)
    except TlsError as exc:
        _fail(f"configuration error\n{exc}", 2)
    finally:
        engine.dispose()
    raise typer.Exit(code)


@app.command()
def demo(keep: Annotated[bool, typer.Option("--keep", help="leave the service running afterwards, with a sign-in "
                                                          "for the page (Ctrl-C stops it)")] = False) -> None:
    """The whole loop on this machine: loopback RIS and PACS, an order, a bundled dictation, a
    signature, and what each side received (temporary database; nothing else is touched)."""
    from radservice import demo as demo_mod

    raise typer.Exit(demo_mod.run(keep=keep))


@app.command()
def worker(
    config: ConfigOption = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1,
                                                    help="worker processes (default: worker.concurrency)")] = None,
    handlers: Annotated[str, typer.Option("--handlers", help="job handlers as module:function(settings)",
                                          hidden=True)] = "",
) -> None:
    """Run worker processes that take jobs from the database until SIGTERM."""
    from radservice.jobs import processes

    settings = _settings(config)
    configure_logging()
    engine = _migrated_engine(settings)
    engine.dispose()
    try:
        code = processes.run_pool(settings, concurrency or settings.worker.concurrency,
                                  handlers or processes.DEFAULT_HANDLERS)
    except ValueError as exc:
        _fail(str(exc), 2)
    raise typer.Exit(code)


@jobs_app.command("list")
def jobs_list(
    config: ConfigOption = None,
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
) -> None:
    """The periodic duties, then the newest jobs in the queue."""
    from radservice.handlers import failure_markers
    from radservice.jobs import scheduled
    from radservice.jobs import service as jobs

    settings = _settings(config)
    engine = _migrated_engine(settings)
    sessions = make_sessionmaker(engine)
    typer.echo("duties:")
    for duty in scheduled.duties(settings, sessions, failure_markers()).values():
        typer.echo(f"  {duty.name:16} every {duty.every}  {duty.description}")
    typer.echo("jobs:")
    with sessions() as session:
        for job in jobs.list_jobs(session=session, status=status, limit=limit):
            typer.echo(f"  {job.id:6d} {job.kind:12} {job.status:8} attempts {job.attempts}/{job.max_attempts}"
                       f"  {job.created_at:%Y-%m-%d %H:%M:%S}  {job.error[:80]}")
    engine.dispose()


@jobs_app.command("run")
def jobs_run(name: str, config: ConfigOption = None) -> None:
    """Run one periodic duty now and print what it did."""
    from radservice.handlers import failure_markers
    from radservice.jobs import scheduled

    settings = _settings(config)
    engine = _migrated_engine(settings)
    try:
        known = scheduled.duties(settings, make_sessionmaker(engine), failure_markers())
        if name not in known:
            _fail(f"no duty named {name!r}; one of: {', '.join(sorted(known))}", 2)
        typer.echo(f"{name}: {known[name].run()}")
    finally:
        engine.dispose()


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate the configuration and reach every configured peer; exit 1 on any failure."""
    from radservice.db import migrate
    from radservice.db.session import make_engine, ping

    settings = _settings(config)
    typer.echo(f"config: ok ({settings.source_file or 'built-in defaults and environment'})")
    failures = 0
    engine = make_engine(settings.database.url)
    try:
        ping(engine)
        current, head = migrate.current_revision(engine), migrate.head_revision()
        state = (
            "up to date" if current == head
            else f"at {current or 'empty'}, {head} pending (serve or `db upgrade` applies it)"
        )
        typer.echo(f"database: ok ({_safe_url(settings)}, schema {state})")
    except SQLAlchemyError as exc:
        failures += 1
        typer.echo(f"database: FAILED ({_safe_url(settings)}: {type(exc).__name__})")
    finally:
        engine.dispose()
    failures += _check_tls(settings)
    failures += _check_llm(settings)
    failures += _check_ris(settings)
    failures += _check_pacs(settings)
    if failures:
        raise typer.Exit(1)


def _check_tls(settings: Settings) -> int:
    """Every certificate the settings name: usable, and how long it lasts (a warning within
    30 days of its end, a failure after it); 1 per failure."""
    from radservice import tls

    failures = 0
    try:
        tls.contexts(settings)
    except tls.TlsError as exc:
        typer.echo(f"tls: FAILED ({exc})")
        failures += 1
    for key, path in tls.certificates(settings).items():
        try:
            ends = tls.not_after(path)
        except tls.TlsError as exc:
            typer.echo(f"tls: FAILED ({key}: {exc})")
            failures += 1
            continue
        when = f"{ends:%Y-%m-%d %H:%M} UTC"
        days = tls.days_until(ends)
        if days < 0:
            typer.echo(f"tls: FAILED ({key} {path} ended on {when})")
            failures += 1
        elif days < tls.EXPIRY_WARNING_DAYS:
            typer.echo(f"tls: WARNING ({key} {path} ends on {when}, in {int(days)} days: renew it)")
        else:
            typer.echo(f"tls: ok ({key} {path} valid until {when})")
    return failures


def _check_llm(settings: Settings) -> int:
    """Reach the LLM server and look for the model; 1 on failure, 0 when fine or switched off."""
    import httpx

    from integrations.ollama.client import OllamaModel, OpenAiModel, make_model

    model = make_model(settings.llm)
    if model is None:
        typer.echo("llm: off (llm.enabled = false; refinement is rules-only)")
        return 0
    try:
        if isinstance(model, OllamaModel):
            version, present = model.version(), model.has_model()
            where = f"Ollama {version} at {settings.llm.url}"
        else:
            assert isinstance(model, OpenAiModel)
            where, present = f"OpenAI-compatible server at {settings.llm.url}", model.has_model()
    except (httpx.HTTPError, ValueError, ConnectionError) as exc:
        typer.echo(f"llm: FAILED ({settings.llm.url} unreachable: {type(exc).__name__}; refinement runs rules-only)")
        return 1
    if not present:
        typer.echo(f"llm: FAILED ({where} has no model {settings.llm.model!r}; pull it or change llm.model)")
        return 1
    typer.echo(f"llm: ok ({where}, model {settings.llm.model} present)")
    return 0


def _check_ris(settings: Settings) -> int:
    """Open (and close) an MLLP connection to the RIS; 1 on failure, 0 when fine or not configured."""
    import socket

    ris = settings.ris
    if not ris.host:
        typer.echo("ris: not configured (ris.host is empty: signed reports wait in the outbox until it is set)")
        return 0
    from radservice import tls

    over = ""
    try:
        context = tls.ris_context(ris)
        if context is None:
            socket.create_connection((ris.host, ris.port), timeout=ris.connect_timeout_s).close()
        else:
            found = tls.probe(ris.host, ris.port, context, peer="RIS", hint="see ris.tls_cert",
                              timeout_s=ris.connect_timeout_s)
            if found.problem:
                typer.echo(f"ris: FAILED (TLS to {ris.host}:{ris.port}: {found.problem})")
                return 1
            over = f" over {found.version}"
    except tls.TlsError as exc:
        typer.echo(f"ris: FAILED ({exc})")
        return 1
    except OSError as exc:
        typer.echo(f"ris: FAILED (no MLLP connection to {ris.host}:{ris.port}: {tls.failure_reason(exc)})")
        return 1
    typer.echo(f"ris: ok (MLLP connection to {ris.host}:{ris.port}{over})")
    return 0


def _check_pacs(settings: Settings) -> int:
    """C-ECHO to the PACS; 1 on failure, 0 when fine or not configured."""
    from integrations.dicom.scu import PacsClient, PacsRefusesService, PacsUnavailable

    pacs = settings.pacs
    where = f"{pacs.ae_title}@{pacs.host}:{pacs.port}"
    if not pacs.host:
        typer.echo("pacs: not configured (pacs.host is empty: signed reports' SRs wait in the outbox until it is set)")
        return 0
    from radservice import tls

    try:
        client = PacsClient(pacs, settings.dicom, ssl_context=tls.pacs_context(pacs))
    except tls.TlsError as exc:
        typer.echo(f"pacs: FAILED ({exc})")
        return 1
    try:
        status = client.echo()
    except (PacsUnavailable, PacsRefusesService) as exc:
        typer.echo(f"pacs: FAILED (C-ECHO to {where}: {exc})")
        return 1
    finally:
        client.close()
    if status != 0:
        typer.echo(f"pacs: FAILED (C-ECHO to {where} answered status 0x{status:04X})")
        return 1
    typer.echo(f"pacs: ok (C-ECHO to {where} as {settings.dicom.ae_title}{' over TLS' if pacs.tls else ''})")
    return 0


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply pending Alembic migrations."""
    from radservice.db import migrate

    settings = _settings(config)
    configure_logging()
    engine = _migrated_engine(settings)
    typer.echo(f"database {_safe_url(settings)} at revision {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("backup")
def db_backup(
    target: Annotated[Path, typer.Argument(help="the backup file to write (must not exist)")],
    config: ConfigOption = None,
) -> None:
    """SQLite: an online, consistent copy of the database while the service keeps running
    (SQLite's backup API), checked with PRAGMA integrity_check. PostgreSQL: use pg_dump."""
    import os
    import sqlite3

    settings = _settings(config)
    url = make_url(settings.database.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        _fail("database.url is not a SQLite file: back PostgreSQL up with its own tools "
              "(pg_dump --format=custom; docs/operations.md)", 2)
    source = Path(url.database)
    if not source.is_file():
        _fail(f"no database at {source}", 1)
    if target.exists():
        _fail(f"{target} exists; a backup never overwrites a file", 2)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    revision = None
    try:
        # the copy holds every patient's data: readable by its owner only, never a file that was there
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        src = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
            revision = dst.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            dst.close()
            src.close()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {verdict}")
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        os.link(partial, target)  # fails, rather than replaces, if the target appeared meanwhile
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except FileExistsError:
        _fail(f"{target} exists; a backup never overwrites a file", 2)
    except (sqlite3.Error, OSError) as exc:
        _fail(f"backup of {source} failed: {exc}", 1)
    finally:
        partial.unlink(missing_ok=True)
    size = target.stat().st_size
    schema = revision[0] if revision else "?"
    typer.echo(f"backed up {source} to {target} ({size} bytes, integrity ok, schema {schema})")


@contextmanager
def _admin_session(settings: Settings) -> Iterator[Session]:
    """One committed unit of work on the migrated database; a UserError exits 1 with its message."""
    engine = _migrated_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    except users.UserError as exc:
        _fail(str(exc), 1)
    finally:
        engine.dispose()


# The name in parts, as `user add` and `user name` take it.
FamilyOption = Annotated[str, typer.Option("--family", help="Family name (as signed reports carry it).")]
GivenOption = Annotated[str, typer.Option("--given", help="Given name.")]
MiddleOption = Annotated[str, typer.Option("--middle", help="Middle name(s) or initials.")]
PrefixOption = Annotated[str, typer.Option("--prefix", help="Title before the name, e.g. Dr.")]
SuffixOption = Annotated[str, typer.Option("--suffix", help="Suffix, e.g. Jr.")]
DegreeOption = Annotated[str, typer.Option("--degree", help="Degree(s) after the name, e.g. MD.")]


def _person_name(family: str, given: str, middle: str, prefix: str, suffix: str, degree: str) -> PersonName | None:
    """The name the options give (None without --family; exit 2 for other parts without it)."""
    parts = {"given": given, "middle": middle, "prefix": prefix, "suffix": suffix, "degree": degree}
    if not family.strip():
        if any(value.strip() for value in parts.values()):
            _fail("--given, --middle, --prefix, --suffix and --degree need --family", 2)
        return None
    return PersonName(family=family.strip(), **{key: value.strip() for key, value in parts.items()})


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option("--role", help="radiologist (= attending), resident, editor or admin")],
    display_name: Annotated[str, typer.Option("--display-name", help="Name shown in the UI and on reports.")] = "",
    family: FamilyOption = "",
    given: GivenOption = "",
    middle: MiddleOption = "",
    prefix: PrefixOption = "",
    suffix: SuffixOption = "",
    degree: DegreeOption = "",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read a password for the page's sign-in from standard input (first line; "
                                 "asked twice on a terminal). Never pass a password as an argument.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create a user; prints its API token as the last line."""
    settings = _settings(config)
    try:
        parsed_role = users.parse_role(role)
    except users.UserError as exc:
        _fail(str(exc), 2)
    person = _person_name(family, given, middle, prefix, suffix, degree)
    password = _read_password() if password_stdin else None
    with _admin_session(settings) as session:
        user = users.create_user(session=session, username=name, role=parsed_role, display_name=display_name,
                                 name=person)
        if password is not None:
            signin.set_password(session=session, username=user.username, password=password)
        token = users.issue_token(session=session, user=user, ttl_hours=settings.auth.token_ttl_hours)
        audit.record(session=session, actor=CLI_ACTOR, action="user.add", entity_type="user",
                     entity_id=user.username, detail={"role": user.role, "password": password is not None})
    typer.echo(f"created {parsed_role.value} '{name}'; API token:")
    typer.echo(token)


def _read_password() -> str:
    """A password from standard input: asked twice on a terminal, else the first line (its line
    ending removed, nothing else). Exit 2 when it breaks the rules or the two differ."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            _fail("the two passwords differ", 2)
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        signin.check_password_rules(password)
    except users.UserError as exc:
        _fail(str(exc), 2)
    return password


@user_app.command("password")
def user_password(name: str, config: ConfigOption = None) -> None:
    """Set a user's password for the page (read from standard input as for `user add
    --password-stdin`); the user's open page sessions end."""
    password = _read_password()
    with _admin_session(_settings(config)) as session:
        signin.set_password(session=session, username=name, password=password)
        audit.record(session=session, actor=CLI_ACTOR, action="user.password", entity_type="user", entity_id=name)
    typer.echo(f"password set for '{name}'; its page sessions were signed out")


@user_app.command("unlock")
def user_unlock(
    name: Annotated[str, typer.Argument(help="The username whose failed sign-ins are forgotten.")] = "",
    address: Annotated[str, typer.Option("--address", help="Also (or only) this client address.")] = "",
    config: ConfigOption = None,
) -> None:
    """End the lock on signing in after repeated failures, for a user and/or an address."""
    if not name and not address:
        _fail("name a user, --address, or both", 2)
    with _admin_session(_settings(config)) as session:
        removed = signin.unlock(session=session, username=name or None, client=address or None)
        audit.record(session=session, actor=CLI_ACTOR, action="auth.unlock", entity_type="user",
                     entity_id=name or None, detail={"address": address or None, "failures_removed": removed})
    typer.echo(f"unlocked {' and '.join(filter(None, [repr(name) if name else '', address]))} "
               f"({removed} failed sign-in(s) forgotten)")


@user_app.command("name")
def user_name(
    name: str,
    family: FamilyOption,
    given: GivenOption = "",
    middle: MiddleOption = "",
    prefix: PrefixOption = "",
    suffix: SuffixOption = "",
    degree: DegreeOption = "",
    config: ConfigOption = None,
) -> None:
    """Set a user's name in parts (what later signatures carry; signed versions keep theirs)."""
    person = _person_name(family, given, middle, prefix, suffix, degree)
    if person is None:
        _fail("--family is needed", 2)
    with _admin_session(_settings(config)) as session:
        users.set_name(session=session, username=name, name=person)
        audit.record(session=session, actor=CLI_ACTOR, action="user.name", entity_type="user", entity_id=name)
    typer.echo(f"'{name}' now signs as {person.display()}")


@user_app.command("token")
def user_token(name: str, config: ConfigOption = None) -> None:
    """Issue another API token for an active user; prints it as the last line."""
    settings = _settings(config)
    with _admin_session(settings) as session:
        user = users.get_user(session=session, username=name)
        if user is None or not user.active:
            raise users.UserError(f"no active user '{name}'")
        token = users.issue_token(session=session, user=user, ttl_hours=settings.auth.token_ttl_hours)
        audit.record(session=session, actor=CLI_ACTOR, action="user.token", entity_type="user", entity_id=name)
    typer.echo(token)


@user_app.command("list")
def user_list(config: ConfigOption = None) -> None:
    """List users: name, role, active, display name."""
    with _admin_session(_settings(config)) as session:
        for u in users.list_users(session=session):
            typer.echo(f"{u.username}\t{u.role}\t{'active' if u.active else 'revoked'}\t{u.display_name}")


@user_app.command("revoke")
def user_revoke(name: str, config: ConfigOption = None) -> None:
    """Deactivate a user and revoke all of its tokens."""
    with _admin_session(_settings(config)) as session:
        count = users.revoke_user(session=session, username=name)
        user = users.get_user(session=session, username=name)
        if user is not None:
            signin.end_user_sessions(session=session, user_id=user.id)
        audit.record(session=session, actor=CLI_ACTOR, action="user.revoke", entity_type="user",
                     entity_id=name, detail={"tokens_revoked": count})
    typer.echo(f"revoked '{name}' ({count} token(s))")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
