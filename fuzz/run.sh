#!/bin/sh
# fuzz/run.sh: runs the libFuzzer harnesses built into BUILD_DIR
# (fuzz/fuzz.mk, fuzz/README.md). From the repository root:
#
#   sh fuzz/run.sh regress BUILD_DIR [NAME...]
#       runs each harness once over every file of fuzz/corpus/NAME; one
#       line per harness, then "N passed, M failed"; exits 1 on a failure.
#   sh fuzz/run.sh fuzz BUILD_DIR [NAME...]
#       fuzzes each harness for $FUZZ_SECONDS (default 60) seconds on
#       BUILD_DIR/corpus-NAME, a scratch copy of its corpus that keeps the
#       new inputs; prints the executions, new inputs and findings of each;
#       copies a crash or leak input into fuzz/corpus/NAME, where the
#       regression run replays it until it is fixed; exits 1 on a finding.
#
# Without NAME, every harness (fuzz/fuzz_*.c but fuzz_util.c).
set -u

usage() {
  echo "usage: sh fuzz/run.sh regress|fuzz BUILD_DIR [NAME...]" >&2
  exit 2
}
[ $# -ge 2 ] || usage
mode=$1
fz=$2
shift 2
if [ $# -eq 0 ]; then
  for f in fuzz/fuzz_*.c; do
    name=${f##*/}
    name=${name%.c}
    [ "$name" = fuzz_util ] || set -- "$@" "$name"
  done
fi
seconds=${FUZZ_SECONDS:-60}
passed=0
failed=0

# Prints how many files of directory $1 match the patterns $2... (all).
count_files() {
  dir=$1
  shift
  [ $# -gt 0 ] || set -- '*'
  k=0
  for pattern in "$@"; do
    for f in "$dir"/$pattern; do
      [ -e "$f" ] && k=$((k + 1))
    done
  done
  echo "$k"
}

# Prints the final stat $2 of the libFuzzer log $1.
final_stat() {
  sed -n "s/^stat::$2: *//p" "$1" | tail -n 1
}

# Runs harness $1 once over the inputs $2..., appending to the log $log;
# nothing else is written but a crash artifact, next to it. Prints the
# failing input, if any.
replay() {
  bin=$1
  shift
  if "$bin" -timeout=30 -artifact_prefix="$fz/regress-" "$@" >>"$log" 2>&1
  then
    return 0
  fi
  sed -n 's/^Running: //p' "$log" | tail -n 1
  return 1
}

regress() {
  name=$1
  log=$fz/regress-$name.log
  # The seeds in one run; each known finding (crash-*, leak-*) alone, so
  # that one does not hide the others.
  set --
  known=""
  for f in "fuzz/corpus/$name"/*; do
    case ${f##*/} in
    crash-* | leak-*) known="$known $f" ;;
    *) set -- "$@" "$f" ;;
    esac
  done
  : >"$log"
  bad=""
  if [ $# -gt 0 ] && ! x=$(replay "$fz/$name" "$@"); then
    bad=$x
  fi
  for f in $known; do
    if ! x=$(replay "$fz/$name" "$f"); then
      bad="${bad:+$bad }$x"
    fi
  done
  if [ -z "$bad" ]; then
    echo "$name: $(count_files "fuzz/corpus/$name") inputs ok"
    passed=$((passed + 1))
  else
    echo "$name: FAILED on $bad (log: $log)"
    failed=$((failed + 1))
  fi
}

fuzz_one() {
  name=$1
  scratch=$fz/corpus-$name
  findings=$fz/findings-$name
  log=$fz/fuzz-$name.log
  mkdir -p "$scratch"
  rm -rf "$findings"
  mkdir -p "$findings"
  # Known findings stay out: the regression run replays them, and the
  # first would stop the fuzzer at once.
  for f in "fuzz/corpus/$name"/*; do
    case ${f##*/} in
    crash-* | leak-*) ;;
    *) cp "$f" "$scratch"/ ;;
    esac
  done
  before=$(count_files "$scratch")
  "$fz/$name" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
    -dict=fuzz/lipsync.dict -artifact_prefix="$findings/" \
    -print_final_stats=1 "$scratch" >"$log" 2>&1
  execs=$(final_stat "$log" number_of_executed_units)
  rate=$(final_stat "$log" average_exec_per_sec)
  added=$(($(count_files "$scratch") - before))
  found=$(count_files "$findings" 'crash-*' 'leak-*' 'timeout-*' 'oom-*' \
    'slow-unit-*')
  echo "$name: ${execs:-0} executions (${rate:-0}/s), $added new corpus" \
    "entries, $found findings"
  if [ "$found" -gt 0 ]; then
    failed=$((failed + 1))
    for f in "$findings"/*; do
      case ${f##*/} in
      crash-* | leak-*)
        cp "$f" "fuzz/corpus/$name/"
        echo "  $f (copied into fuzz/corpus/$name/)"
        ;;
      *) echo "  $f" ;;
      esac
    done
    echo "  log: $log"
  else
    passed=$((passed + 1))
  fi
}

for name in "$@"; do
  [ -x "$fz/$name" ] || {
    echo "$name: not built ($fz/$name)" >&2
    exit 2
  }
  case $mode in
  regress) regress "$name" ;;
  fuzz) fuzz_one "$name" ;;
  *) usage ;;
  esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
