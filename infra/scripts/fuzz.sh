#!/usr/bin/env bash
# `make fuzz`: schemathesis (from PyPI, in the tools virtualenv) against a dev
# gateway of its own on FUZZ_PORT, driven by docs/openapi.yaml. Fails on any
# 5xx and on any answer whose status, content type, headers or body the
# document does not allow. Uses the test database and bucket and a fresh user, with rate
# limits lifted and a short sync wait so the run stays within a few minutes.
# Strings may hold NUL (`--generation-allow-x00`), and fuzz_hooks.py puts a
# control character into one string of about half the bodies and queries.
# Arguments go to schemathesis (e.g. `--seed N` to repeat a run).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
FUZZ_PORT="${FUZZ_PORT:-3016}"
EXAMPLES="${FUZZ_EXAMPLES:-100}"
BASE=http://127.0.0.1:$FUZZ_PORT
DEV_TOOL=target/debug/picture-dev

bash infra/scripts/stack.sh up
set -a && . ./.dev/local.env && set +a
export DATABASE_URL=$TEST_DATABASE_URL IMAGES_BUCKET=$TEST_IMAGES_BUCKET
$DEV_TOOL migrate && $DEV_TOOL setup

PORT=$FUZZ_PORT API_URL=$BASE WEBHOOK_BASE_URL=$BASE JWKS_URL=$BASE/dev/jwks.json \
  RATE_LIMIT_GENERATE_PER_MINUTE=1000000 RATE_LIMIT_READS_PER_MINUTE=1000000 SYNC_WAIT_SECONDS=3 \
  $DEV_TOOL serve >.dev/logs/fuzz-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "$BASE/api/v1/models" && break
  sleep 0.1
done

TOKEN=$($DEV_TOOL token "$(cat /proc/sys/kernel/random/uuid)" | tail -1)
PYTHONPATH=infra/scripts SCHEMATHESIS_HOOKS=fuzz_hooks \
timeout 300 "$VENV/bin/schemathesis" run docs/openapi.yaml \
  --url "$BASE" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$EXAMPLES" \
  --workers 2 \
  --request-timeout 20 \
  --generation-database none \
  --generation-allow-x00 true \
  --generation-codec utf-8 \
  --report junit --report-dir .dev/fuzz \
  "$@"
