#!/bin/sh
# Debian's PostgreSQL with the official postgres image's contract: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB create the role and database on first start (empty PGDATA); PGPORT is the port; password
# (scram-sha-256) authentication for TCP clients. POSTGRES_LISTEN: listen_addresses (default '*').
set -eu
BIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
PGPORT=${PGPORT:-5432}
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
[ -n "${POSTGRES_PASSWORD:-}" ] || { echo "postgres-standin: POSTGRES_PASSWORD is required" >&2; exit 1; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { runuser -u postgres -- "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp) && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile" && chown postgres "$pwfile"
  as_postgres "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # Create the database over the Unix socket only, before any TCP client can connect.
  as_postgres "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -p $PGPORT" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    as_postgres psql -v ON_ERROR_STOP=1 -q -p "$PGPORT" -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  as_postgres "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-standin: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi
exec runuser -u postgres -- "$BIN/postgres" -D "$PGDATA" -p "$PGPORT" -c "listen_addresses=${POSTGRES_LISTEN:-*}"
