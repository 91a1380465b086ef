#!/usr/bin/env bash
# Builds the AWS Lambda package: ade-backup-lambda.zip with the `bootstrap` executable (mode 0755)
# at its root, as the provided.al2023 OS-only runtime wants it (it runs /var/task/bootstrap; AWS
# Lambda Developer Guide, "Building Lambda functions with Rust" and "OS-only runtimes").
#
# The binary is built release for x86_64 with cargo-zigbuild against glibc 2.28, like
# scripts/package.sh (this machine has only the x86_64-unknown-linux-gnu target; Amazon Linux 2023
# has glibc 2.34, so the highest GLIBC_ symbol version the binary needs is checked against 2.34
# with objdump). Both scripts build into the same target directory and target triple, so CI
# compiles the dependencies they share once. ziglang and cargo-zigbuild are pip-installed if
# missing.
#
# Usage: scripts/package-lambda.sh [--out DIR] [--bin PATH]
#   --out DIR   where the zip goes (default: target/package); writes DIR/ade-backup-lambda.zip
#   --bin PATH  package this binary instead of building one (the package test uses the dev binary)
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/package
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-lambda.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
TARGET=x86_64-unknown-linux-gnu
GLIBC=2.28
# Amazon Linux 2023's glibc (AWS Lambda Developer Guide, "Lambda runtimes": provided.al2023).
AL2023_GLIBC=2.34

if [ -z "$bin" ]; then
  if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
    echo "== installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION (pip)"
    python3 -m pip install --quiet --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    hash -r
  fi
  echo "== cargo zigbuild --release --target $TARGET.$GLIBC -p ade-backup-lambda"
  started=$(date +%s)
  cargo zigbuild --release --locked --target "$TARGET.$GLIBC" -p ade-backup-lambda --bin ade-backup-lambda
  echo "== release build: $(( $(date +%s) - started )) s"
  bin="${CARGO_TARGET_DIR:-target}/$TARGET/release/ade-backup-lambda"
fi
[ -x "$bin" ] || { echo "package-lambda.sh: $bin is not an executable" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/bootstrap"
chmod 0755 "$stage/bootstrap"
# The symbol table is only for debuggers; panics still print their message and location.
if command -v strip >/dev/null; then
  strip --strip-all "$stage/bootstrap"
elif python3 -c 'import ziglang' 2>/dev/null; then
  python3 -m ziglang objcopy --strip-all "$stage/bootstrap" "$stage/bootstrap.stripped"
  mv "$stage/bootstrap.stripped" "$stage/bootstrap"
  chmod 0755 "$stage/bootstrap"
else
  echo "package-lambda.sh: neither strip nor ziglang found; bootstrap is shipped unstripped" >&2
fi
echo "== bootstrap: $(stat -c %s "$bin") bytes built, $(stat -c %s "$stage/bootstrap") bytes shipped"
if command -v objdump >/dev/null; then
  need=$(objdump -T "$stage/bootstrap" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1 || true)
  echo "== highest glibc symbol version bootstrap needs: ${need:-none} (Amazon Linux 2023 has $AL2023_GLIBC)"
  if [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$need" "$AL2023_GLIBC" | sort -V | tail -1)" != "$AL2023_GLIBC" ]; then
    echo "package-lambda.sh: bootstrap needs glibc $need, newer than provided.al2023's $AL2023_GLIBC" >&2
    exit 1
  fi
fi

zip="$out/ade-backup-lambda.zip"
rm -f "$zip"
# Python's zipfile keeps no mode by itself: the entry gets its Unix mode in external_attr (Lambda
# runs bootstrap from the unpacked zip, so the exec bit must be there).
python3 - "$stage/bootstrap" "$zip" <<'PY'
import stat, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
    info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3  # Unix: external_attr's high 16 bits are the mode
    info.external_attr = (stat.S_IFREG | 0o755) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f:
        z.writestr(info, f.read())
PY
echo "== wrote $zip"
echo "bootstrap: $(stat -c %s "$stage/bootstrap") bytes; zip: $(stat -c %s "$zip") bytes"
