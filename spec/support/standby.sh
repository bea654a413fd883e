#!/usr/bin/env bash
# A streaming standby of a throwaway server (pgserver.sh's), for the specs:
#
#   standby.sh start PRIMARY_DIR DIR   pg_basebackup -R of the server in
#                                      PRIMARY_DIR into DIR/data, started on
#                                      its own port and socket directory
#                                      (DIR/sock); prints the port
#   pgserver.sh stop DIR               stops it and removes DIR, as its own
#
# The primary's pg_hba must let postgres replicate over its socket
# (pgserver.sh's does). Runs as postgres; the standby's log is
# DIR/postgresql.log.
set -euo pipefail

die() { echo "standby.sh: $*" >&2; exit 1; }

# shellcheck source=ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

cmd_start() {
    local primary=${1:?usage: standby.sh start PRIMARY_DIR DIR} dir=${2:?usage: standby.sh start PRIMARY_DIR DIR}
    [[ -f $primary/env ]] || die "$primary/env missing: not a pgserver.sh directory"
    # shellcheck source=/dev/null
    . "$primary/env"
    local pgbin=${PGPOOL_TEST_PGBIN:?}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    (( ${#dir} + 20 <= 107 )) || die "socket dir path too long: $dir/sock"
    touch "$dir/.pgserver"             # pgserver.sh stop removes it like its own
    mkdir -p "$dir/sock"
    touch "$dir/postgresql.log"
    chown -R postgres: "$dir"
    chmod 0755 "$dir" "$dir/sock"
    chmod 0644 "$dir/postgresql.log"
    runuser -u postgres -- "$pgbin/pg_basebackup" -h "$PGPOOL_TEST_SOCKDIR" -p "$PGPOOL_TEST_PORT" \
        -U postgres -D "$dir/data" -R -c fast -X stream >"$dir/basebackup.log" 2>&1 ||
        { cat "$dir/basebackup.log" >&2; die "pg_basebackup failed"; }
    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(pick_port)
        sed -e "s/^port = .*/port = $port/" \
            -e "s|^unix_socket_directories = .*|unix_socket_directories = '$dir/sock'|" \
            "$primary/data/pgpool_test.conf" >"$dir/data/pgpool_test.conf"
        chown postgres: "$dir/data/pgpool_test.conf"
        if runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/postgresql.log" -w -t 30 \
                start >"$dir/pg_ctl.log" 2>&1; then
            echo "$port"
            return 0
        fi
        grep -q 'Address already in use' "$dir/postgresql.log" && ((attempt < 5)) && continue
        cat "$dir/pg_ctl.log" >&2
        tail -n 20 "$dir/postgresql.log" >&2
        die "the standby in $dir did not start"
    done
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    *) echo "usage: $0 start PRIMARY_DIR DIR" >&2; exit 2 ;;
esac
