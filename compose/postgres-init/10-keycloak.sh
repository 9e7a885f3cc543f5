#!/bin/bash
# Runs once, when the PostgreSQL volume is first initialised: Keycloak gets its own role and database, so that
# neither application can read the other's tables.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v kcpass="$KEYCLOAK_DB_PASSWORD" <<'SQL'
CREATE ROLE keycloak LOGIN PASSWORD :'kcpass';
CREATE DATABASE keycloak OWNER keycloak;
REVOKE ALL ON DATABASE aperture FROM PUBLIC;
SQL
