#!/usr/bin/env bash
# The secrets docker-compose.yml mounts, made once: secrets/db_password (random) and
# secrets/llm_api_key (empty: Ollama needs none; put a key there for an OpenAI-compatible server).
# The folder is private to you (0700); the files are readable (0644) because the containers read
# them as their own users (postgres, radservice 10001) and compose mounts them as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p secrets
chmod 0700 secrets
if [ ! -s secrets/db_password ]; then
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > secrets/db_password
  echo "compose-secrets.sh: wrote secrets/db_password" >&2
fi
[ -f secrets/llm_api_key ] || : > secrets/llm_api_key
chmod 0644 secrets/db_password secrets/llm_api_key
