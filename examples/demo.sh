#!/bin/sh
# make demo: the incident, replayed against the throwaway server that
# spec/support/with-pg.sh started (max_connections = 30):
#   1. in plain Lua (examples/demo.lua): a new connection per operation,
#      then the same work through pgpool from 50 luv threads;
#   2. on OpenResty (examples/openresty/demo.lua), when nginx with
#      lua-nginx-module is installed: /naive against the pooled endpoints.
# Everything it starts lives under one temporary directory, removed at exit
# (nginx included, on Ctrl-C too).
set -u
cd "$(dirname "$0")/.." || exit 1
export LUA_PATH="lua/?.lua;lua/?/init.lua;examples/openresty/?.lua;;"
export LUA_CPATH="build/lua5.4/?.so;;"
export PGPOOL_URL="${PGPOOL_URL:-${PGPOOL_TEST_DSN:-}}"
[ -n "$PGPOOL_URL" ] || { echo "demo.sh: set PGPOOL_URL, or run it through 'make demo'" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/pgpool-demo.XXXXXX") || exit 1
chmod 0755 "$work"                  # nginx workers (user nobody) read their prefix in it
cleanup() {
  for prefix in "$work"/pgpool-nginx.*; do
    [ -d "$prefix" ] && examples/openresty/nginx.sh stop "$prefix"
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export TMPDIR="$work"

lua5.4 examples/demo.lua || exit 1
printf '\n\n'
lua5.4 examples/openresty/demo.lua
