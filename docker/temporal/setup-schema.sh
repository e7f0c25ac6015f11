#!/bin/sh
# Temporal's persistence schema on PostgreSQL, for docker/compose.yaml's temporal-schema job.
# Creates the default-store and visibility-store databases when missing, then applies every
# schema version this admin-tools image ships. Re-running it is safe: setup-schema -v 0.0 leaves
# an initialised database alone and update-schema applies only versions not yet recorded.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
PORT="${DB_PORT:-5432}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" "$@"
}

for store in temporal:temporal temporal_visibility:visibility; do
  db="${store%%:*}"
  dir="${store##*:}"
  echo "schema: database $db"
  # `create` fails when the database already exists; a real connection problem fails the
  # setup-schema step right after it, so only that outcome is tolerated here.
  sql --db "$db" create || echo "schema: database $db exists"
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$SCHEMA_ROOT/$dir/versioned"
done
echo "schema: done"
