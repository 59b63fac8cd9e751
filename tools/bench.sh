#!/bin/sh
# make bench: the benchmark, then the load test at full size (tools/load.py:
# 100 clients syncing at once, on every place of cities.csv), with a
# throwaway PostgreSQL server for their PostgreSQL parts (tools/pgtest.sh).
# Arguments go to the benchmark. Exits non-zero if either fails.
here=$(dirname "$0")
if [ "${1:-}" != "--inner" ]; then
  exec sh "$here/pgtest.sh" sh "$0" --inner "$@"
fi
shift
status=0
python3 "$here/bench.py" "$@" || status=1
echo
python3 "$here/load.py" || status=1
exit "$status"
