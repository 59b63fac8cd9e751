#!/bin/sh
# Runs every test of `make check`: the spec's test vectors, the unit tests
# (built with AddressSanitizer and UndefinedBehaviorSanitizer), and the
# end-to-end tests of the two binaries (sanitizer builds too). Prints one
# closing line "N passed, M failed" and exits non-zero on any failure.
#
# Every stage runs inside one throwaway PostgreSQL server (tools/pgtest.sh),
# which the PostgreSQL tests reach through LIPSYNC_PG_CONNINFO. They are not
# optional: if the server cannot start, the run fails.
set -u
cd "$(dirname "$0")/.." || exit 1

if [ "${1:-}" != "--inner" ]; then
  started=$(mktemp)
  trap 'rm -f "$started"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  LIPSYNC_CHECK_STARTED="$started" sh tools/pgtest.sh sh tools/check.sh --inner
  rc=$?
  if [ ! -s "$started" ]; then
    echo "check: PostgreSQL: the test server did not start (see above)"
    echo "0 passed, 1 failed"
    exit 1
  fi
  exit "$rc"
fi
[ -n "${LIPSYNC_CHECK_STARTED:-}" ] && echo started >"$LIPSYNC_CHECK_STARTED"

passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# Each stage's line gives the seconds it took (since the previous line).
stage_start=$(date +%s)
# A stage that fails leaves its failure lines (from its log, when given) for
# the closing summary, so that the last lines of a run say what failed.
count() { # name status passed failed [log]
  now=$(date +%s)
  echo "check: $1: $3 passed, $4 failed ($((now - stage_start)) s)"
  stage_start=$now
  passed=$((passed + $3))
  failed=$((failed + $4))
  if [ "$4" -gt 0 ]; then
    echo "  $1:" >>"$log/failures"
    if [ -n "${5:-}" ] && [ -f "$5" ]; then
      grep -E '^(FAIL|ERROR|XPASS)[: ]|FAILED|had failures|^load: .*(FAIL|fail)' \
        "$5" | grep -v ' 0 failed' | head -n 20 | sed 's/^/    /' \
        >>"$log/failures"
    fi
  fi
}

if [ -z "${LIPSYNC_PG_CONNINFO:-}" ]; then
  echo "check: LIPSYNC_PG_CONNINFO is not set: run sh tools/check.sh, which" \
    "starts a PostgreSQL server for the tests"
  count "PostgreSQL server" 1 0 1
fi

# 1. The spec's appendix matches an independent implementation.
if python3 spec/vectors.py --check spec/lipsync.md >"$log/vectors" 2>&1; then
  count "spec vectors" 0 1 0
else
  cat "$log/vectors"
  count "spec vectors" 1 0 1 "$log/vectors"
fi

# 2. Unit tests.
build/san/unit-tests >"$log/unit" 2>&1
rc=$?
cat "$log/unit"
line=$(grep -E '^ +tests +[0-9]+' "$log/unit" | tail -n 1)
if [ -n "$line" ]; then
  # shellcheck disable=SC2086 # split into words on purpose
  set -- $line
  count "unit tests" $rc "$4" $(($5 + (rc != 0 && $5 == 0))) "$log/unit"
else
  count "unit tests" 1 0 1 "$log/unit"
fi

# unittest_count NAME STATUS LOG...: a stage of Python unittest runs, from
# their -v logs: tests that failed (one "FAIL:" or "ERROR:" heading each,
# or several, for subtests and cleanups of one test), skips from the
# closing lines, e.g. "OK (skipped=1)" or "FAILED (failures=2, skipped=1)".
unittest_count() {
  name=$1 rc=$2
  shift 2
  ran=$(cat "$@" | sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' |
    awk '{s+=$1} END {print s+0}')
  bad=$(cat "$@" | sed -n 's/^\(FAIL\|ERROR\): \([^ ]* ([^)]*)\).*/\2/p' |
    sort -u | wc -l)
  skipped=$(cat "$@" | sed -n 's/^\(OK\|FAILED\) (\(.*\))$/\2/p' |
    tr ',' '\n' |
    sed -n 's/^ *\(skipped\|expected failures\)=\([0-9]*\)$/\2/p' |
    awk '{s+=$1} END {print s+0}')
  [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
  good=$((ran - bad - skipped))
  [ "$good" -lt 0 ] && good=0
  cat "$@" >"$log/unittest"
  count "$name" "$rc" "$good" "$bad" "$log/unittest"
}

# 3. End-to-end tests of the binaries over loopback TCP (test_cli.py), of
# their transports (test_transport.py), crashes, faults, hostile peers,
# reports and the installation: two processes at once, each taking the next
# test from a shared queue (tools/unittest_shard.py), as they mostly wait.
for i in 0 1; do
  (
    LIPSYNC_BIN=build/san/bin python3 tools/unittest_shard.py ref/tests/e2e \
      'test_*.py' "$log/e2e.queue" >"$log/e2e$i" 2>&1
    echo $? >"$log/e2e$i.rc"
  ) &
done
wait
cat "$log/e2e0" "$log/e2e1"
rc=$(($(cat "$log/e2e0.rc" 2>/dev/null || echo 1) + \
  $(cat "$log/e2e1.rc" 2>/dev/null || echo 1)))
unittest_count "end-to-end tests" $rc "$log/e2e0" "$log/e2e1"

# 4. The conformance suite against the reference binaries (build/bin), on
# SQLite and PostgreSQL: its own self-tests, then its tests.
python3 -m unittest discover -v -s conformance/tests >"$log/confself" 2>&1
rc=$?
[ "$rc" -ne 0 ] && cat "$log/confself"
unittest_count "conformance self-tests" $rc "$log/confself"
# conformance NAME ARGS...: one run of the suite, counted from its JSON.
conformance() {
  name=$1
  shift
  python3 conformance/run.py "$@" -j 4 --json "$log/conf.json" \
    >"$log/conf" 2>&1
  rc=$?
  cat "$log/conf"
  # shellcheck disable=SC2046 # two numbers
  set -- $(python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))["counts"]
print(c["pass"] + c["xfail"] + c["warn"], c["fail"] + c["xpass"] + c["error"])' \
    "$log/conf.json" 2>/dev/null || echo 0 0)
  good=${1:-0}
  bad=${2:-0}
  [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
  rm -f "$log/conf.json"
  count "$name" $rc "$good" "$bad" "$log/conf"
}
# The scale check (two syncs of 100,000 rows a pair) on the two pairs of
# one backend only; make conformance runs it on all four.
conformance "conformance suite" --impl conformance/impls/ref.impl \
  --backends sqlite,postgres --filter 'data/*' --filter 'wire/*' \
  --filter 'scale/sqlite-sqlite/*' --filter 'scale/postgres-postgres/*'
# The reference with the feature incremental against the reference
# without it, each one's client against the other's server (spec 8.8.5).
conformance "conformance cross matrix, with and without incremental" \
  --impl conformance/impls/ref.impl --peer conformance/impls/ref-plain.impl \
  --backends sqlite --filter 'cross/*'

# 5. The suite catches faults: broken variants of the reference must fail
# the tests that check what they break (conformance/selftest).
sh conformance/selftest/run.sh >"$log/selftest" 2>&1
rc=$?
cat "$log/selftest"
# shellcheck disable=SC2046 # two numbers
set -- $(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' \
  "$log/selftest") 0 1
count "conformance self-test on broken variants" $rc "$1" \
  $(($2 + (rc != 0 && $2 == 0))) "$log/selftest"

# 6. Load: one server serves many clients syncing at once, on SQLite and
# PostgreSQL, and two servers on one PostgreSQL database (tools/load.py), at
# a reduced size; `make bench` runs it at full size. One test a scenario.
python3 tools/load.py --clients 20 --rows 5000 >"$log/load" 2>&1
rc=$?
cat "$log/load"
# shellcheck disable=SC2046 # two numbers
set -- $(sed -n 's/^load: \([0-9]*\) passed, \([0-9]*\) failed.*$/\1 \2/p' \
  "$log/load") 0 1
count "load test" $rc "$1" $(($2 + (rc != 0 && $2 == 0))) "$log/load"

# 7. ThreadSanitizer: the multi-threaded server built with it (build/tsan)
# under the load test and the hostile-connection tests, with release
# clients. A report makes the server exit 66 on SIGTERM (and shows in its
# log), which both count as a failure.
tsan=build/tsan/load
mkdir -p "$tsan"
ln -sf ../bin/lipsync-server "$tsan/lipsync-server"
ln -sf ../../bin/lipsync-client "$tsan/lipsync-client"
python3 tools/load.py --clients 20 --rows 5000 --timeout 120 --bin "$tsan" \
  --rss-per-session 0 >"$log/tsan-load" 2>&1
rc=$?
cat "$log/tsan-load"
# shellcheck disable=SC2046 # two numbers
set -- $(sed -n 's/^load: \([0-9]*\) passed, \([0-9]*\) failed.*$/\1 \2/p' \
  "$log/tsan-load") 0 1
count "ThreadSanitizer, load test" $rc "$1" $(($2 + (rc != 0 && $2 == 0))) \
  "$log/tsan-load"
LIPSYNC_BIN=$tsan PYTHONPATH=ref/tests/e2e python3 -m unittest -v \
  test_cli.ServerLifecycleTest.test_connections_that_never_authenticate \
  test_cli.ServerLifecycleTest.test_max_clients_bounds_authenticated_sessions \
  test_cli.ServerLifecycleTest.test_sigterm_during_transfer \
  test_hostile >"$log/tsan-e2e" 2>&1
rc=$?
cat "$log/tsan-e2e"
unittest_count "ThreadSanitizer, hostile connections and shutdown" $rc \
  "$log/tsan-e2e"

# 8. Fuzzing, a regression run: every libFuzzer harness (fuzz/) over its
# checked-in corpus, the inputs that once crashed included; `make fuzz`
# searches for new ones. One test a harness.
sh fuzz/run.sh regress build/fuzz >"$log/fuzz" 2>&1
rc=$?
cat "$log/fuzz"
# shellcheck disable=SC2046 # two numbers
set -- $(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' \
  "$log/fuzz") 0 1
count "fuzz regression" $rc "$1" $(($2 + (rc != 0 && $2 == 0))) "$log/fuzz"

if [ -s "$log/failures" ]; then
  echo "check: what failed:"
  cat "$log/failures"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
