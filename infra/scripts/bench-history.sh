#!/usr/bin/env bash
# `make bench-history [PROFILE=release|debug] [RUNS=30]`: history cost against the user's size
# (docs/performance.md, "History at 50,000 generations"). A database of its own
# (picture_bench_history, recreated each run and dropped after), migrated with picture-dev,
# then bench-history seeds it and times the history route through the API's router.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE="${PROFILE:-release}"
RUNS="${RUNS:-30}"

bash infra/scripts/stack.sh up
cargo build -q -p picture-dev
if [ "$PROFILE" = release ]; then cargo build -q --release -p bench-history; else cargo build -q -p bench-history; fi
set -a && . ./.dev/local.env && set +a
export DATABASE_URL=${DATABASE_URL%/*}/picture_bench_history
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -qc 'DROP DATABASE IF EXISTS picture_bench_history WITH (FORCE)' -c 'CREATE DATABASE picture_bench_history'
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS picture_bench_history WITH (FORCE)"' EXIT
target/debug/picture-dev migrate
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); bench-history $PROFILE; $(psql "$DATABASE_URL" -Atc 'SHOW server_version')"
"target/$PROFILE/bench-history" "$RUNS"
