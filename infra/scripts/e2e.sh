#!/usr/bin/env bash
# `make e2e`: what a client developer sees, tested in a real browser.
#   1. npm ci (from the committed package-lock.json files) in clients/typescript and infra/e2e;
#      Debian's chromium from apt if it is missing (Playwright's own browsers are not reachable);
#   2. the TypeScript client: its generated types against what openapi-typescript makes of
#      docs/openapi.yaml now (a changed route without `make client` fails), and a type check
#      of its example;
#   3. the API reference built from docs/openapi.yaml (Redocly) into .dev/docs/index.html;
#   4. a dev gateway of its own on E2E_PORT (3036), on the test database and bucket, with a
#      Stripe simulator of its own (E2E_STRIPE_PORT, 5136) whose webhooks reach that gateway;
#   5. Playwright (infra/e2e) against it, then the client's example (generate, poll, list).
# The gateway and simulator stop at the end. The test writes a screenshot of the playground to
# E2E_SCREENSHOT (.dev/e2e/playground.png; E2E_SCREENSHOT=docs/playground.png refreshes the README's).
#
# `e2e.sh docs` does step 3 only (`make docs`); `e2e.sh client` regenerates the client's types
# (`make client`).
set -euo pipefail
cd "$(dirname "$0")/../.."
E2E_PORT="${E2E_PORT:-3036}"
E2E_STRIPE_PORT="${E2E_STRIPE_PORT:-5136}"
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
BASE=http://127.0.0.1:$E2E_PORT
DEV_TOOL=target/debug/picture-dev
LOGS=.dev/logs
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  NO_UPDATE_NOTIFIER=1 npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

# The exact packages of the committed lock file.
deps() { npm ci --prefix "$1" --loglevel=error; }

docs() {
  mkdir -p .dev/docs
  rm -f .dev/docs/next.html
  # Redoc's scripts inlined (--inlineBundle): the page works offline.
  (cd infra/e2e && npx redocly build-docs ../../docs/openapi.yaml --inlineBundle \
    --title "Picture API reference" --output ../../.dev/docs/next.html 2>&1 | grep -E 'bundled|rror' || true)
  [ -s .dev/docs/next.html ] || { echo "e2e: the reference was not built" >&2; exit 1; }
  mv .dev/docs/next.html .dev/docs/index.html
}

case "${1:-all}" in
  docs) deps infra/e2e; docs; exit 0 ;;
  client)
    deps clients/typescript
    npm --prefix clients/typescript run -s generate
    exit 0 ;;
  all) ;;
  *) echo "usage: e2e.sh [docs|client]" >&2; exit 2 ;;
esac

for port in "$E2E_PORT" "$E2E_STRIPE_PORT"; do
  if ss -ltnH "sport = :$port" | grep -q .; then
    echo "e2e: port $port is taken (another make e2e?); set E2E_PORT / E2E_STRIPE_PORT" >&2
    exit 1
  fi
done
SHOT=${E2E_SCREENSHOT:-.dev/e2e/playground.png}
case $SHOT in /*) ;; *) SHOT=$PWD/$SHOT ;; esac
bash infra/scripts/stack.sh up
cargo build -q -p picture-dev
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  echo "e2e: installing Debian's chromium" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
fi
deps clients/typescript
deps infra/e2e

status=0
echo "e2e: the TypeScript client's types against docs/openapi.yaml"
npm --prefix clients/typescript test || status=1
npm --prefix clients/typescript run -s typecheck && echo "e2e: example.mjs type-checks" || status=1
echo "e2e: building the API reference"
docs

set -a && . ./.dev/local.env && set +a
export DATABASE_URL=$TEST_DATABASE_URL IMAGES_BUCKET=$TEST_IMAGES_BUCKET
$DEV_TOOL migrate && $DEV_TOOL setup

STRIPE=http://127.0.0.1:$E2E_STRIPE_PORT
cleanup() { for pid in ${server:-} ${stripe:-}; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
STRIPE_SIM_SECRET_KEY=$STRIPE_SECRET_KEY STRIPE_WEBHOOK_SECRET=$STRIPE_WEBHOOK_SECRET \
  STRIPE_WEBHOOK_URL=$BASE/api/v1/payments/webhook \
  "$VENV/bin/python" infra/stripe-sim/sim.py --host 127.0.0.1 --port "$E2E_STRIPE_PORT" >$LOGS/e2e-stripe-sim.log 2>&1 &
stripe=$!
PORT=$E2E_PORT API_URL=$BASE WEBHOOK_BASE_URL=$BASE JWKS_URL=$BASE/dev/jwks.json \
  STRIPE_API_BASE_URL=$STRIPE RECONCILE_INTERVAL_SECONDS=0 \
  RATE_LIMIT_GENERATE_PER_MINUTE=1000 RATE_LIMIT_READS_PER_MINUTE=10000 \
  $DEV_TOOL serve >$LOGS/e2e-server.log 2>&1 &
server=$!
for url in "$STRIPE/health" "$BASE/api/v1/models"; do
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$url" && break
    sleep 0.1
  done
done
curl -sf -o /dev/null "$BASE/api/v1/models" || { echo "e2e: the gateway did not start; see $LOGS/e2e-server.log" >&2; exit 1; }

echo "e2e: Playwright against $BASE (gateway log: $LOGS/e2e-server.log)"
(cd infra/e2e && BASE_URL=$BASE SCREENSHOT_PATH=$SHOT timeout 300 npx playwright test) || status=1

echo "e2e: the TypeScript client's example"
BASE_URL=$BASE timeout 120 node clients/typescript/example.mjs "a lighthouse at dawn [sim:slow=2000]" || status=1

[ $status = 0 ] && echo "e2e: all passed" || echo "e2e: FAILED" >&2
exit $status
