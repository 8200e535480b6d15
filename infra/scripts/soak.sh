#!/usr/bin/env bash
# `make soak`: USERS users (50) generating for DURATION seconds (60) through a
# dev gateway of its own on SOAK_PORT (3026), with its own database
# (picture_soak, recreated each run), bucket (picture-soak) and Replicate
# simulator (SOAK_SIM_PORT, 5126), rate limits lifted; picture-soak drives
# the load and reports latency per route. Then the
# open generations are left to settle (the reconciler runs if some do not),
# the audit checks what the run wrote, and the generations are counted by
# final status. FAULTS=1 also injects simulator error bursts and freezes the
# S3 server now and then (SIGSTOP/SIGCONT: only with the flag, since S3 is
# shared with `make dev`). Exit status: non-zero on any audit
# violation, on a generation still open at the end, and, without FAULTS, on
# any 5xx or anomaly.
set -euo pipefail
cd "$(dirname "$0")/../.."
SOAK_PORT="${SOAK_PORT:-3026}"
SOAK_SIM_PORT="${SOAK_SIM_PORT:-5126}"
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
USERS="${USERS:-50}"
DURATION="${DURATION:-60}"
FAULTS="${FAULTS:-0}"
BASE=http://127.0.0.1:$SOAK_PORT
DEV_TOOL=target/debug/picture-dev
LOGS=.dev/logs

bash infra/scripts/stack.sh up
cargo build -q -p picture-dev -p picture-soak
set -a && . ./.dev/local.env && set +a
export DATABASE_URL=${DATABASE_URL%/*}/picture_soak IMAGES_BUCKET=picture-soak
psql "${DATABASE_URL%/*}/postgres" -qc 'DROP DATABASE IF EXISTS picture_soak WITH (FORCE)' -c 'CREATE DATABASE picture_soak'
$DEV_TOOL migrate && $DEV_TOOL setup

SIM=http://127.0.0.1:$SOAK_SIM_PORT
export PORT=$SOAK_PORT API_URL=$BASE WEBHOOK_BASE_URL=$BASE JWKS_URL=$BASE/dev/jwks.json \
  RATE_LIMIT_GENERATE_PER_MINUTE=1000000 RATE_LIMIT_READS_PER_MINUTE=1000000 \
  REPLICATE_API_BASE_URL=$SIM OUTPUT_ALLOWED_HOSTS=127.0.0.1:$SOAK_SIM_PORT
s3_pid=$(ss -ltnpH "sport = :${AWS_ENDPOINT_URL_S3##*:}" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
cleanup() {
  for pid in ${server:-} ${sim:-}; do kill "$pid" 2>/dev/null || true; done
  if [ "$FAULTS" = 1 ] && [ -n "$s3_pid" ]; then kill -CONT "$s3_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
# A simulator of its own, so that injected faults reach no one else.
SIM_API_TOKEN=$REPLICATE_API_TOKEN SIM_WEBHOOK_SECRET=$REPLICATE_WEBHOOK_SECRET \
  "$VENV/bin/python" infra/replicate-sim/sim.py --host 127.0.0.1 --port "$SOAK_SIM_PORT" >$LOGS/soak-sim.log 2>&1 &
sim=$!
$DEV_TOOL serve >$LOGS/soak-server.log 2>&1 &
server=$!
for url in "$SIM/health" "$BASE/api/v1/models"; do
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$url" && break
    sleep 0.1
  done
done

tokens=.dev/soak-tokens
for _ in $(seq 1 "$USERS"); do $DEV_TOOL token "$(cat /proc/sys/kernel/random/uuid)" | tail -1; done >$tokens
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
status=0
target/debug/picture-soak --base "$BASE" --sim "$SIM" --sim-token "$REPLICATE_API_TOKEN" \
  --tokens $tokens --duration "$DURATION" \
  $([ "$FAULTS" = 1 ] && echo --faults ${s3_pid:+--s3-pid $s3_pid}) || status=1

sql() { psql "$DATABASE_URL" -Atqc "$1"; }
open="SELECT count(*) FROM generations WHERE status IN ('pending', 'processing')"
for _ in $(seq 1 30); do [ "$(sql "$open")" = 0 ] && break; sleep 1; done
if [ "$(sql "$open")" != 0 ]; then
  echo "settle: $(sql "$open") generations still open; running the reconciler"
  RECONCILE_GRACE_SECONDS=0 $DEV_TOOL reconcile >$LOGS/soak-reconcile.log 2>&1 || status=1
  tail -1 $LOGS/soak-reconcile.log
  for _ in $(seq 1 10); do [ "$(sql "$open")" = 0 ] && break; sleep 1; done
fi
if [ "$(sql "$open")" != 0 ]; then
  echo "settle: generations still open:"
  sql "SELECT id, status, prediction_id, created_at FROM generations WHERE status IN ('pending', 'processing')"
  status=1
fi

echo "generations by final status (error code):"
sql "SELECT status, coalesce(error_code, '-'), count(*) FROM generations GROUP BY 1, 2 ORDER BY 1, 2" | sed 's/^/  /'
$DEV_TOOL audit --since "$start" || status=1
echo "gateway log ($LOGS/soak-server.log): $(grep -c '"level":"ERROR"' $LOGS/soak-server.log || true) errors, $(grep -c '"level":"WARN"' $LOGS/soak-server.log || true) warnings"
grep -E '"level":"(ERROR|WARN)"' $LOGS/soak-server.log | jq -r '"\(.level) \(.message) [\(.span.method // "-") \(.span.path // "-" | gsub("[0-9a-f-]{36}"; "{id}"))]"' 2>/dev/null \
  | sort | uniq -c | sort -rn | head -10 || true
exit $status
