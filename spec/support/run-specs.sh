#!/bin/sh
# Run the busted specs under every runtime in $RUNTIMES (default: lua5.4
# luajit) against the server with-pg.sh started, then print one total line:
#   busted: N passed, M failed[, K skipped]
# Arguments, if any, are the spec files to run (default: spec/).
#
# SANITIZE=1 (make test SANITIZE=1): the modules come from build/asan (ASan +
# UBSan) and busted starts with the ASan runtime preloaded; see
# spec/support/sanitizer.lua for who else gets it.
#
# luv is loaded before busted starts: busted unloads what a spec file
# loaded when the file ends, and luv frees its event loop with the module
# table that first loaded it, under the feet of every later copy.
#
# PGPOOL_SUMMARY_COLLECT, if set, names a file that also receives the
# per-runtime counts (.ci/run sums its runs with it).
set -u
cd "$(dirname "$0")/../.." || exit 1
runtimes=${RUNTIMES:-lua5.4 luajit}
summary=$(mktemp)
export PGPOOL_SUMMARY_FILE="$summary"
builds=build
launch=
if [ "${SANITIZE:-}" = 1 ]; then
  builds=build/asan
  preload=$(gcc -print-file-name=libasan.so)
  export PGPOOL_TEST_PRELOAD="$preload"
  launch="env LD_PRELOAD=$preload"
  # detect_leaks: see spec/support/lsan.supp for what is not pgpool's.
  export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
  export LSAN_OPTIONS="suppressions=$PWD/spec/support/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
for rt in $runtimes; do
  echo "== $rt${launch:+ (ASan + UBSan)}"
  runs=$(wc -l <"$summary")
  LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$builds/$rt/?.so;;" \
    PGPOOL_TEST_RUNTIME="$rt" PGPOOL_TEST_BUILD="$builds/$rt" \
    $launch "$rt" -e "require('luv') require('spec.support.sanitizer').detach()" /usr/bin/busted \
      -o spec/support/summary.lua "${@:-spec}"
  status=$?
  [ $status -eq 0 ] && continue
  echo "($rt: some specs failed)"
  # busted's own line counts no failure when the process died before writing
  # it (a sanitizer abort) or after it (LeakSanitizer at exit): count one.
  failed=$(tail -n +"$((runs + 1))" "$summary" | awk '{ n += $2 } END { print n + 0 }')
  if [ "$failed" -eq 0 ]; then
    echo "($rt: busted exited with status $status, see the report above: counted as 1 failure)"
    echo "0 1 0" >>"$summary"
  fi
done
[ -n "${PGPOOL_SUMMARY_COLLECT:-}" ] && cat "$summary" >>"$PGPOOL_SUMMARY_COLLECT"
lua5.4 spec/support/total.lua "$summary"
rc=$?
rm -f "$summary"
exit $rc
