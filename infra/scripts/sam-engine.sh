#!/usr/bin/env bash
# A container engine for `sam local`. Prints the DOCKER_HOST to use (empty: the
# default Docker socket) on stdout; everything else goes to stderr.
#
# - With a Docker engine (DOCKER_HOST, or /var/run/docker.sock answering), it is used as is.
# - Otherwise (Linux, no Docker engine) it sets up rootful podman as
#   docs/local.md ("sam local", "Linux with podman") describes it:
#   runc, cgroupfs, file events log, vfs storage, default ulimits within the
#   hard limits, and `podman system service` on /run/podman/podman.sock.
#   When public.ecr.aws cannot be pulled it builds a stand-in for
#   public.ecr.aws/lambda/provided:al2023 with debootstrap.
#
# Idempotent: every step checks first, so a second run takes about a second
# (podman's storage keeps the base image between runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEV=$PWD/.dev
SOCK=/run/podman/podman.sock
BASE=public.ecr.aws/lambda/provided
mkdir -p "$DEV/logs"
log() { echo "sam-engine: $*" >&2; }

docker_answers() { # [DOCKER_HOST]
  DOCKER_HOST=${1:-} timeout 10 docker info >/dev/null 2>&1
}
podman_answers() { curl -sf --max-time 5 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }

if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix://$SOCK" ]; then
  docker_answers "$DOCKER_HOST" || { log "DOCKER_HOST=$DOCKER_HOST does not answer"; exit 1; }
  echo "$DOCKER_HOST"; exit 0
fi
if [ "$(uname -s)" != Linux ] || { [ -S /var/run/docker.sock ] && command -v docker >/dev/null && docker_answers; }; then
  echo ""; exit 0
fi

# --- podman ----------------------------------------------------------------
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null || ! command -v socat >/dev/null; then
  log "installing podman, runc, debootstrap, socat (about 30 s; log: .dev/logs/apt.log)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap socat) >"$DEV/logs/apt.log" 2>&1 ||
    { log "apt-get failed; see .dev/logs/apt.log"; exit 1; }
fi

# Writes FILE with CONTENT unless it already has it; returns 0 if it changed.
write_conf() { # file, content
  if [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then
    mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" >"$1" && return 0
  fi
  return 1
}
changed=0
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nproc" = unlimited ] && nproc=65536
[ "$nofile" -gt 20000 ] && nofile=20000
[ "$nproc" -gt 4096 ] && nproc=4096
write_conf /etc/containers/containers.conf "# Written by picture's infra/scripts/sam-engine.sh (podman for sam local).
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"" && changed=1
write_conf /etc/containers/storage.conf '# Written by picture'"'"'s infra/scripts/sam-engine.sh (podman for sam local).
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"' && changed=1

PID_FILE=/run/podman/picture-service.pid
# The service outlives the checkout that started it: one whose directory is gone (a
# deleted clone) can no longer start containers ("write child: broken pipe").
if [ -f "$PID_FILE" ] && readlink "/proc/$(cat "$PID_FILE")/cwd" | grep -q '(deleted)$'; then changed=1; fi
if [ "$changed" = 1 ] && [ -f "$PID_FILE" ]; then
  kill "$(cat "$PID_FILE")" 2>/dev/null || true; rm -f "$PID_FILE"; sleep 1
fi
if ! podman_answers; then
  log "starting podman system service on $SOCK (log: /var/log/picture-podman-service.log)"
  mkdir -p /run/podman
  # From /, and logging outside the checkout, so that it does not depend on this one.
  (cd / && exec nohup podman system service --time=0 "unix://$SOCK" >/var/log/picture-podman-service.log 2>&1) &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 50); do podman_answers && break; sleep 0.2; done
  podman_answers || { log "podman's API did not come up; see /var/log/picture-podman-service.log"; exit 1; }
fi

# --- base image --------------------------------------------------------------
arch=$(uname -m); [ "$arch" = aarch64 ] && arch=arm64
if ! podman image exists "$BASE:al2023-$arch"; then
  if timeout 120 podman pull -q "$BASE:al2023-$arch" >&2 2>/dev/null; then
    log "pulled $BASE:al2023-$arch"
  else
    log "$BASE cannot be pulled: building a Debian stand-in with debootstrap (about 90 s, once)"
    root=$(mktemp -d /var/tmp/picture-lambda-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" >"$DEV/logs/debootstrap.log" 2>&1 ||
      { log "debootstrap failed; see .dev/logs/debootstrap.log"; exit 1; }
    mkdir -p "$root/var/runtime" "$root/var/task" "$root/opt" "$root/var/rapid"
    tar -C "$root" -cf - . | podman import --quiet \
      --change 'ENV LAMBDA_TASK_ROOT=/var/task' --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
      --change 'WORKDIR /var/task' --change 'ENTRYPOINT ["/var/rapid/aws-lambda-rie"]' \
      --change 'CMD ["bootstrap"]' - "$BASE:al2023-$arch" >&2
    podman tag "$BASE:al2023-$arch" "$BASE:al2023"
  fi
fi

# --- the bridge --------------------------------------------------------------
# sam.sh's forwarders listen on the bridge's gateway address (10.88.0.1), and
# image URLs signed for it open from the host too. netavark deletes the bridge
# when its last container leaves, so a sleeping container keeps it up.
if [ "$(podman inspect -f '{{.State.Running}}' picture-sam-bridge 2>/dev/null)" != true ]; then
  log "starting the container picture-sam-bridge (keeps podman's bridge, 10.88.0.1, up)"
  podman rm -f picture-sam-bridge >/dev/null 2>&1 || true
  podman run -d --name picture-sam-bridge --network podman --stop-signal KILL --entrypoint /bin/sleep "$BASE:al2023-$arch" infinity >/dev/null
fi
echo "unix://$SOCK"
