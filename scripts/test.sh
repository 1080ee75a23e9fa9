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
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
