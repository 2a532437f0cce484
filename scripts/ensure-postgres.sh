#!/usr/bin/env bash
# Makes a local PostgreSQL ready for the migration tests, on a fresh Debian machine as root:
# installs the server when it is missing, creates and starts a cluster on 127.0.0.1:5432, and makes
# sure the role `turquoise` (password `turquoise`, CREATEDB) and the database `turquoise_test` exist.
# Idempotent; when all of that is already true it only runs one login check. The last line it prints
# is the URL the tests read: TURQUOISE_TEST_PG_URL=...
set -euo pipefail

PORT=${TURQUOISE_PG_PORT:-5432}  # overridable to try the script beside a running cluster
HOST=127.0.0.1
ROLE=turquoise
PASSWORD=turquoise
DB=turquoise_test
URL="postgres://${ROLE}:${PASSWORD}@${HOST}:${PORT}/${DB}"

log() { echo "ensure-postgres: $*" >&2; }

# The fast path: the tests' own login works and the role can create the per-test databases.
ready() {
  command -v psql >/dev/null 2>&1 || return 1
  local createdb
  createdb=$(PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=3 psql -X -q -t -A -h "$HOST" -p "$PORT" -U "$ROLE" -d "$DB" \
    -c "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user" 2>/dev/null) || return 1
  [ "$createdb" = "t" ]
}

if ready; then
  echo "TURQUOISE_TEST_PG_URL=${URL}"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "PostgreSQL is not ready at ${HOST}:${PORT} and setting it up needs root; run: sudo $0"
  exit 1
fi

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null)" ]; then
  log "installing PostgreSQL"
  bash "$(dirname "$0")/apt-install.sh" postgresql
fi

# The cluster on our port; else the newest version's main cluster when there is none yet; else a
# cluster of our own, so an existing cluster on another port is never reconfigured.
cluster=$(pg_lsclusters -h | awk -v port="$PORT" '$3 == port { print $1, $2; exit }')
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  name=main
  if pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
    name=turquoise
  fi
  log "creating cluster ${version}/${name} on port ${PORT}"
  pg_createcluster -p "$PORT" "$version" "$name" >&2
  cluster="$version $name"
fi
read -r version name <<<"$cluster"

# Debian's default is listen_addresses = 'localhost'; make sure 127.0.0.1 is covered either way.
listen=$(pg_conftool -s "$version" "$name" show listen_addresses 2>/dev/null || echo localhost)
case ",${listen// /}," in
  *,localhost,* | *,127.0.0.1,* | *,\*,* | *,0.0.0.0,*) ;;
  *)
    log "adding 127.0.0.1 to listen_addresses of ${version}/${name}"
    pg_conftool "$version" "$name" set listen_addresses "${listen},127.0.0.1"
    # The setting takes effect at the next start, just below.
    pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
    ;;
esac

status=$(pg_lsclusters -h | awk -v v="$version" -v n="$name" '$1 == v && $2 == n { print $4 }')
if [ "$status" != "online" ]; then
  log "starting cluster ${version}/${name}"
  pg_ctlcluster "$version" "$name" start >&2
fi

for _ in $(seq 1 50); do
  pg_isready -q -h "$HOST" -p "$PORT" && break
  sleep 0.2
done
if ! pg_isready -q -h "$HOST" -p "$PORT"; then
  log "PostgreSQL ${version}/${name} does not accept connections on ${HOST}:${PORT}; see /var/log/postgresql/postgresql-${version}-${name}.log"
  exit 1
fi

as_postgres() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }

as_postgres -d postgres >&2 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${ROLE}') THEN
    CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
  ELSE
    ALTER ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
  END IF;
END
\$\$;
SQL
if [ "$(as_postgres -t -A -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '${DB}'")" != "1" ]; then
  as_postgres -d postgres -c "CREATE DATABASE ${DB} OWNER ${ROLE}" >&2
fi

if ! ready; then
  log "the role ${ROLE} still cannot log in over TCP at ${HOST}:${PORT}; check pg_hba.conf of ${version}/${name} (host ... 127.0.0.1/32 scram-sha-256 or md5)"
  exit 1
fi
echo "TURQUOISE_TEST_PG_URL=${URL}"
