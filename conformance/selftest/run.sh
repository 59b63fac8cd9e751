#!/bin/sh
# The conformance suite's self-test: proves the suite catches faults.
#
# Builds the reference with fault injection (conformance/faults.mk, -DLIPSYNC_
# FAULTS; ref/src/fault.h), runs the suite against each deliberately broken
# variant conformance/impls/broken-<fault>.impl (SQLite only: no PostgreSQL
# server is needed), and checks each JSON result against
# conformance/selftest/expected.txt. A variant the suite does not catch, or
# catches with the wrong tests, fails the self-test. A control run of the same
# fault build with no fault switched on must pass every test (expected.txt's
# "control" lines), so each failure is the fault's doing, not the build's.
# The runs go in parallel; the whole self-test takes about two minutes.
#
# Usage: sh conformance/selftest/run.sh [FAULT]...   (default: every variant
# of expected.txt). Prints one line per variant and "N passed, M failed";
# exits 0 only if every variant was caught as expected.
set -u
set -f # test-name globs are words of expected.txt, never file names
unset LIPSYNC_FAULT # each variant's .impl sets its own
cd "$(dirname "$0")/../.." || exit 1
root=$(pwd)
expected=conformance/selftest/expected.txt
PYTHON=${PYTHON:-python3}

work=$(mktemp -d "${TMPDIR:-/tmp}/lipsync-selftest.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Makefile may include conformance/faults.mk itself.
mk="-f Makefile -f conformance/faults.mk"
grep -q '^[[:space:]]*-\{0,1\}include[[:space:]].*conformance/faults\.mk' \
  Makefile && mk="-f Makefile"
# shellcheck disable=SC2086 # $mk: several words on purpose
if ! make -s $mk build/fault/bin/lipsync-server build/fault/bin/lipsync-client \
  >"$work/build.log" 2>&1; then
  cat "$work/build.log"
  echo "selftest: cannot build the fault-injection binaries"
  echo "0 passed, 1 failed"
  exit 1
fi

# The variants, in expected.txt order (or those named on the command line).
if [ $# -gt 0 ]; then
  variants=$*
else
  variants=$(sed -n 's/^[[:space:]]*\([a-z0-9-]*\)[[:space:]].*/\1/p' \
    "$expected" | grep -v '^control$' | awk '!seen[$0]++')
fi

# The control: the fault build with LIPSYNC_FAULT unset (an .impl with
# absolute program paths, so it may live outside the repository).
sed -e '/^env[[:space:]]*=/d' -e 's/^name[[:space:]]*=.*/name = fault-build-no-fault/' \
  -e "s#build/fault/bin/#$root/build/fault/bin/#g" \
  conformance/impls/broken-skip-row.impl >"$work/control.impl"

# The evaluator: one variant's JSON results against expected.txt.
cat >"$work/verdict.py" <<'PYEOF'
import fnmatch, json, sys

expected, variant, results, rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# Tests the control failed too: not held against a variant's `pass` lines
# (the control's own line reports them).
control_bad = set()
if variant != "control" and len(sys.argv) > 5:
    try:
        with open(sys.argv[5]) as f:
            control_bad = {t["name"] for t in json.load(f)["tests"]
                           if t["status"] not in ("pass", "unsupported")}
    except (OSError, ValueError, KeyError):
        pass
try:
    with open(results) as f:
        data = json.load(f)
except (OSError, ValueError) as e:
    print(f"no results ({e}); suite exit status {rc}")
    sys.exit(1)
tests = data.get("tests", data) if isinstance(data, dict) else data
status = {t["name"]: t["status"] for t in tests}
cites = {t["name"]: set(t.get("requirements", ())) for t in tests}
FAILED = ("fail",)        # the suite saw the fault: a test failed
problems, caught = [], 0
for lineno, line in enumerate(open(expected), 1):
    words = line.split("#", 1)[0].split()
    if len(words) != 3 or words[0] not in (variant, "*") or words[1] == "run":
        continue
    _, kind, glob = words
    if kind == "cites":         # a failing test cites requirement GLOB
        if not any(status[n] in FAILED and glob in cites[n]
                   for n in status):
            problems.append(f"cites {glob}: no failing test cites it "
                            f"(expected.txt:{lineno})")
        continue
    names = [n for n in status if fnmatch.fnmatchcase(n, glob)]
    ran = [n for n in names if status[n] != "unsupported"]
    if not ran:
        problems.append(f"{kind} {glob}: no such test ran "
                        f"(expected.txt:{lineno})")
        continue
    bad_fail = [n for n in ran if status[n] not in FAILED]
    if kind == "fail":          # every matching test must fail
        if bad_fail:
            problems.append(f"fail {glob}: " + ", ".join(
                f"{n} {status[n]}" for n in bad_fail[:5]) +
                (" ..." if len(bad_fail) > 5 else ""))
        else:
            caught += len(ran)
    elif kind == "some-fail":   # at least one matching test must fail
        if len(bad_fail) == len(ran):
            problems.append(f"some-fail {glob}: all {len(ran)} passed or "
                            "errored")
        else:
            caught += len(ran) - len(bad_fail)
    elif kind == "pass":        # every matching test must still pass
        bad = [n for n in ran if status[n] != "pass" and n not in control_bad]
        if bad:
            problems.append(f"pass {glob}: " + ", ".join(
                f"{n} {status[n]}" for n in bad[:5]) +
                (" ..." if len(bad) > 5 else ""))
    else:
        problems.append(f"unknown expectation {kind!r} "
                        f"(expected.txt:{lineno})")
if rc not in (0, 1):
    problems.append(f"suite exit status {rc} (harness error)")
elif variant != "control":
    if rc == 0:
        problems.append("the suite passed the broken variant (exit 0)")
    if not caught and not problems:
        problems.append("no expected failure listed")
if problems:
    print("; ".join(problems))
    sys.exit(1)
nfail = sum(1 for s in status.values() if s == "fail")
print(f"caught by {caught} expected failing tests "
      f"({nfail} failed of {len(status)})" if variant != "control"
      else f"the expected tests pass ({len(status)} run)")
PYEOF

# The tests a variant runs: of those its `run` lines select (listed by the
# suite), the ones its fail, some-fail and pass lines name: the rest could
# not change its verdict. The control runs every one.
cat >"$work/select.py" <<'PYEOF'
import fnmatch, sys
expected, variant, listing = sys.argv[1:4]
globs = []
for line in open(expected):
    words = line.split("#", 1)[0].split()
    if len(words) == 3 and words[0] in (variant, "*") and \
            words[1] in ("fail", "some-fail", "pass"):
        globs.append(words[2])
names = [line.split()[0] for line in open(listing)
         if line.strip() and "/" in line.split()[0]]
for n in names:
    if any(fnmatch.fnmatchcase(n, g) for g in globs):
        print(n)
PYEOF

# run NAME IMPL: the suite against IMPL, in the background; results in
# $work/NAME.json, output in NAME.out, exit status in NAME.rc.
run() {
  # --filter for every `run` line of the variant (none: the whole suite).
  set -- "$1" "$2"
  # shellcheck disable=SC2013 # globs are single words
  for g in $(awk -v v="$1" '($1 == v || $1 == "*") && $2 == "run" { print $3 }' \
    "$expected"); do
    set -- "$@" --filter "$g"
  done
  n=$1 i=$2
  shift 2
  (
    if [ "$n" != control ] &&
      "$PYTHON" conformance/run.py --impl "$i" --list "$@" \
        >"$work/$n.list" 2>&1; then
      tests=$("$PYTHON" "$work/select.py" "$expected" "$n" "$work/$n.list")
      if [ -n "$tests" ]; then
        set --
        for t in $tests; do
          set -- "$@" --filter "$t"
        done
      fi
    fi
    # No frame relay: the verdict reads statuses, not frames.
    "$PYTHON" conformance/run.py --impl "$i" --no-frames \
      --json "$work/$n.json" "$@" >"$work/$n.out" 2>&1
    echo $? >"$work/$n.rc"
  ) &
}

# The runs go in parallel: most of their time is spent waiting on sockets.
names=""
if grep -q '^control[[:space:]]' "$expected"; then
  run control "$work/control.impl"
  names=control
fi
for v in $variants; do
  [ -f "conformance/impls/broken-$v.impl" ] || continue
  run "$v" "conformance/impls/broken-$v.impl"
  names="$names $v"
done
wait

passed=0
failed=0
for v in ${names# } $variants; do
  case " $names " in
  *" $v "*) ;;
  *)
    echo "selftest: $v: FAILED: conformance/impls/broken-$v.impl not found"
    failed=$((failed + 1))
    continue
    ;;
  esac
  [ -f "$work/$v.done" ] && continue
  : >"$work/$v.done"
  if "$PYTHON" "$work/verdict.py" "$expected" "$v" "$work/$v.json" \
    "$(cat "$work/$v.rc" 2>/dev/null || echo 2)" "$work/control.json" \
    >"$work/$v.verdict" 2>&1; then
    echo "selftest: $v: ok: $(cat "$work/$v.verdict")"
    passed=$((passed + 1))
  else
    echo "selftest: $v: FAILED: $(cat "$work/$v.verdict")"
    grep -E '^(error|verdict):|^[0-9]+ tests:' "$work/$v.out" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
