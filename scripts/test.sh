#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it: installs Azurite (npm) if needed, then runs
# every Rust test. The Azurite-backed tests start and stop their own Azurite on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f package-lock.json ] && [ ! -x node_modules/.bin/azurite-blob ]; then
  echo "== installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "== cargo test --workspace"
cargo test --workspace --all-targets "$@"
