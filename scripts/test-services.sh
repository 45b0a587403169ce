#!/usr/bin/env bash
# Runs a command (make test: pytest) with the system services the tests use:
#   - Debian's chromium (the browser tests) and PostgreSQL's server binaries, installed with
#     apt-get when missing and running as root; otherwise it stops and names the command;
#   - a throwaway PostgreSQL server in a temporary folder, on a free port, exported as
#     IA3_TEST_POSTGRES_URL; stopped and deleted when the command ends, fails or is interrupted.
#
# IA3_TEST_POSTGRES_URL already set: that server is used and none is started.
# IA3_TEST_SERVICES=none: nothing is checked, installed or started (the PostgreSQL tests
# then skip, and the browser tests fail without chromium).
#
# Usage: scripts/test-services.sh COMMAND [ARGS...]
set -euo pipefail

say() { echo "test-services: $*" >&2; }

if [ "$#" -eq 0 ]; then
  say "usage: $0 COMMAND [ARGS...]"
  exit 2
fi

case "${IA3_TEST_SERVICES:-all}" in
  none) exec "$@" ;;
  all) ;;
  *)
    say "IA3_TEST_SERVICES is '${IA3_TEST_SERVICES}'; use 'all' (the default) or 'none'."
    exit 2
    ;;
esac

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
if [ -z "${IA3_TEST_POSTGRES_URL:-}" ] && [ -z "$(pg_bin)" ]; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "not installed: ${missing[*]} (the tests use it). Install it once with:"
    say "    sudo apt-get install -y ${missing[*]}"
    say "(or run without: IA3_TEST_SERVICES=none make test; see the README's Tests)"
    exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "${IA3_TEST_POSTGRES_URL:-}" ]; then
  exec "$@"
fi

# A throwaway server: its data, log and unix socket live in one temporary folder.
PGBIN=$(pg_bin)
PGROOT=$(mktemp -d "${TMPDIR:-/tmp}/ia3-test-pg.XXXXXX")
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root: there the server belongs to the postgres user.
  chown postgres: "$PGROOT"
  as_owner() { runuser -u postgres -- "$@"; }
else
  as_owner() { "$@"; }
fi

cleanup() {
  if [ -f "$PGROOT/data/postmaster.pid" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$PGROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PGROOT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_owner "$PGBIN/initdb" -D "$PGROOT/data" -U postgres -E UTF8 --locale=C.UTF-8 \
  --auth-local=trust --auth-host=scram-sha-256 >"$PGROOT/initdb.log" 2>&1 || {
  say "initdb failed:"
  cat "$PGROOT/initdb.log" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A port taken between choosing it and binding it: choose again.
started=""
for _ in 1 2 3; do
  PORT=$(free_port)
  if as_owner "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 60 \
    -o "-p $PORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    start >/dev/null; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  say "PostgreSQL did not start; its log:"
  cat "$PGROOT/server.log" >&2 || true
  exit 1
fi

as_owner "$PGBIN/psql" -h "$PGROOT" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -q -c "CREATE ROLE app LOGIN PASSWORD 'app' CREATEDB" -c "CREATE DATABASE appdb OWNER app" \
  >/dev/null
export IA3_TEST_POSTGRES_URL="postgresql+psycopg://app:app@127.0.0.1:$PORT/appdb"
say "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (in $PGROOT, removed afterwards)"

# Not exec: the traps above must run when the command ends.
status=0
"$@" || status=$?
exit "$status"
