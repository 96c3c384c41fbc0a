#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests and benchmarks.
#
#   tests/services/postgres.sh [start]   install (as root, where missing), initialise, start; prints
#                                       LEUKTUI_TEST_PG_URL=... for the tests
#   tests/services/postgres.sh stop      stop it (the data folder stays for the next start)
#
# Settings: LEUKTUI_SERVICES_DIR (default /tmp/leuktui-services), LEUKTUI_TEST_PG_PORT (default 54329).
# Idempotent: a server already up on that folder is left running.
set -euo pipefail

ROOT="${LEUKTUI_SERVICES_DIR:-/tmp/leuktui-services}"
PORT="${LEUKTUI_TEST_PG_PORT:-54329}"
DATA="$ROOT/postgres"
PASSWORD="leuktui-test"
URL="postgresql+psycopg://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"

say() { echo "postgres.sh: $*" >&2; }

pg_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
    done
    command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

install_if_missing() {
    pg_bindir >/dev/null && return 0
    if [ "$(id -u)" != 0 ]; then
        say "PostgreSQL is not installed and this is not root: install the postgresql package"
        exit 1
    fi
    say "installing postgresql (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
}

# The server refuses to run as root: as root it runs as the postgres user.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    install_if_missing
    local bin
    bin="$(pg_bindir)"
    mkdir -p "$ROOT"
    chmod 755 "$ROOT"
    if [ ! -s "$DATA/PG_VERSION" ]; then
        mkdir -p "$DATA"
        [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
        local pwfile
        pwfile="$(mktemp)"
        echo "$PASSWORD" > "$pwfile"
        [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
        as_owner "$bin/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 >/dev/null
        rm -f "$pwfile"
    fi
    if ! as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$DATA" -w -t 60 -l "$DATA/server.log" \
            -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA -c max_connections=200 -c fsync=on" \
            start >/dev/null
    fi
    echo "LEUKTUI_TEST_PG_URL=$URL"
}

stop() {
    local bin
    bin="$(pg_bindir)" || return 0
    if [ -s "$DATA/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$DATA" -w -m fast stop >/dev/null
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) say "usage: $0 [start|stop]"; exit 2 ;;
esac
