#!/bin/sh
# Installs the Debian packages LipSync needs to build and test, if missing.
# Used by `make check`, `make demo` and `make bench`; safe to run often.
set -eu

PKGS="gcc make pkg-config protobuf-c-compiler libprotobuf-c-dev libsqlite3-dev
libssl-dev libcunit1-dev python3 sqlite3"

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: apt-get not found; install these packages by hand:$missing" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
