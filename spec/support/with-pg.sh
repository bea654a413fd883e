#!/usr/bin/env bash
# Run a command against a fresh, throwaway PostgreSQL server:
#
#   spec/support/with-pg.sh CMD [ARGS...]
#
# The PGPOOL_TEST_* variables (see pgserver.sh) are exported to CMD. The server
# and its directory are removed on exit, including on failure or Ctrl-C.
# Exits with CMD's status. PGPOOL_TEST_MAX_CONNECTIONS sets max_connections.
#
# PGPOOL_TEST_VIA=pgbouncer also starts a PgBouncer (transaction pooling) in
# front of the server and points the specs' conninfo at it (pgbouncer.sh),
# stopping it before the server.
set -u

[[ $# -gt 0 ]] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/pgpool-test.XXXXXX") || exit 1

trap '"$here/pgbouncer.sh" stop "$dir"; "$here/pgserver.sh" stop "$dir"' EXIT
trap 'exit 130' INT                 # the EXIT trap still runs
trap 'exit 143' TERM
trap 'exit 129' HUP

"$here/pgserver.sh" start "$dir" "${PGPOOL_TEST_MAX_CONNECTIONS:-100}" || exit 1
case ${PGPOOL_TEST_VIA:-} in
    '') ;;
    pgbouncer) "$here/pgbouncer.sh" start "$dir" || exit 1 ;;
    *) echo "with-pg.sh: PGPOOL_TEST_VIA must be empty or pgbouncer, got '$PGPOOL_TEST_VIA'" >&2; exit 2 ;;
esac
# shellcheck source=/dev/null
. "$dir/env"

"$@"
exit $?
