#!/usr/bin/env bash
# `sam local` against the local stack (docs/local.md, "sam local").
#
#   sam.sh invoke FUNCTION EVENT   one `sam local invoke` (DEV_TOKEN replaced by a fresh token)
#   sam.sh test                    every event of events/manifest.json through `sam local
#                                  start-lambda`, then the API through `sam local start-api`
#   sam.sh token [USER_ID]         a token the containers' key set accepts (last line)
#
# Both first make sure of: the local stack (stack.sh up: .dev/local.env and
# .dev/sam-env.json), a container engine (sam-engine.sh), what containers need
# on the host (below), and the functions built for this host (`cargo build`,
# debug, linked as .dev/sam/build/<LogicalId>/bootstrap with a template
# pointing at them: no cargo-lambda, no zip, no copy).
#
# What containers reach, at SAM_CONTAINER_HOST (in .dev/local.env):
# - PostgreSQL, moto, DynamoDB, S3 and the Stripe simulator through socat forwarders on the
#   container bridge's gateway address (podman 10.88.0.1, Docker 172.17.0.1) on
#   the same ports; the services themselves stay on 127.0.0.1. Presigned image
#   URLs are signed for http://<gateway>:5002, which the host reaches too.
# - A simulator of its own (SAM_SIM_PORT) whose output URLs name the gateway
#   address, so a function in a container can download them.
# - The dev key set (SAM_KEYS_PORT), a copy of .dev/jwks.json and nothing else.
# On macOS, Docker Desktop reaches the host's 127.0.0.1 as host.docker.internal
# itself: no forwarders.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEV=$ROOT/.dev
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
DEV_TOOL=$ROOT/target/debug/picture-dev
SAM_DIR=$DEV/sam
# The origin the API allows under sam local (the template's CorsOrigins).
export SAM_CORS_ORIGIN=${SAM_CORS_ORIGIN:-http://localhost:5173}
log() { echo "sam: $*" >&2; }

# --- the local stack and what containers need -------------------------------

forward() { # host, port: a forwarder from host:port to 127.0.0.1:port, unless one listens
  ss -Hltn "sport = :$2" | awk '{print $4}' | grep -qx "$1:$2" && return 0
  nohup socat "TCP-LISTEN:$2,bind=$1,reuseaddr,fork" "TCP:127.0.0.1:$2" >"$DEV/logs/forward-$2.log" 2>&1 &
  echo $! >"$DEV/pids/forward-$2.pid"
  for _ in $(seq 1 30); do ss -Hltn "sport = :$2" | grep -q "$1:$2" && return 0; sleep 0.1; done
  log "the forwarder $1:$2 did not start; see .dev/logs/forward-$2.log"; return 1
}

serve_bg() { # name, url to wait for, command...
  local name=$1 url=$2 pid port; shift 2
  pid=$(cat "$DEV/pids/$name.pid" 2>/dev/null || true)
  if curl -s -o /dev/null "$url"; then
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
    # Another checkout's server on our port (it would serve its own key set): ours replaces it.
    port=${url#*://*:}; port=${port%%/*}
    for pid in $(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      log "$name: stopping another checkout's server on :$port (pid $pid)"
      kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do curl -s -o /dev/null "$url" || break; sleep 0.1; done
  fi
  nohup "$@" >"$DEV/logs/$name.log" 2>&1 &
  echo $! >"$DEV/pids/$name.pid"
  for _ in $(seq 1 100); do curl -s -o /dev/null "$url" && return 0; sleep 0.1; done
  log "$name did not start; see .dev/logs/$name.log"; return 1
}

up() { # [test]: the tests' own database and bucket instead of the dev store
  bash infra/scripts/stack.sh up
  set -a; . "$DEV/local.env"; set +a
  local env_file=$DEV/sam-env.json
  if [ "${1:-}" = test ]; then
    export DATABASE_URL=$TEST_DATABASE_URL IMAGES_BUCKET=$TEST_IMAGES_BUCKET
    env_file=$DEV/sam-env-test.json
    python3 - "$DEV/sam-env.json" "$env_file" "${TEST_DATABASE_URL##*/}" "$TEST_IMAGES_BUCKET" <<'PY'
import json, sys
src, out, db, bucket = sys.argv[1:]
env = json.load(open(src))
p = env["Parameters"]
server, rest = p["DATABASE_URL"].rsplit("/", 1)
p["DATABASE_URL"] = server + "/" + db + ("?" + rest.split("?", 1)[1] if "?" in rest else "")
p["IMAGES_BUCKET"] = bucket
# After `make test` the tests' store holds thousands of users active today: a run in
# the first interval of an hour audits them until its budget ends (115 s with the
# template's 120). A shorter budget keeps that sample's run short.
env["ReconcileFunction"] = {"FUNCTION_TIMEOUT_SECONDS": "30"}
json.dump(env, open(out, "w"), indent=2)
PY
  fi
  cargo build -q -p picture-dev
  "$DEV_TOOL" migrate && "$DEV_TOOL" setup
  DOCKER_HOST=$(bash infra/scripts/sam-engine.sh)
  export DOCKER_HOST
  mkdir -p "$SAM_DIR/keys"
  serve_bg sam-keys "http://127.0.0.1:$SAM_KEYS_PORT/" \
    python3 -m http.server --bind 127.0.0.1 --directory "$SAM_DIR/keys" "$SAM_KEYS_PORT"
  SIM_API_TOKEN=r8_sim_token SIM_WEBHOOK_SECRET=$REPLICATE_WEBHOOK_SECRET \
    SIM_PUBLIC_URL=http://$SAM_CONTAINER_HOST:$SAM_SIM_PORT \
    serve_bg sam-replicate-sim "http://127.0.0.1:$SAM_SIM_PORT/health" \
    "$VENV/bin/python" infra/replicate-sim/sim.py --host 127.0.0.1 --port "$SAM_SIM_PORT"
  if [ "$SAM_CONTAINER_HOST" != host.docker.internal ]; then
    local port
    for port in "${DATABASE_URL##*:}" "${AWS_ENDPOINT_URL##*:}" "${AWS_ENDPOINT_URL_S3##*:}" \
      "${AWS_ENDPOINT_URL_DYNAMODB##*:}" "${STRIPE_API_BASE_URL##*:}" "$SAM_SIM_PORT" "$SAM_KEYS_PORT"; do
      forward "$SAM_CONTAINER_HOST" "${port%%/*}"
    done
  fi
  ARCH=$(uname -m); [ "$ARCH" = aarch64 ] && ARCH=arm64
  SAM_ARGS=(--template "$SAM_DIR/template.yaml" --env-vars "$env_file" --region "$AWS_REGION"
    --parameter-overrides "Architecture=$ARCH" "CorsOrigins=$SAM_CORS_ORIGIN")
  # The stand-in base image cannot be pulled: use it as it is.
  [ "$DOCKER_HOST" = unix:///run/podman/podman.sock ] && SAM_ARGS+=(--skip-pull-image)
  # SAM hands the functions the credentials of its own session: the local stack's.
  export SAM_CLI_TELEMETRY=0 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
  export PATH=$VENV/bin:$PATH
}

# A token for USER_ID (default: the example user of docs/api.md); publishes the key set.
token() {
  "$DEV_TOOL" token "${1:-6f1d2c3b-8a4e-4f00-9c1a-000000000001}"
  cp "$DEV/jwks.json" "$SAM_DIR/keys/jwks.json"
}

# --- build -------------------------------------------------------------------

build() {
  [ "$(uname -s)" = Linux ] || { log "builds for the container need a Linux host: see docs/local.md, "sam local" (on macOS: sam build)"; exit 2; }
  local bins
  bins=$(sed -n 's/^ *Binary: *//p' template.yaml | sort -u)
  # shellcheck disable=SC2046
  cargo build -q $(printf -- '-p %s ' $bins)
  "$VENV/bin/python" - "$ROOT" "$SAM_DIR" <<'PY'
import os, sys
from samcli.yamlhelper import yaml_dump, yaml_parse
root, out = sys.argv[1], sys.argv[2]
with open(os.path.join(root, "template.yaml")) as f:
    template = yaml_parse(f.read())
# sam local does not evaluate conditions, and the optional secrets layer is an !If.
template["Globals"]["Function"].pop("Layers")
# Nor the API's CorsConfiguration (an !If over CorsOrigins): the branch for the origins given.
api = template["Resources"]["HttpApi"]["Properties"]
cors = api.get("CorsConfiguration", {}).get("Fn::If")
if cors:
    api["CorsConfiguration"] = dict(cors[1], AllowOrigins=os.environ["SAM_CORS_ORIGIN"].split(","))
for name, res in template["Resources"].items():
    if res["Type"] != "AWS::Serverless::Function":
        continue
    binary = res.pop("Metadata")["BuildProperties"]["Binary"]
    code = os.path.join(out, "build", name)
    os.makedirs(code, exist_ok=True)
    bootstrap = os.path.join(code, "bootstrap")
    if os.path.exists(bootstrap):
        os.remove(bootstrap)
    # A hard link: a bind mount cannot follow a symlink out of the directory.
    os.link(os.path.join(root, "target", "debug", binary), bootstrap)
    res["Properties"]["CodeUri"] = os.path.join("build", name)
with open(os.path.join(out, "template.yaml"), "w") as f:
    f.write(yaml_dump(template))
PY
}

# --- commands ----------------------------------------------------------------

invoke() { # FUNCTION EVENT
  [ -n "${1:-}" ] && [ -f "${2:-}" ] || { echo "usage: make sam-invoke FUNCTION=<LogicalId> EVENT=<file> [USER_ID=<uuid>]" >&2; exit 2; }
  local user=${3:-}
  up
  build
  local event="$SAM_DIR/event.json" tok
  tok=$(token "$user")
  sed "s/DEV_TOKEN/$tok/" "$2" >"$event"
  sam local invoke "$1" --event "$event" "${SAM_ARGS[@]}"
}

test_all() {
  up test
  build
  # The checker mints its tokens through this script, which also publishes the key set.
  SAM_TOKEN_CMD="bash $0 token" exec "$VENV/bin/python" infra/scripts/sam_test.py "${SAM_ARGS[@]}"
}

case "${1:-}" in
  invoke) shift; invoke "$@" ;;
  test) test_all ;;
  token) set -a; . "$DEV/local.env"; set +a; token "${2:-}" ;;
  *) echo "usage: sam.sh invoke FUNCTION EVENT [USER_ID] | test | token [USER_ID]" >&2; exit 2 ;;
esac
