#!/usr/bin/env bash
# A throwaway PgBouncer in front of the server pgserver.sh started in DIR,
# for the specs' PgBouncer run (PGPOOL_TEST_VIA=pgbouncer, see with-pg.sh).
#
#   pgbouncer.sh start DIR   start it in DIR/pgbouncer, append to DIR/env
#   pgbouncer.sh stop DIR    stop it (idempotent; pgserver.sh stop removes DIR)
#
# Transaction pooling, as a pooler in front of many app processes runs it.
# It listens on its own port (below 32768) on 127.0.0.1 and in its own
# socket directory, runs as `postgres` (it refuses root) and reaches the
# server over TCP. Its hba mirrors the server's: trust, but SCRAM for
# pgpool_pw over TCP, so the password specs log in through it for real.
# DIR/env then points PGPOOL_TEST_DSN, _TCP_DSN and _PW_URL at PgBouncer;
# PGPOOL_TEST_PORT and _SOCKDIR stay the server's (psql in the specs, for
# setup and checks, talks to the server directly). Also exported:
#   PGPOOL_TEST_VIA=pgbouncer
#   PGPOOL_TEST_PGBOUNCER_PORT, PGPOOL_TEST_PGBOUNCER_SOCKDIR (its admin
#   console: psql ... -d pgbouncer -U postgres)
# Override the binary with PGPOOL_PGBOUNCER.
set -euo pipefail

BIN=${PGPOOL_PGBOUNCER:-/usr/sbin/pgbouncer}
PGUSER_OS=postgres

die() { echo "pgbouncer.sh: $*" >&2; exit 1; }

as_pg() { runuser -u "$PGUSER_OS" -- "$@"; }

# shellcheck source=ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# Poll (every 0.1 s, up to $1 s) until the command after it succeeds.
wait_for() {
    local i limit=$(($1 * 10))
    shift
    for ((i = 0; i < limit; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

pid_of() { [[ -s $1/pgbouncer.pid ]] && tr -dc 0-9 <"$1/pgbouncer.pid"; }

running() {                 # pid $1 alive and not a zombie (PID 1 reaps slowly)
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

cmd_start() {
    local dir=${1:?usage: pgbouncer.sh start DIR}
    [[ -x $BIN ]] || die "PgBouncer not found at $BIN (Debian package pgbouncer)"
    [[ -f $dir/env ]] || die "$dir/env missing: start the server first (pgserver.sh start)"
    dir=$(cd "$dir" && pwd)
    # shellcheck source=/dev/null
    . "$dir/env"
    local pb=$dir/pgbouncer
    local sock=$pb/sock
    (( ${#sock} + 15 <= 107 )) || die "socket dir path too long: $sock"
    mkdir -p "$sock"

    printf '"postgres" ""\n"pgpool_pw" "%s"\n' "$PGPOOL_TEST_PASSWORD" >"$pb/users.txt"
    cat >"$pb/hba.conf" <<'EOF'
local   all  all                      trust
host    all  pgpool_pw  127.0.0.1/32  scram-sha-256
host    all  all        127.0.0.1/32  trust
EOF
    chown -R "$PGUSER_OS:" "$pb"
    chmod 0700 "$pb"
    chmod 0600 "$pb/users.txt"
    chmod 0755 "$pb" "$sock"           # reached by clients of any user, as the server's

    local port attempt pid
    for attempt in 1 2 3 4 5; do
        port=$(pick_port)
        cat >"$pb/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PGPOOL_TEST_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $sock
auth_type = hba
auth_hba_file = $pb/hba.conf
auth_file = $pb/users.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
logfile = $pb/pgbouncer.log
pidfile = $pb/pgbouncer.pid
EOF
        chown "$PGUSER_OS:" "$pb/pgbouncer.ini"
        rm -f "$pb/pgbouncer.pid"
        # -d: it forks, writes its pid file and returns; a port taken makes it exit.
        if as_pg "$BIN" -d "$pb/pgbouncer.ini" >"$pb/start.log" 2>&1 &&
                wait_for 10 pid_of "$pb" >/dev/null; then
            pid=$(pid_of "$pb")
            if wait_for 10 "$PGPOOL_TEST_PGBIN/psql" -h "$sock" -p "$port" -U postgres -d pgbouncer \
                    -XAtqc 'SHOW VERSION' >/dev/null 2>&1; then
                break
            fi
            running "$pid" && stop_pid "$pid"
        fi
        if grep -q 'Address already in use' "$pb/pgbouncer.log" "$pb/start.log" 2>/dev/null && ((attempt < 5)); then
            : >"$pb/pgbouncer.log"
            continue
        fi
        cat "$pb/start.log" >&2
        tail -n 20 "$pb/pgbouncer.log" >&2 2>/dev/null || true
        die "PgBouncer did not start"
    done

    # The specs' own connections go through PgBouncer; psql in the specs
    # keeps the server's socket and port.
    {
        printf 'export %s=%q\n' \
            PGPOOL_TEST_VIA pgbouncer \
            PGPOOL_TEST_PGBOUNCER_PORT "$port" \
            PGPOOL_TEST_PGBOUNCER_SOCKDIR "$sock" \
            PGPOOL_TEST_SERVER_DSN "$PGPOOL_TEST_DSN" \
            PGPOOL_TEST_DSN "host=$sock port=$port dbname=pgpool_test user=postgres" \
            PGPOOL_TEST_TCP_DSN "host=127.0.0.1 port=$port dbname=pgpool_test user=postgres" \
            PGPOOL_TEST_PW_URL "postgresql://pgpool_pw:$PGPOOL_TEST_PASSWORD@127.0.0.1:$port/pgpool_test"
    } >>"$dir/env"
}

# SIGTERM, then SIGKILL if it outlives 5 s; wait (with a deadline) until it is gone.
stop_pid() {
    kill "$1" 2>/dev/null || true
    wait_for 5 eval "! running $1" && return 0
    kill -9 "$1" 2>/dev/null || true
    wait_for 5 eval "! running $1"
}

cmd_stop() {
    local dir=${1:?usage: pgbouncer.sh stop DIR}
    local pb=$dir/pgbouncer pid
    [[ -d $pb ]] || return 0
    pid=$(pid_of "$pb" || true)
    if [[ -n $pid ]] && running "$pid"; then
        stop_pid "$pid" || die "PgBouncer (pid $pid) did not stop"
    fi
    rm -f "$pb/pgbouncer.pid"
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop)  shift; cmd_stop "$@" ;;
    *) echo "usage: $0 start DIR | stop DIR" >&2; exit 2 ;;
esac
