#!/bin/sh
# Runs every test of `make check`: the spec's test vectors, the unit tests
# (built with AddressSanitizer and UndefinedBehaviorSanitizer), and the
# end-to-end tests of the two binaries (sanitizer builds too). Prints one
# closing line "N passed, M failed" and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

count() { # name status passed failed
  echo "check: $1: $3 passed, $4 failed"
  passed=$((passed + $3))
  failed=$((failed + $4))
}

# 1. The spec's appendix matches an independent implementation.
if python3 spec/vectors.py --check spec/lipsync.md >"$log/vectors" 2>&1; then
  count "spec vectors" 0 1 0
else
  cat "$log/vectors"
  count "spec vectors" 1 0 1
fi

# 2. Unit tests.
build/san/unit-tests >"$log/unit" 2>&1
rc=$?
cat "$log/unit"
line=$(grep -E '^ +tests +[0-9]+' "$log/unit" | tail -n 1)
if [ -n "$line" ]; then
  set -- $line
  count "unit tests" $rc "$4" $(($5 + (rc != 0 && $5 == 0)))
else
  count "unit tests" 1 0 1
fi

# 3. End-to-end tests of the binaries over loopback TCP.
LIPSYNC_BIN=build/san/bin python3 ref/tests/e2e/test_cli.py >"$log/e2e" 2>&1
rc=$?
cat "$log/e2e"
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' "$log/e2e" | tail -n 1)
bad=$(sed -n 's/.*FAILED (\(.*\))/\1/p' "$log/e2e" | tr ',' '\n' |
  sed -n 's/.*=\([0-9]*\)/\1/p' | awk '{s+=$1} END {print s+0}')
ran=${ran:-0}
[ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
count "end-to-end tests" $rc $((ran - bad < 0 ? 0 : ran - bad)) "$bad"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
