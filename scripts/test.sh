#!/usr/bin/env bash
# The whole test suite, as a new user or CI runs it: installs Azurite (npm) if needed, then runs
# every Rust test. The Azurite-backed tests start and stop their own Azurite on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f package-lock.json ] && [ ! -x node_modules/.bin/azurite-blob ]; then
  echo "== installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
# moto (the AWS emulator of the Lambda build's tests, lambda/tests): a pinned venv under target/.
bash scripts/install-moto.sh
# Benchmarks (tests/benches, harness = false) print figures and are run on purpose with
# `cargo bench`, so the suite names the test targets explicitly instead of --all-targets.
echo "== cargo test --workspace (lib, bins, tests)"
cargo test --workspace --lib --bins --tests "$@"
echo "== cargo test --workspace --doc"
cargo test --workspace --doc "$@"
