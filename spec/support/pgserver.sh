#!/usr/bin/env bash
# Manage a throwaway PostgreSQL cluster for the pgpool test suite.
#
#   pgserver.sh start DIR [max_connections]   create DIR/data, start it, write DIR/env
#   pgserver.sh stop DIR                      stop the server and remove DIR (idempotent)
#
# Never touches the system cluster. The server runs as user `postgres`
# (initdb refuses root). Override the binaries with PGPOOL_PGBIN.
#
# For a server set up otherwise (spec/tls_spec.lua), start reads:
#   PGSERVER_EXTRA_CONF   a file of settings added to the configuration
#   PGSERVER_HBA          a file that replaces the pg_hba.conf written here
#                         (keep a `local` line: the setup below uses the socket)
# The pg_hba.conf written here lets postgres replicate over the socket
# (spec/support/standby.sh builds streaming standbys of the server).
# Files they name inside DIR end up owned by postgres, as the server wants
# its key.
set -euo pipefail

PGBIN=${PGPOOL_PGBIN:-/usr/lib/postgresql/15/bin}
PGUSER_OS=postgres
PASSWORD='Secr3t-Pa55'
MARKER=.pgserver           # marks DIR as ours, so `stop` never deletes a foreign directory

die() { echo "pgserver.sh: $*" >&2; exit 1; }

as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }

show_log() {                # tail of a log file to stderr, for diagnosis
    [[ -s $1 ]] || return 0
    echo "---- last lines of $1 ----" >&2
    tail -n "${2:-25}" "$1" >&2
    echo "----" >&2
}

# shellcheck source=ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# Wait up to $2 seconds for file $1 to disappear.
wait_gone() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -e $1 ]] || return 0
        sleep 0.1
    done
    return 1
}

cmd_start() {
    local dir=${1:?usage: pgserver.sh start DIR [max_connections]}
    local maxconn=${2:-100}
    [[ $maxconn =~ ^[0-9]+$ ]] || die "max_connections must be a number, got '$maxconn'"
    [[ -x $PGBIN/initdb ]] || die "PostgreSQL binaries not found in $PGBIN"

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)            # absolute path: it ends up in DSNs
    local data=$dir/data sock=$dir/sock log=$dir/postgresql.log
    [[ -e $data ]] && die "$data already exists"
    # Unix socket paths are limited to 107 bytes (".s.PGSQL.NNNNN" is appended).
    (( ${#sock} + 15 <= 107 )) || die "socket dir path too long: $sock"

    touch "$dir/$MARKER"
    mkdir -p "$sock"
    touch "$log"                       # created here so it stays world-readable (0644)
    chown -R "$PGUSER_OS:" "$dir"
    chmod 0755 "$dir" "$sock"          # nginx workers (user nobody) must reach the socket
    chmod 0644 "$log"
    cd "$dir"                          # postgres must be able to stat its cwd

    if ! as_pg "$PGBIN/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 \
            --locale=C >"$dir/initdb.log" 2>&1; then
        show_log "$dir/initdb.log"
        die "initdb failed in $data"
    fi

    cat >"$data/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER       ADDRESS        METHOD
local   all       all                       trust
local   replication postgres                trust
host    all       pgpool_pw  127.0.0.1/32   scram-sha-256
host    all       all        127.0.0.1/32   trust
EOF
    [[ -n ${PGSERVER_HBA:-} ]] && cp "$PGSERVER_HBA" "$data/pg_hba.conf"
    echo "include 'pgpool_test.conf'" >>"$data/postgresql.conf"

    # Start; if another process grabs our port in the meantime, retry with a new one.
    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(pick_port)
        cat >"$data/pgpool_test.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = $maxconn
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_line_prefix = '%m [%p] %q%a '
log_connections = off
password_encryption = 'scram-sha-256'
EOF
        [[ -n ${PGSERVER_EXTRA_CONF:-} ]] && cat "$PGSERVER_EXTRA_CONF" >>"$data/pgpool_test.conf"
        chown "$PGUSER_OS:" "$data/pgpool_test.conf"
        local logsize
        logsize=$(stat -c %s "$log")
        if as_pg "$PGBIN/pg_ctl" -D "$data" -l "$log" -w -t 30 start >"$dir/pg_ctl.log" 2>&1; then
            break
        fi
        # Only look at what this attempt logged.
        if tail -c +"$((logsize + 1))" "$log" | grep -q 'Address already in use' && ((attempt < 5)); then
            wait_gone "$data/postmaster.pid" 10 || true
            continue
        fi
        cat "$dir/pg_ctl.log" >&2
        show_log "$log"
        die "server in $data did not start"
    done

    # Role for password (SCRAM) tests over TCP, and the test database.
    if ! "$PGBIN/psql" -h "$sock" -p "$port" -U postgres -d postgres -Xq -v ON_ERROR_STOP=1 \
            -c "CREATE ROLE pgpool_pw LOGIN PASSWORD '$PASSWORD'" \
            -c "CREATE DATABASE pgpool_test OWNER postgres" >"$dir/setup.log" 2>&1; then
        cat "$dir/setup.log" >&2
        show_log "$log"
        die "could not create role/database"
    fi

    {
        printf 'export %s=%q\n' \
            PGPOOL_TEST_DIR "$dir" \
            PGPOOL_TEST_SOCKDIR "$sock" \
            PGPOOL_TEST_PORT "$port" \
            PGPOOL_TEST_LOG "$log" \
            PGPOOL_TEST_PGBIN "$PGBIN" \
            PGPOOL_TEST_DSN "host=$sock port=$port dbname=pgpool_test user=postgres" \
            PGPOOL_TEST_TCP_DSN "host=127.0.0.1 port=$port dbname=pgpool_test user=postgres" \
            PGPOOL_TEST_PW_URL "postgresql://pgpool_pw:$PASSWORD@127.0.0.1:$port/pgpool_test" \
            PGPOOL_TEST_PASSWORD "$PASSWORD"
    } >"$dir/env"
}

cmd_stop() {
    local dir=${1:?usage: pgserver.sh stop DIR}
    [[ -d $dir ]] || return 0          # already stopped and removed
    local data=$dir/data

    if [[ -f $data/postmaster.pid ]]; then
        # pg_ctl waits on the pid file itself, not on the process being reaped.
        as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        if ! wait_gone "$data/postmaster.pid" 5; then
            as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
            wait_gone "$data/postmaster.pid" 10 ||
                { show_log "$dir/postgresql.log"; die "server in $data did not stop"; }
        fi
    fi

    if [[ -e $dir/$MARKER ]]; then
        rm -rf -- "$dir"
    else
        rmdir -- "$dir" 2>/dev/null || echo "pgserver.sh: not removing $dir (not created by pgserver.sh start)" >&2
    fi
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop)  shift; cmd_stop "$@" ;;
    *) echo "usage: $0 start DIR [max_connections] | stop DIR" >&2; exit 2 ;;
esac
