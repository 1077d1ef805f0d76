#!/usr/bin/env bash
# Validates docker-compose.yml with whichever Compose client is installed
# (`docker compose` or the standalone `docker-compose`); no engine needed.
# tests/integration/serve_ops.rs checks the same file's wiring without any client.
set -euo pipefail
cd "$(dirname "$0")/.."
export FLOE_TOKENS="${FLOE_TOKENS:-check:admin:compose-check-secret-0123}"
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config --quiet
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f docker-compose.yml config --quiet
else
  echo "no Compose client installed (apt-get install docker-compose)" >&2
  exit 2
fi
echo "docker-compose.yml is valid"
