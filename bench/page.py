"""The page in headless Chromium: from "Sign in" to a rendered worklist of 500 studies, and from a
click on a study to its editable report; and the bytes the page transfers.

    .venv/bin/python bench/page.py [--runs 20]

One `radservice serve` on SQLite with 500 studies (one with a draft report); Debian's Chromium
driven by Playwright for Python. Each run uses a new browser context (a cold cache: every asset
is fetched again). Times are measured in the browser (performance.now() from the click to the
moment the rows or the text areas are in the document), printed as median, p90 and max.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from radservice.db.session import make_engine, make_sessionmaker  # noqa: E402
from radservice.worklist.intake import Priority  # noqa: E402
from tests.browser import MISSING, chromium  # noqa: E402
from tests.support import add_report, add_study, free_port, serve, write_config  # noqa: E402

PASSWORD = "bench page password"
STUDIES = 500

#: Click, then wait in the page for what the person waits for; the time is the page's own clock.
TIMED_CLICK = """async ([selector, waitFor]) => {
  const started = performance.now();
  document.querySelector(selector).click();
  while (!document.querySelector(waitFor)) await new Promise((r) => requestAnimationFrame(r));
  return performance.now() - started;
}"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if MISSING:
        sys.exit(f"needs {', '.join(MISSING)}: scripts/system-packages.sh chromium")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        url = f"sqlite:///{work}/rs.db"
        config = write_config(work, port=free_port(), db_url=url, extra="[llm]\nenabled = false\n")
        running = stack.enter_context(serve(config, work, wait_s=120))
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        for n in range(STUDIES):
            add_study(sessions, f"PB-{n:04d}", minutes=n, priority=Priority.STAT if n % 25 == 0 else Priority.ROUTINE,
                      family=f"BENCH{n:04d}")
        add_report(sessions, "PB-0000", {"findings": "Lungs: clear.", "impression": "No acute finding."})
        engine.dispose()
        made = subprocess.run([sys.executable, "-m", "radservice.cli", "user", "add", "dr.bench", "--role",
                               "radiologist", "--password-stdin", "--config", str(config)], input=PASSWORD + "\n",
                              capture_output=True, text=True, timeout=120, cwd=work)
        assert made.returncode == 0, made.stderr
        browser = stack.enter_context(chromium())
        sign_in: list[float] = []
        open_study: list[float] = []
        transferred: list[dict[str, int]] = []
        for run in range(args.runs):
            context = browser.new_context()
            page = context.new_page()
            sizes: dict[str, int] = {"assets": 0, "api": 0}

            def count(response: Any, sizes: dict[str, int] = sizes) -> None:
                try:
                    size = len(response.body())
                except Exception:  # a redirect or an aborted load has no body
                    return
                sizes["api" if "/api/" in response.url else "assets"] += size

            page.on("response", count)
            page.goto(running.base_url + "/")
            page.get_by_label("Username").fill("dr.bench")
            page.get_by_label("Password").fill(PASSWORD)
            sign_in.append(page.evaluate(TIMED_CLICK, ["form.signin button[type=submit]",
                                                       "table.worklist tbody tr:nth-child(50)"]))
            open_study.append(page.evaluate(TIMED_CLICK, ['a[data-key="PB-0000"]', "textarea#section-findings"]))
            page.wait_for_load_state("networkidle")
            transferred.append(dict(sizes))
            context.close()
            print(f"run {run + 1:2d}: sign-in to worklist {sign_in[-1]:6.1f} ms, study to editor "
                  f"{open_study[-1]:6.1f} ms", flush=True)
    print(f"\n## the page, {args.runs} runs, {STUDIES} studies (50 rows a page), SQLite, headless Chromium")
    for name, values in (("sign-in to a rendered worklist", sign_in), ("study click to an editable report",
                                                                          open_study)):
        print(f"    {name:34} median {statistics.median(values):6.1f} ms  p90 {_pct(values, 0.9):6.1f} ms"
              f"  max {max(values):6.1f} ms")
    first = transferred[0]
    print(f"    transferred (one run, uncompressed bodies): assets {first['assets'] / 1024:.1f} KiB, "
          f"API {first['api'] / 1024:.1f} KiB, total {(first['assets'] + first['api']) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
