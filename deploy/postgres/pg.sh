#!/usr/bin/env bash
# Local PostgreSQL from Debian's packages on 127.0.0.1, no Docker: for tests and multi-instance demos.
#
#   deploy/postgres/pg.sh up       initdb once (trust auth, user "relay", database "relay"), start, wait
#   deploy/postgres/pg.sh down     stop the server this script started
#   deploy/postgres/pg.sh status   say whether it answers
#   deploy/postgres/pg.sh url      print the store URL (RELAY_STORE_URL)
#
# Settings (environment):
#   PG_PORT       port                       (default 15432)
#   PG_HOME_DIR   data, socket, log          (default $RELAY_DATA_DIR/postgres, i.e. ./.relay/postgres)
#   PG_FAST=1     fsync and synchronous_commit off — for throwaway test servers only
# Run as root, the server runs as the "postgres" system user (initdb refuses root).
set -euo pipefail

PORT="${PG_PORT:-15432}"
HOME_DIR="${PG_HOME_DIR:-${RELAY_DATA_DIR:-./.relay}/postgres}"
mkdir -p "$HOME_DIR"
HOME_DIR="$(cd "$HOME_DIR" && pwd)"
DATA="$HOME_DIR/data"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"

log() { echo "postgres: $*" >&2; }

[ -n "$BIN" ] || { log "no server binaries in /usr/lib/postgresql/*/bin: apt-get install postgresql"; exit 1; }

as_server_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

up() {
  if ready; then log "already answering on 127.0.0.1:$PORT"; return; fi
  if [ "$(id -u)" = 0 ]; then chown postgres: "$HOME_DIR"; chmod 0755 "$HOME_DIR"; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb in $DATA"
    as_server_user "$BIN/initdb" -D "$DATA" -A trust -U relay -E UTF8 --no-sync >"$HOME_DIR/initdb.log"
  fi
  local opts="-c listen_addresses=127.0.0.1 -p $PORT -k $HOME_DIR -c max_connections=200"
  if [ "${PG_FAST:-0}" = 1 ]; then opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"; fi
  as_server_user "$BIN/pg_ctl" -D "$DATA" -l "$HOME_DIR/postgres.log" -o "$opts" -w -t 60 start >/dev/null
  if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U relay -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'relay'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U relay relay
  fi
  log "ready on 127.0.0.1:$PORT ($(url))"
}

down() {
  if [ -f "$DATA/postmaster.pid" ]; then
    as_server_user "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null && log "stopped"
  else
    log "not running from $DATA"
  fi
}

url() { echo "postgresql://relay@127.0.0.1:$PORT/relay"; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if ready; then log "answering on 127.0.0.1:$PORT"; else log "not answering on 127.0.0.1:$PORT"; exit 1; fi ;;
  url) url ;;
  *) echo "usage: $0 up|down|status|url" >&2; exit 2 ;;
esac
