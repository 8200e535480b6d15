#!/usr/bin/env bash
# The local stack's background services: PostgreSQL, s3s-fs (S3, objects kept
# in .dev/s3), moto (other AWS APIs), moto's DynamoDB one request at a time
# (dynamodb.py), the Replicate, Stripe and moderation simulators. `up` installs what is missing,
# starts what is not running (reusing what is), creates the databases and
# writes .dev/local.env; `down` stops what `up` started (the data in .dev/s3
# and PostgreSQL stays).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEV=$ROOT/.dev
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
PORT="${PORT:-3006}"
TOOLS="${PICTURE_TOOLS:-$HOME/.cache/picture-tools}"
MOTO_PORT="${MOTO_PORT:-5000}"
S3_PORT="${S3_PORT:-5002}"
DYNAMODB_PORT="${DYNAMODB_PORT:-5001}"
SIM_PORT="${SIM_PORT:-5100}"
STRIPE_SIM_PORT="${STRIPE_SIM_PORT:-5110}"
MODERATION_SIM_PORT="${MODERATION_SIM_PORT:-5120}"
# sam local (sam.sh): its API, the simulator and key set for containers.
SAM_API_PORT="${SAM_API_PORT:-3100}"
SAM_LAMBDA_PORT="${SAM_LAMBDA_PORT:-3101}"
SAM_SIM_PORT="${SAM_SIM_PORT:-5101}"
SAM_KEYS_PORT="${SAM_KEYS_PORT:-5102}"
SIM_TOKEN=r8_sim_token
SIM_SECRET=whsec_cGljdHVyZS1sb2NhbC1yZXBsaWNhdGUtc2ltdWxhdG8=
STRIPE_KEY=sk_test_sim
STRIPE_SECRET=whsec_picture_local_stripe_simulator
MODERATION_KEY=sk-moderation-sim
mkdir -p "$DEV/pids" "$DEV/logs"

log() { echo "stack: $*" >&2; }

wait_for() { # URL, name
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  log "$2 did not start; see $DEV/logs/$2.log"; return 1
}

start_bg() { # name, command...
  local name=$1; shift
  nohup "$@" >"$DEV/logs/$name.log" 2>&1 &
  echo $! >"$DEV/pids/$name.pid"
}

pg_ok() { psql "postgres://postgres@127.0.0.1:$1/postgres" -Atqc 'select 1' >/dev/null 2>&1; }

# Prints the port of a PostgreSQL server with trust auth for postgres on 127.0.0.1.
postgres_up() {
  if command -v psql >/dev/null && pg_ok 5432; then echo 5432; return; fi
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start >&2 2>/dev/null || true
    for _ in $(seq 1 30); do pg_ok 5432 && { echo 5432; return; }; sleep 0.2; done
  fi
  # No usable server: run a throwaway cluster of our own (trust auth, port 5433).
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing PostgreSQL"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client) >&2
  fi
  local bin data=$DEV/pgdata
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if ! pg_ok 5433; then
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data" && chown postgres "$data"
      su postgres -c "$bin/initdb -U postgres -A trust -D $data" >&2
    fi
    su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -o '-p 5433 -k $data -c listen_addresses=127.0.0.1 -c fsync=off' -w start" >&2
  fi
  echo 5433
}

# The address at which a Lambda container of `sam local` reaches this host:
# Docker Desktop (macOS) names it; on Linux it is the bridge's gateway, Docker's
# if a Docker engine answers, else podman's (what sam-engine.sh sets up).
container_host() {
  if [ "$(uname -s)" = Darwin ]; then echo host.docker.internal; return; fi
  local docker=(env DOCKER_HOST=unix:///var/run/docker.sock docker)
  if [ -S /var/run/docker.sock ] && command -v docker >/dev/null && timeout 10 "${docker[@]}" info >/dev/null 2>&1; then
    "${docker[@]}" network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}'; return
  fi
  echo 10.88.0.1
}

# A service left listening on one of our ports by a checkout since deleted (its
# working directory is gone) serves that checkout's files, or fails: stop it,
# and wait until it has exited (else the checks below could find it still
# answering and not start ours). The port may have other listeners, e.g.
# sam.sh's forwarders on the containers' address: only the stale ones go.
stale_services() {
  local port pid
  for port in "$MOTO_PORT" "$S3_PORT" "$DYNAMODB_PORT" "$SIM_PORT" "$STRIPE_SIM_PORT" "$MODERATION_SIM_PORT" "$SAM_SIM_PORT" "$SAM_KEYS_PORT"; do
    for pid in $(ss -ltnpH "sport = :$port" 2>/dev/null | grep -oE 'pid=[0-9]+' | cut -d= -f2 | sort -u); do
      if readlink "/proc/$pid/cwd" | grep -q '(deleted)$'; then
        log "stopping the service on :$port of a checkout that is gone"
        kill "$pid" 2>/dev/null || true
        if alive "$pid" 10; then
          kill -9 "$pid" 2>/dev/null || true
          if alive "$pid" 5; then log "the service on :$port does not stop"; exit 1; fi
        fi
      fi
    done
  done
}

# Whether process $1 is still there after waiting up to $2 seconds for it to exit.
alive() {
  local i
  for i in $(seq 1 $(($2 * 5))); do
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.2
  done
  return 0
}

create_db() { # port, name
  local exists
  exists=$(psql "postgres://postgres@127.0.0.1:$1/postgres" -Atqc "select 1 from pg_database where datname = '$2'")
  [ "$exists" = 1 ] || psql "postgres://postgres@127.0.0.1:$1/postgres" -qc "CREATE DATABASE $2" >&2
}

up() {
  bash infra/scripts/tools.sh
  command -v curl >/dev/null || (apt-get update -qq && apt-get install -y -qq curl) >&2
  stale_services
  local pg_port
  pg_port=$(postgres_up)
  create_db "$pg_port" picture
  create_db "$pg_port" picture_test

  if ! curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/"; then
    log "starting moto on :$MOTO_PORT"
    start_bg moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
    wait_for "http://127.0.0.1:$MOTO_PORT/moto-api/" moto
  fi
  if ! curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
    log "starting s3s-fs (S3, data in .dev/s3) on :$S3_PORT"
    mkdir -p "$DEV/s3"
    start_bg s3 "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" \
      --access-key test --secret-key test "$DEV/s3"
    wait_for "http://127.0.0.1:$S3_PORT/" s3
  fi
  if ! curl -s -o /dev/null "http://127.0.0.1:$DYNAMODB_PORT/moto-api/"; then
    log "starting DynamoDB (moto, serialised) on :$DYNAMODB_PORT"
    start_bg dynamodb "$VENV/bin/python" infra/scripts/dynamodb.py --host 127.0.0.1 --port "$DYNAMODB_PORT"
    wait_for "http://127.0.0.1:$DYNAMODB_PORT/moto-api/" dynamodb
  fi

  local api_url=http://127.0.0.1:$PORT replicate_url token secret allowed host
  host=$(container_host)
  if [ -n "${REPLICATE_API_TOKEN:-}" ] && [ "${REPLICATE_API_TOKEN}" != "$SIM_TOKEN" ] && [ -z "${REPLICATE_API_BASE_URL:-}" ]; then
    log "REPLICATE_API_TOKEN is set: talking to Replicate itself"
    replicate_url=https://api.replicate.com token=$REPLICATE_API_TOKEN secret=${REPLICATE_WEBHOOK_SECRET:-} allowed=
  else
    replicate_url=${REPLICATE_API_BASE_URL:-http://127.0.0.1:$SIM_PORT} token=$SIM_TOKEN secret=$SIM_SECRET allowed=127.0.0.1:$SIM_PORT
    if ! curl -s -o /dev/null "http://127.0.0.1:$SIM_PORT/health"; then
      log "starting the Replicate simulator on :$SIM_PORT"
      SIM_API_TOKEN=$SIM_TOKEN SIM_WEBHOOK_SECRET=$SIM_SECRET start_bg replicate-sim \
        "$VENV/bin/python" infra/replicate-sim/sim.py --host 127.0.0.1 --port "$SIM_PORT"
      wait_for "http://127.0.0.1:$SIM_PORT/health" replicate-sim
    fi
  fi

  if ! curl -s -o /dev/null "http://127.0.0.1:$STRIPE_SIM_PORT/health"; then
    log "starting the Stripe simulator on :$STRIPE_SIM_PORT"
    STRIPE_SIM_SECRET_KEY=$STRIPE_KEY STRIPE_WEBHOOK_SECRET=$STRIPE_SECRET \
      STRIPE_WEBHOOK_URL=$api_url/api/v1/payments/webhook start_bg stripe-sim \
      "$VENV/bin/python" infra/stripe-sim/sim.py --host 127.0.0.1 --port "$STRIPE_SIM_PORT"
    wait_for "http://127.0.0.1:$STRIPE_SIM_PORT/health" stripe-sim
  fi

  if ! curl -s -o /dev/null "http://127.0.0.1:$MODERATION_SIM_PORT/health"; then
    log "starting the moderation simulator on :$MODERATION_SIM_PORT"
    MODERATION_SIM_API_KEY=$MODERATION_KEY start_bg moderation-sim \
      "$VENV/bin/python" infra/moderation-sim/sim.py --host 127.0.0.1 --port "$MODERATION_SIM_PORT"
    wait_for "http://127.0.0.1:$MODERATION_SIM_PORT/health" moderation-sim
  fi

  cat >"$DEV/local.env" <<ENV
APP_ENV=${APP_ENV:-development}
PORT=$PORT
API_URL=$api_url
DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/picture
TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/picture_test
AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
S3S_FS_BIN=$TOOLS/bin/s3s-fs
AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DYNAMODB_PORT
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
AWS_REGION=eu-central-1
IMAGES_BUCKET=picture-images
TEST_IMAGES_BUCKET=picture-test-images
RUNTIME_TABLE=picture-runtime
REPLICATE_API_BASE_URL=$replicate_url
REPLICATE_API_TOKEN=$token
REPLICATE_WEBHOOK_SECRET=$secret
WEBHOOK_BASE_URL=$api_url
STRIPE_API_BASE_URL=http://127.0.0.1:$STRIPE_SIM_PORT
STRIPE_SECRET_KEY=$STRIPE_KEY
STRIPE_WEBHOOK_SECRET=$STRIPE_SECRET
MODERATION_PROVIDER=openai
# The dev gateway is one process standing in for many function instances (one decode each).
THUMBNAIL_DECODES=2
MODERATION_API_BASE_URL=http://127.0.0.1:$MODERATION_SIM_PORT
OPENAI_API_KEY=$MODERATION_KEY
OUTPUT_ALLOWED_HOSTS=$allowed
JWKS_URL=$api_url/dev/jwks.json
JWT_ISSUER=picture-dev
JWT_AUDIENCE=manacore
SAM_CONTAINER_HOST=$host
SAM_API_PORT=$SAM_API_PORT
SAM_LAMBDA_PORT=$SAM_LAMBDA_PORT
SAM_SIM_PORT=$SAM_SIM_PORT
SAM_KEYS_PORT=$SAM_KEYS_PORT
ENV
  # The same settings for functions in `sam local` containers (sam.sh): the
  # services at $host, webhooks to `sam local start-api` (the simulator runs on
  # this host), the simulator and key set that sam.sh serves for containers.
  # SAM fills a variable the template declares, and this file does not name, from
  # the shell, i.e. from local.env: MODERATION_PROVIDER=openai would reach a
  # container that cannot reach the moderation simulator (the blocklist still runs).
  local sam_replicate=http://$host:$SAM_SIM_PORT sam_allowed=$host:$SAM_SIM_PORT
  [ "$replicate_url" = https://api.replicate.com ] && sam_replicate=$replicate_url sam_allowed=
  cat >"$DEV/sam-env.json" <<JSON
{
  "Parameters": {
    "APP_ENV": "${APP_ENV:-development}",
    "DATABASE_URL": "postgres://postgres@$host:$pg_port/picture?sslmode=disable",
    "AWS_ENDPOINT_URL": "http://$host:$MOTO_PORT",
    "AWS_ENDPOINT_URL_S3": "http://$host:$S3_PORT",
    "AWS_ENDPOINT_URL_DYNAMODB": "http://$host:$DYNAMODB_PORT",
    "S3_FORCE_PATH_STYLE": "true",
    "IMAGES_BUCKET": "picture-images",
    "RUNTIME_TABLE": "picture-runtime",
    "REPLICATE_API_BASE_URL": "$sam_replicate",
    "REPLICATE_API_TOKEN": "$token",
    "REPLICATE_WEBHOOK_SECRET": "$secret",
    "WEBHOOK_BASE_URL": "http://127.0.0.1:$SAM_API_PORT",
    "OUTPUT_ALLOWED_HOSTS": "$sam_allowed",
    "JWKS_URL": "http://$host:$SAM_KEYS_PORT/jwks.json",
    "JWT_ISSUER": "picture-dev",
    "JWT_AUDIENCE": "manacore",
    "CREDITS_PROVIDER": "ledger",
    "STRIPE_API_BASE_URL": "http://$host:$STRIPE_SIM_PORT",
    "STRIPE_SECRET_KEY": "$STRIPE_KEY",
    "STRIPE_WEBHOOK_SECRET": "$STRIPE_SECRET",
    "MODERATION_PROVIDER": "none",
    "RUST_LOG": "info"
  }
}
JSON
  log "settings in .dev/local.env, for sam local in .dev/sam-env.json"
}

down() {
  for f in "$DEV"/pids/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null && log "stopped $(basename "$f" .pid)"
    rm -f "$f"
  done
  if [ -f "$DEV/pgdata/postmaster.pid" ]; then
    su postgres -c "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl -D $DEV/pgdata -w stop" >&2 && log "stopped PostgreSQL (.dev/pgdata)"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: stack.sh up|down" >&2; exit 2 ;;
esac
