#!/usr/bin/env bash
# Installs the pinned moto server (the AWS emulator of the Lambda build's tests: SQS, S3) into
# a venv under target/, once. test-support's `moto::Moto` starts it on a free port per test.
set -euo pipefail
cd "$(dirname "$0")/.."
# 5.2.5 implements S3 conditional writes (PutObject If-None-Match and If-Match, 412 on failure),
# which the S3 state store's contract tests depend on.
MOTO_VERSION=5.2.5
venv="${CARGO_TARGET_DIR:-target}/moto-venv"
if ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "== installing moto[server] $MOTO_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
