#!/bin/sh
# make bench: the benchmark, what change capture costs an application's
# writes on PostgreSQL (tools/bench_capture.py), then the load test at full
# size (tools/load.py: 100 clients syncing at once, on every place of
# cities.csv), then the load
# test with 100 clients against the ThreadSanitizer server, with a
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
python3 "$here/bench_capture.py" || status=1
echo
python3 "$here/load.py" || status=1
# The load test again, 100 clients at once, against the server built with
# ThreadSanitizer (release clients; fewer rows, as TSan slows the server
# some tenfold): a data race fails it. Its RSS is TSan's, not checked.
tsan=build/tsan/load
mkdir -p "$tsan"
ln -sf ../bin/lipsync-server "$tsan/lipsync-server"
ln -sf ../../bin/lipsync-client "$tsan/lipsync-client"
echo
echo "ThreadSanitizer:"
python3 "$here/load.py" --clients 100 --rows 20000 --bin "$tsan" \
  --rss-per-session 0 || status=1
exit "$status"
