"""`radservice ...`: the command line admins and scripts use (contract in DESIGN.md)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from radservice.config import ConfigError, Settings, load_settings
from radservice.logs import configure_logging

log = logging.getLogger("radservice")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="radservice: radiology dictation and reporting.")

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="TOML config file (default: $RADSERVICE_CONFIG, then config/radservice.toml)."),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"radservice: {message}", err=True)
    raise typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    """Load settings or exit 2 with the file and key named."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        _fail(f"configuration error\n{exc}", 2)


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the API and listeners in one process until SIGTERM."""
    settings = _settings(config)
    configure_logging()
    log.info("configuration from %s", settings.source_file or "built-in defaults and environment")
    from radservice import serve as serve_mod

    try:
        code = asyncio.run(serve_mod.run(settings))
    except serve_mod.ListenError as exc:
        _fail(str(exc), 1)
    raise typer.Exit(code)


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate the configuration and reach every configured peer; exit 1 on any failure."""
    settings = _settings(config)
    typer.echo(f"config: ok ({settings.source_file or 'built-in defaults and environment'})")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
