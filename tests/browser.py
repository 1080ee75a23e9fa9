"""Headless Chromium for the page's tests: Debian's browser driven by Playwright for Python
(Playwright never downloads a browser here). Without either, the tests skip with the reason;
with CI=true a missing one stops the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
#: The flags this machine needs (no sandbox as root; no background traffic to a closed network).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

MISSING = [name for name, present in (("chromium", CHROMIUM), ("playwright", sync_playwright)) if not present]
if MISSING and os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
    raise RuntimeError(f"CI needs {', '.join(MISSING)}: scripts/system-packages.sh chromium; pip install playwright")


def fake_microphone(wav: str) -> list[str]:
    """Flags for Chromium's fake microphone playing ``wav`` (in a loop) with permission granted."""
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"]


@contextmanager
def chromium(extra_args: list[str] | None = None) -> Iterator[Any]:
    """A headless Chromium browser (Playwright's Browser)."""
    assert sync_playwright is not None and CHROMIUM is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=FLAGS + list(extra_args or []))
        try:
            yield browser
        finally:
            browser.close()


#: The password the page tests give their people.
PASSWORD = "reading room 7 password"


def add_person(config: Path, cwd: Path, name: str, role: str, password: str = PASSWORD) -> None:
    """A user who signs in on the page (``radservice user add ... --password-stdin``)."""
    made = subprocess.run([sys.executable, "-m", "radservice.cli", "user", "add", name, "--role", role,
                           "--password-stdin", "--family", name.split(".")[-1].title(), "--given", "Test",
                           "--config", str(config)], input=password + "\n", capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    assert made.returncode == 0, made.stderr


def new_password(config: Path, cwd: Path, name: str, password: str) -> None:
    """``radservice user password NAME``: the user's page sessions end on the server."""
    changed = subprocess.run([sys.executable, "-m", "radservice.cli", "user", "password", name, "--config",
                              str(config)], input=password + "\n", capture_output=True, text=True, timeout=120,
                             cwd=cwd)
    assert changed.returncode == 0, changed.stderr


def sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Open the page and sign in through its form."""
    page.goto(base + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()

