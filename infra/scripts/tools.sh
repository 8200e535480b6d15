#!/usr/bin/env bash
# Installs the Python-side tools the project needs into one virtualenv, reused
# across clones: moto (S3 + DynamoDB emulator), Pillow (Replicate simulator
# images), aws-sam-cli + cfn-lint (template checks), cargo-lambda (+ zig) and
# schemathesis (`make fuzz`).
# Idempotent: a marker file records the installed set.
set -euo pipefail
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
PKGS=("moto[server]==5.*" "Pillow>=10" "pytest" "aws-sam-cli" "cfn-lint" "cargo-lambda" "schemathesis==4.*")
MARKER="$VENV/.picture-tools"
want="${PKGS[*]}"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$MARKER" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "tools: installing ${PKGS[*]} into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
echo "$want" > "$MARKER"
