#!/bin/sh
# make bench: run bench/bench.lua against a throwaway PostgreSQL server.
#
#   sh bench/run.sh                 full run (about 5 minutes)
#   BENCH_QUICK=1 sh bench/run.sh   one short round, for development
#   BENCH_ONLY=rows,bulk,tpcb,nginx sh bench/run.sh
#                                   the driver parts alone (about 3 minutes)
#
# Expects the modules, lthreads and build/rawpq built (make bench does that).
# The transcript of the last run is kept in bench/out/last-run.txt.
set -eu
cd "$(dirname "$0")/.."

for tool in build/rawpq build/lua5.4/lthreads build/lua5.4/pgpool/core.so \
            build/luajit/lthreads build/luajit/pgpool/core.so; do
  [ -x "$tool" ] || [ -f "$tool" ] || { echo "bench: $tool is missing; run make bench" >&2; exit 1; }
done
for cmd in lua5.4 luajit pgbench valgrind callgrind_annotate taskset nginx wrk; do
  command -v "$cmd" >/dev/null || { echo "bench: $cmd not found (make deps-bench)" >&2; exit 1; }
done

# Each of the 8 threads and pgbench clients needs a backend; 100 is plenty.
exec spec/support/with-pg.sh lua5.4 bench/bench.lua
