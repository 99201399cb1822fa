#!/bin/sh
# Creates one database per bank service (POSTGRES_MULTIPLE_DATABASES, comma
# separated) on a fresh data directory. Run by the postgres image's entrypoint
# (the official image's and the one `sandbox images build` makes) from
# /docker-entrypoint-initdb.d, while the server listens on its socket only.
set -eu
# One psql for all of them (each -c its own statement: CREATE DATABASE cannot
# share a transaction). In a function: its arguments are its own, should the
# entrypoint source this file.
create_databases() {
  set --
  for db in $(echo "${POSTGRES_MULTIPLE_DATABASES:-}" | tr ',' ' '); do
    echo "creating database $db"
    # FILE_COPY: copying the small template beats writing it through the WAL (15's default).
    set -- "$@" -c "CREATE DATABASE \"$db\" STRATEGY = FILE_COPY"
  done
  if [ $# -gt 0 ]; then
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres "$@"
  fi
}
create_databases
