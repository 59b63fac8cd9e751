#!/bin/sh
# make bench: the benchmark, with a throwaway PostgreSQL server for its
# PostgreSQL part (tools/pgtest.sh).
here=$(dirname "$0")
exec sh "$here/pgtest.sh" python3 "$here/bench.py" "$@"
