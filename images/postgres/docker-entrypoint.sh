#!/usr/bin/env bash
# Entry point of lnsync-postgres (images/postgres/Dockerfile), with the official postgres image's
# interface, which is what the chart relies on:
#   POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)  the superuser's password; required unless
#                                                  POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER (default postgres), POSTGRES_DB (default: the user's name)
#   PGDATA (default /var/lib/postgresql/data), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD
#   (default scram-sha-256; md5 also works), *.sh/*.sql/*.sql.gz in /docker-entrypoint-initdb.d
# When PGDATA holds no cluster, it runs initdb with the password, creates the database and runs
# the init scripts on a server that listens only on its socket, then execs PostgreSQL in the
# foreground listening on every address: password authentication for TCP connections, trust only
# on the Unix socket inside the container. A later start with data just execs PostgreSQL.
# It runs as postgres (uid 999); started as root it prepares the directories and drops to it.
set -Eeuo pipefail

log() { printf '%s entrypoint: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# VAR_FILE=/path sets VAR from that file (Kubernetes/Docker secrets), as in the official image.
file_env() {
  local var=$1 file_var="${1}_FILE" default=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    die "both $var and $file_var are set (they are exclusive)"
  fi
  local value=$default
  if [ -n "${!var:-}" ]; then
    value=${!var}
  elif [ -n "${!file_var:-}" ]; then
    value=$(<"${!file_var}")
  fi
  export "$var"="$value"
  unset "$file_var"
}

# `docker-entrypoint.sh -c name=value` means postgres with those options; anything else runs as is.
if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

export PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  chmod 3777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if ! getent passwd "$(id -u)" >/dev/null; then
  die "uid $(id -u) has no passwd entry; run as postgres (999:999) or root"
fi

# A fresh volume is owned by root with the pod's fsGroup: our own sub-directory is what initdb wants.
mkdir -p "$PGDATA"
chmod 700 "$PGDATA" 2>/dev/null || :
mkdir -p /var/run/postgresql 2>/dev/null || :

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
    die "the database is uninitialised and POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust to allow anyone in)"
  fi
  if [ "$(ls -A "$PGDATA")" ]; then
    die "PGDATA=$PGDATA is not empty but holds no cluster (no PG_VERSION); refusing to initialise over it"
  fi

  log "initialising a PostgreSQL $(postgres --version | awk '{print $3}') cluster in $PGDATA"
  initdb_args=(--username="$POSTGRES_USER" --auth-local=trust --auth-host="$auth" --encoding=UTF8
               --locale=C.UTF-8)
  # shellcheck disable=SC2206  # word splitting is the point: several initdb options in one variable
  initdb_args+=($POSTGRES_INITDB_ARGS)
  if [ -n "$POSTGRES_PASSWORD" ]; then
    initdb --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${initdb_args[@]}" >&2
  else
    initdb "${initdb_args[@]}" >&2
  fi
  {
    printf '\n# lnsync-postgres entrypoint\n'
    printf "listen_addresses = '*'\n"
    printf "jit = off  # this image has no JIT provider\n"
  } >>"$PGDATA/postgresql.conf"
  printf '\n# TCP connections from anywhere, with a password\nhost all all all %s\n' "$auth" \
    >>"$PGDATA/pg_hba.conf"

  # A server reachable only on the socket while the database and the init scripts are made.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 start >&2
  psql=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER")
  if [ "$POSTGRES_DB" != postgres ]; then
    # psql -c does not expand :'variables'; the statements go on stdin.
    exists=$("${psql[@]}" --dbname postgres -tA -v db="$POSTGRES_DB" \
      <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")
    if [ -z "$exists" ]; then
      "${psql[@]}" --dbname postgres -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
    fi
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) log "running $f"; . "$f" ;;
      *.sql) log "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" >&2 ;;
      */\*) ;;  # the directory is empty
      *) log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >&2
  unset POSTGRES_PASSWORD
  log "initialised: user $POSTGRES_USER, database $POSTGRES_DB, host authentication $auth"
fi

log "starting PostgreSQL"
exec "$@"
