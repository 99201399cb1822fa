#!/bin/sh
# The official postgres image's entrypoint contract, for Debian's PostgreSQL 15:
# on a fresh data directory make a cluster owned by POSTGRES_USER with
# POSTGRES_PASSWORD (and POSTGRES_INITDB_ARGS), create POSTGRES_DB, run /docker-entrypoint-initdb.d/*
# (*.sh run or sourced, *.sql through psql) against a server that listens on its
# socket only, then start the server for real on every address.
#
# When the image holds a cluster made with the initdb settings asked for
# (SANDBOX_PG_TEMPLATE, see the Dockerfile), it is unpacked instead of running
# initdb, and its superuser renamed and given the password: the same cluster.
set -eu

if [ "${1#-}" != "$1" ]; then
  set -- postgres "$@"
fi

# The temporary server's pid while the init scripts run.
init_server=

start_init_server() {
  postgres -D "$PGDATA" -c listen_addresses='' -c fsync=off &
  init_server=$!
  # Ready when postmaster.pid says so (pg_ctl -w looks every 100 ms; this every 10).
  until sed -n 8p "$PGDATA/postmaster.pid" 2>/dev/null | grep -q '^ready'; do
    if ! kill -0 "$init_server" 2>/dev/null; then
      echo "error: PostgreSQL stopped while starting to initialise the cluster (its log is above)" >&2
      exit 1
    fi
    sleep 0.01
  done
}

stop_init_server() {
  kill -INT "$init_server"
  wait "$init_server" || true
}

template_fits() {
  [ -n "${SANDBOX_PG_TEMPLATE:-}" ] && [ -s "$SANDBOX_PG_TEMPLATE/data.tar" ] \
    && [ "${POSTGRES_INITDB_ARGS:-}" = "$(cat "$SANDBOX_PG_TEMPLATE/initdb-args")" ] \
    && [ "${TZ:-}" = "$(cat "$SANDBOX_PG_TEMPLATE/tz")" ]
}

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  export POSTGRES_USER POSTGRES_DB
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: POSTGRES_PASSWORD is not set; give the database a password in the service's environment" >&2
    exit 1
  fi
  if template_fits; then
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    tar xf "$SANDBOX_PG_TEMPLATE/data.tar" -C "$PGDATA"
    start_init_server
    # The bootstrap superuser (made as `postgres`) takes POSTGRES_USER's name and
    # password; a session cannot rename its own user, hence the helper role.
    psql -v ON_ERROR_STOP=1 --username sandbox_init --dbname postgres -q \
      -v user="$POSTGRES_USER" -v password="$POSTGRES_PASSWORD" <<'SQL'
SELECT format('ALTER ROLE postgres RENAME TO %I', :'user') WHERE :'user' <> 'postgres' \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'password') \gexec
\connect postgres :user
DROP ROLE sandbox_init;
SQL
  else
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # POSTGRES_INITDB_ARGS: more initdb options, split on spaces (as the official image does).
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    start_init_server
  fi

  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -q \
      -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        echo "running $f"
        if [ -x "$f" ]; then "$f"; else . "$f"; fi
        ;;
      *.sql)
        echo "running $f"
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -q -f "$f"
        ;;
      *) [ -e "$f" ] && echo "ignoring $f" ;;
    esac
  done
  stop_init_server
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
