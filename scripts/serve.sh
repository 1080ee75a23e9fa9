#!/usr/bin/env bash
# Set up (first run) and start radservice on its embedded default: SQLite and audio under var/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/radservice serve "$@"
