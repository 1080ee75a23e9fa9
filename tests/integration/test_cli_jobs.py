"""`radservice jobs list`, `jobs run NAME` and `worker` argument errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import free_port, radservice, write_config

pytestmark = pytest.mark.integration


def test_duties_are_listed_and_run_by_name(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, port=free_port()))
    listed = radservice("jobs", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    assert "lease-reaper" in listed.stdout and "audio-retention" in listed.stdout
    ran = radservice("jobs", "run", "audio-retention", "--config", config)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "audio-retention: 0 audio file(s) older than 365 days removed"
    reaped = radservice("jobs", "run", "lease-reaper", "--config", config)
    assert reaped.stdout.strip() == "lease-reaper: 0 job(s) of lost workers queued again or failed"
    unknown = radservice("jobs", "run", "nope", "--config", config)
    assert unknown.returncode == 2
    assert "no duty named 'nope'; one of: audio-orphans, audio-retention, lease-reaper, sign-in-prune" in unknown.stderr


def test_worker_with_unloadable_handlers_exits_2(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, port=free_port()))
    result = radservice("worker", "--config", config, "--handlers", "no.such.module:handlers", timeout=60)
    assert result.returncode == 2 and "job handlers 'no.such.module:handlers' cannot be loaded" in result.stderr
