#!/bin/sh
# Run the busted specs under every runtime in $RUNTIMES (default: lua5.4
# luajit) against the server with-pg.sh started, then print one total line:
#   busted: N passed, M failed[, K skipped]
# Arguments, if any, are the spec files to run (default: spec/).
set -u
cd "$(dirname "$0")/../.." || exit 1
runtimes=${RUNTIMES:-lua5.4 luajit}
summary=$(mktemp)
export PGPOOL_SUMMARY_FILE="$summary"
for rt in $runtimes; do
  echo "== $rt"
  LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/$rt/?.so;;" \
    PGPOOL_TEST_RUNTIME="$rt" \
    "$rt" /usr/bin/busted -o spec/support/summary.lua "${@:-spec}" ||
    echo "($rt: some specs failed)"
done
lua5.4 spec/support/total.lua "$summary"
rc=$?
rm -f "$summary"
exit $rc
