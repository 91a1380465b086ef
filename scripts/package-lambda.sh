#!/usr/bin/env bash
# Builds the AWS Lambda package: ade-backup-lambda.zip with the `bootstrap` executable at its root
# (the provided.al2023 custom runtime runs /var/task/bootstrap; AWS Lambda Developer Guide,
# "Building Lambda functions with Rust" / "OS-only runtimes"). The binary is built release with
# cargo-zigbuild against glibc 2.28 for x86_64 (Amazon Linux 2023 has glibc 2.34), the same
# toolchain as scripts/package.sh; ziglang and cargo-zigbuild are pip-installed if missing.
#
# Usage: scripts/package-lambda.sh [--out DIR]   (default target/package; writes DIR/ade-backup-lambda.zip)
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/package
case "${1:-}" in
  --out) out=${2:?--out needs a directory} ;;
  "") ;;
  *) echo "package-lambda.sh: unknown argument $1" >&2; exit 2 ;;
esac

ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
TARGET=x86_64-unknown-linux-gnu
GLIBC=2.28
if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
  echo "== installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION (pip)"
  python3 -m pip install --quiet --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
  hash -r
fi
echo "== cargo zigbuild --release --target $TARGET.$GLIBC -p ade-backup-lambda"
cargo zigbuild --release --locked --target "$TARGET.$GLIBC" -p ade-backup-lambda --bin ade-backup-lambda
bin="${CARGO_TARGET_DIR:-target}/$TARGET/release/ade-backup-lambda"

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/bootstrap"
chmod 0755 "$stage/bootstrap"
if command -v strip >/dev/null; then strip --strip-all "$stage/bootstrap"; fi
echo "== bootstrap: $(stat -c %s "$bin") bytes built, $(stat -c %s "$stage/bootstrap") bytes shipped"
python3 - "$stage/bootstrap" "$out/ade-backup-lambda.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = (0o100755 << 16)
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f:
        z.writestr(info, f.read())
PY
echo "== wrote $out/ade-backup-lambda.zip ($(stat -c %s "$out/ade-backup-lambda.zip") bytes)"
