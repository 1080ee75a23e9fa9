#!/usr/bin/env bash
# Set up (first run) and start radservice on its embedded default: SQLite and audio under var/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The page's npm packages (package-lock.json): dictation microphone buttons (WebHID). Optional:
# without npm the page works, with the keyboard and on-screen buttons only.
if [ ! -d node_modules/dictation_support ] && command -v npm >/dev/null 2>&1; then
  timeout 300 npm ci --ignore-scripts --no-audit --no-fund --silent || echo "serve.sh: npm ci failed: no dictation microphone buttons" >&2
fi
exec .venv/bin/radservice serve "$@"
