#!/usr/bin/env bash
# Run the pgpool OpenResty example in a throwaway nginx prefix.
#
#   nginx.sh start PREFIX   copy the app into PREFIX, write PREFIX/conf/nginx.conf,
#                           start nginx, wait until it answers; writes PREFIX/env
#                           (NGINX_PORT, NGINX_URL, NGINX_ERROR_LOG)
#   nginx.sh stop PREFIX    stop it gracefully (exit_worker_by_lua runs), remove PREFIX
#
# Environment for start:
#   PGPOOL_URL      the pool's conninfo (required; a libpq URI or key=value string)
#   PGPOOL_MAX      connections per worker (default 10)
#   PGPOOL_MAX_SHARED  connections of all workers together (default: no cap)
#   NGINX_WORKERS   worker_processes (default 2)
#   NGINX_THREADS   threads in the "pgpool" thread_pool (default 16)
#   NGINX_PORT      TCP port on 127.0.0.1 (default: a free one in 20000-31999)
#   NGINX_BIN       the nginx binary (default: nginx)
#
# Workers run as `nobody`: PREFIX and the PostgreSQL socket directory must be
# reachable by that user. Needs `make build` (build/luajit/pgpool/core.so).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
NGINX=${NGINX_BIN:-nginx}
MARKER=.pgpool-nginx       # marks PREFIX as ours, so `stop` never deletes a foreign directory

die() { echo "nginx.sh: $*" >&2; exit 1; }

# shellcheck source=../../spec/support/ports.sh
. "$root/spec/support/ports.sh"

# Wait up to $2 seconds for file $1 to exist and be non-empty / to be gone.
wait_file() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

wait_gone() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -e $1 ]] || return 0
        sleep 0.05
    done
    return 1
}

alive() {                   # process $1 exists and is not a zombie awaiting its reaper
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

answers() {                 # true when something accepts on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The workers run as nobody: warn when a Unix socket directory named in the
# conninfo (host=/dir) is out of that user's reach.
check_socket_dir() {
    local dir
    dir=$(sed -n 's/.*host=\(\/[^ ]*\).*/\1/p' <<<"$1")
    [[ -n $dir ]] && command -v runuser >/dev/null && [[ $(id -u) == 0 ]] || return 0
    runuser -u nobody -- test -x "$dir" 2>/dev/null ||
        echo "nginx.sh: warning: the workers (user nobody) cannot reach $dir" >&2
}

cmd_start() {
    local prefix=${1:?usage: nginx.sh start PREFIX}
    [[ -n ${PGPOOL_URL:-} ]] || die "PGPOOL_URL is not set"
    local core=$root/build/luajit/pgpool/core.so
    [[ -f $core ]] || die "$core not found: run 'make build' first"
    command -v "$NGINX" >/dev/null || die "nginx not found (apt-get install nginx-light libnginx-mod-http-lua)"
    [[ -f /usr/share/nginx/modules/ngx_http_lua_module.so ]] ||
        die "lua-nginx-module not found (apt-get install libnginx-mod-http-lua)"

    check_socket_dir "$PGPOOL_URL"

    mkdir -p "$prefix"
    prefix=$(cd "$prefix" && pwd)
    [[ -e $prefix/conf/nginx.conf ]] && die "$prefix is already in use"
    touch "$prefix/$MARKER"
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp" "$prefix/lua/pgpool"
    # Copies, so that the workers (user nobody) can read them wherever the repo is.
    cp "$root/lua/pgpool.lua" "$here/app.lua" "$here/longpoll.lua" "$prefix/lua/"
    cp "$root"/lua/pgpool/*.lua "$prefix/lua/pgpool/"     # the adapters (pgpool.nginx, pgpool.dashboard)
    cp "$core" "$prefix/lua/pgpool/core.so"
    chmod -R a+rX "$prefix"

    local workers=${NGINX_WORKERS:-2} threads=${NGINX_THREADS:-16} port attempt
    for attempt in 1 2 3 4 5; do
        port=${NGINX_PORT:-$(pick_port)}
        sed -e "s|@PREFIX@|$prefix|g" -e "s|@LUA_DIR@|$prefix/lua|g" \
            -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@WORKERS@|$workers|g" \
            -e "s|@THREADS@|$threads|g" "$here/nginx.conf.in" >"$prefix/conf/nginx.conf"
        if "$NGINX" -p "$prefix" -c conf/nginx.conf -e "$prefix/logs/error.log" 2>>"$prefix/logs/start.log"; then
            break
        fi
        if grep -q 'Address already in use' "$prefix/logs/start.log" && [[ -z ${NGINX_PORT:-} ]] && ((attempt < 5)); then
            : >"$prefix/logs/start.log"
            continue
        fi
        cat "$prefix/logs/start.log" >&2
        tail -n 20 "$prefix/logs/error.log" >&2 2>/dev/null || true
        die "nginx did not start"
    done
    wait_file "$prefix/logs/nginx.pid" 10 || die "nginx wrote no pid file"
    if ! wait_for_port "$port"; then
        tail -n 20 "$prefix/logs/error.log" >&2
        kill -QUIT "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null || true
        die "nginx does not answer on port $port"
    fi
    {
        printf 'export %s=%q\n' \
            NGINX_PORT "$port" \
            NGINX_URL "http://127.0.0.1:$port" \
            NGINX_ERROR_LOG "$prefix/logs/error.log" \
            NGINX_PID "$(cat "$prefix/logs/nginx.pid")"
    } >"$prefix/env"
}

wait_for_port() {
    local i
    for ((i = 0; i < 200; i++)); do
        answers "$1" && return 0
        sleep 0.05
    done
    return 1
}

cmd_stop() {
    local prefix=${1:?usage: nginx.sh stop PREFIX}
    [[ -d $prefix ]] || return 0
    local pidfile=$prefix/logs/nginx.pid pid
    if [[ -s $pidfile ]]; then
        pid=$(cat "$pidfile")
        # QUIT: graceful, the workers run exit_worker_by_lua (pgpool.shutdown_all).
        # nginx removes its pid file when the master is done.
        kill -QUIT "$pid" 2>/dev/null || true
        if ! alive "$pid"; then
            rm -f "$pidfile"
        elif ! wait_gone "$pidfile" 15; then
            echo "nginx.sh: nginx $pid did not stop on QUIT; sending TERM" >&2
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pidfile" 10 || { kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile"; }
        fi
    fi
    if [[ -e $prefix/$MARKER ]]; then
        rm -rf -- "$prefix"
    else
        echo "nginx.sh: not removing $prefix (not created by nginx.sh start)" >&2
    fi
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    stop)  shift; cmd_stop "$@" ;;
    *) echo "usage: $0 start PREFIX | stop PREFIX" >&2; exit 2 ;;
esac
