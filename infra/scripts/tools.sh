#!/usr/bin/env bash
# Installs the tools the project needs, reused across clones: s3s-fs (the
# local S3, persistent on disk) with cargo into PICTURE_TOOLS, and the
# Python-side tools into one virtualenv: moto (DynamoDB emulator), Pillow
# (Replicate simulator images), stripe, openai and replicate (the official libraries,
# which check the Stripe, moderation and Replicate simulators), aws-sam-cli + cfn-lint (template checks),
# cargo-lambda (+ zig) and schemathesis (`make fuzz`).
# Idempotent: s3s-fs is installed if its version differs, the virtualenv if a
# marker file does not record the wanted set.
set -euo pipefail
TOOLS="${PICTURE_TOOLS:-$HOME/.cache/picture-tools}"
S3S_FS_VERSION=0.14.1 # later versions need a newer rustc
if [ "$("$TOOLS/bin/s3s-fs" --version 2>/dev/null)" != "s3s-fs $S3S_FS_VERSION" ]; then
  echo "tools: installing s3s-fs $S3S_FS_VERSION into $TOOLS (about 2 minutes)" >&2
  cargo install --quiet --locked --root "$TOOLS" s3s-fs --version "$S3S_FS_VERSION" --features binary >&2
fi
VENV="${PICTURE_VENV:-$HOME/.cache/picture-venv}"
PKGS=("moto[server]==5.*" "Pillow>=10" "pytest" "stripe==16.*" "openai==3.*" "replicate==1.0.*" "aws-sam-cli" "cfn-lint" "cargo-lambda" "schemathesis==4.*")
MARKER="$VENV/.picture-tools"
want="${PKGS[*]}"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$MARKER" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "tools: installing ${PKGS[*]} into $VENV" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
echo "$want" > "$MARKER"
