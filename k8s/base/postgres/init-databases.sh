#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d).
# For every service, creates a login role and a database owned by it, taken from that
# service's own DATABASE_URL (postgres://<role>:<password>@postgres:5432/<database>), which
# this pod receives as <SERVICE>_DATABASE_URL from the very Secret the service reads: one
# source of truth. No two services may share a database or a role, and no role may connect
# to a database but its own.
# Later password changes are not picked up (init scripts run once): use ALTER ROLE.
set -euo pipefail

# Percent-decoding for URL parts (a password may contain %XX escapes).
urldecode() { printf '%b' "${1//%/\\x}"; }

declare -A seen_db=() seen_role=()
for svc in users inventory payments orders shipping; do
  var="${svc^^}_DATABASE_URL"
  url=${!var:-}
  if [ -z "$url" ]; then
    echo "init-databases: $var is not set" >&2
    exit 1
  fi
  rest=${url#*://}            # role:password@host:port/database?params
  creds=${rest%%@*}
  role=$(urldecode "${creds%%:*}")
  password=$(urldecode "${creds#*:}")
  db=${rest#*/}
  db=$(urldecode "${db%%\?*}")
  if [ -z "$role" ] || [ -z "$password" ] || [ -z "$db" ] || [ "$creds" = "$rest" ]; then
    echo "init-databases: $var must look like postgres://ROLE:PASSWORD@HOST:PORT/DATABASE" >&2
    exit 1
  fi
  if [ -n "${seen_db[$db]:-}" ] || [ -n "${seen_role[$role]:-}" ]; then
    echo "init-databases: $svc reuses the database or role of ${seen_db[$db]:-${seen_role[$role]}}" >&2
    exit 1
  fi
  seen_db[$db]=$svc
  seen_role[$role]=$svc
  echo "init-databases: $svc -> role $role, database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v role="$role" -v password="$password" -v db="$db" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"role";
SQL
done
