#!/bin/sh
# Installs the Debian packages LipSync needs to build and test, if missing.
# Used by `make check`, `make demo` and `make bench`; safe to run often.
# PostgreSQL: libpq to build, and a server and psql for the tests, which
# start a throwaway cluster of their own (tools/pgtest.sh); the cluster the
# package may create is not used. openssl makes the tests' certificates;
# the ssh test starts its own sshd on loopback (the system's is not used);
# clang and its runtime build the libFuzzer harnesses (fuzz/); binutils,
# man-db and groff check the installed library and man pages.
set -eu

PKGS="gcc make pkg-config protobuf-c-compiler libprotobuf-c-dev libsqlite3-dev
libssl-dev libcunit1-dev python3 sqlite3 libpq-dev postgresql postgresql-client
openssl openssh-server openssh-client clang libclang-rt-14-dev binutils man-db
groff-base"

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
# apt's chatter is shown only when it fails.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -q &&
  $SUDO apt-get install -y -q --no-install-recommends $missing; } >"$out" 2>&1
then
  cat "$out" >&2
  echo "deps: apt-get failed; install these packages by hand:$missing" >&2
  exit 1
fi
