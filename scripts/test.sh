#!/usr/bin/env bash
# Set up (first run) and run the whole test suite.
# Without PostgreSQL the PostgreSQL-backed tests are skipped and the summary says why;
# with CI=true PostgreSQL (RADSERVICE_TEST_PG_URL, default 127.0.0.1:5432 database test) is required.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# Orthanc (a real PACS), dcmtk (storescp, dsrdump) and dciodvfy: the DICOM tests' peers and
# validators (tests skip without them, CI fails)
scripts/system-packages.sh dcmtk dicom3tools orthanc || echo "test.sh: could not install dcmtk / dicom3tools / orthanc" >&2
# Chromium: the page's end-to-end tests drive it with Playwright (they skip without it, CI fails)
scripts/system-packages.sh chromium || echo "test.sh: could not install chromium" >&2
# axe-core (npm, locked in package-lock.json): the page's accessibility audit in the browser tests
if command -v npm >/dev/null 2>&1; then
  timeout 300 npm ci --no-audit --no-fund --silent || echo "test.sh: could not install the npm test tools" >&2
fi
# The page's JavaScript that is not layout (API client, diff, polling), under Node's test runner
js_rc=0
if command -v node >/dev/null 2>&1; then
  timeout 300 node --test tests/js/ || js_rc=$?
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: node is needed for the JavaScript tests" >&2
  js_rc=1
else
  echo "test.sh: node not found: JavaScript tests skipped" >&2
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
[ $rc -eq 0 ] && [ $js_rc -ne 0 ] && rc=$js_rc
exit $rc
