#!/usr/bin/env bash
# Builds the Azure Functions app zip: host.json, one folder per function with its function.json,
# and the Linux x86-64 `ade-backup` binary (exec bit set) at the zip's root, as the Functions host
# wants them (host.json's defaultExecutablePath is `ade-backup`).
#
# The binary is serve-only (`--no-default-features`: no simulator, no embedded local host), built
# release with cargo-zigbuild against glibc 2.28 (target x86_64-unknown-linux-gnu.2.28), so it runs
# on the Functions Linux image whatever glibc this machine has. ziglang and cargo-zigbuild come from
# PyPI and are installed with pip if missing.
#
# Usage: scripts/package.sh [--out DIR] [--bin PATH]
#   --out DIR   where the zip goes (default: target/package); writes DIR/ade-backup.zip
#   --bin PATH  package this binary instead of building one (the layout test uses the dev binary)
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/package
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --bin=*) bin=${1#--bin=}; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
TARGET=x86_64-unknown-linux-gnu
GLIBC=2.28

if [ -z "$bin" ]; then
  if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
    echo "== installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION (pip)"
    python3 -m pip install --quiet --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
    hash -r
  fi
  echo "== cargo zigbuild --release --target $TARGET.$GLIBC --no-default-features (serve-only)"
  cargo zigbuild --release --locked --target "$TARGET.$GLIBC" \
    -p ade-backup-functions --bin ade-backup --no-default-features
  bin="${CARGO_TARGET_DIR:-target}/$TARGET/release/ade-backup"
fi
[ -x "$bin" ] || { echo "package.sh: $bin is not an executable" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
app="$out/app"
rm -rf "$app"
mkdir -p "$app"
cp host.json "$app/host.json"
for f in functions/*/function.json; do
  name=$(basename "$(dirname "$f")")
  mkdir -p "$app/$name"
  cp "$f" "$app/$name/function.json"
done
cp "$bin" "$app/ade-backup"
chmod 0755 "$app/ade-backup"
# The symbol table is only for debuggers (panics still print their message and location): strip it
# from the shipped copy, keeping the build's own binary as it is. `strip` comes with binutils (gcc);
# zig's objcopy is the fallback when a machine has no binutils.
before=$(stat -c %s "$app/ade-backup")
if command -v strip >/dev/null; then
  strip --strip-all "$app/ade-backup"
elif python3 -c 'import ziglang' 2>/dev/null; then
  python3 -m ziglang objcopy --strip-all "$app/ade-backup" "$app/ade-backup.stripped"
  mv "$app/ade-backup.stripped" "$app/ade-backup"
  chmod 0755 "$app/ade-backup"
else
  echo "package.sh: neither strip nor ziglang found; the binary is shipped unstripped" >&2
fi
after=$(stat -c %s "$app/ade-backup")
echo "== binary: $before bytes built, $after bytes shipped (stripped)"

# Python's zipfile keeps no mode by itself: each entry gets its Unix mode in external_attr (the
# Functions host runs the binary from the unpacked or mounted zip, so the exec bit must be there).
zip="$out/ade-backup.zip"
rm -f "$zip"
python3 - "$app" "$zip" <<'PY'
import os, stat, sys, zipfile
app, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk(app):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            arc = os.path.relpath(path, app)
            info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3  # Unix: external_attr's high 16 bits are the mode
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
PY

echo "== $zip"
python3 -m zipfile -l "$zip"
size() { stat -c %s "$1"; }
echo "binary: $(size "$app/ade-backup") bytes; zip: $(size "$zip") bytes"
if command -v objdump >/dev/null; then
  need=$(objdump -T "$app/ade-backup" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)
  echo "highest glibc symbol version the binary needs: ${need:-none}"
fi
