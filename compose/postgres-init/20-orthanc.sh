#!/bin/bash
# Runs once, when the PostgreSQL volume is first initialised: Orthanc's index gets its own role and database, apart
# from Aperture's and Keycloak's. Several Orthancs share it (orthanc.json: "Lock": false).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v opass="$ORTHANC_DB_PASSWORD" <<'SQL'
CREATE ROLE orthanc LOGIN PASSWORD :'opass';
CREATE DATABASE orthanc OWNER orthanc;
SQL
