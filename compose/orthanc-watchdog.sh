#!/bin/bash
# Orthanc under a watchdog (issue 16): Orthanc 1.10's PostgreSQL plugin (4.0) never reconnects once its index
# connection is lost (a PostgreSQL restart or failover): Orthanc keeps running and answers every index call with an
# error. Docker's health check alone restarts nothing outside Swarm, so this wrapper probes the index itself
# (GET /statistics counts rows in it) and, after WATCHDOG_FAILURES failed probes in a row, stops Orthanc and exits
# non-zero: the service's restart policy then starts a fresh Orthanc, which connects again.
# Usage (compose entrypoint): orthanc-watchdog.sh <Orthanc binary> <its arguments...>; Orthanc's REST port and the
# password of user "aperture" come from WATCHDOG_PORT (8042) and ORTHANC_PASSWORD.
set -u
PORT="${WATCHDOG_PORT:-8042}"
INTERVAL="${WATCHDOG_INTERVAL:-10}"
FAILURES="${WATCHDOG_FAILURES:-3}"
GRACE="${WATCHDOG_GRACE:-60}"
# Seconds a stopping Orthanc gets before SIGKILL (one whose index is gone may hang in its shutdown).
STOP_GRACE="${WATCHDOG_STOP_GRACE:-20}"
ORTHANC_BIN="${1:?usage: orthanc-watchdog.sh <Orthanc binary> <arguments...>}"
shift

probe() {
  local auth
  auth="$(printf 'aperture:%s' "${ORTHANC_PASSWORD:-}" | base64 -w0)"
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "GET /statistics HTTP/1.0\r\nAuthorization: Basic %s\r\n\r\n" "$1" >&3 && head -1 <&3 | grep -q " 200 "' "$PORT" "$auth"
}

"$ORTHANC_BIN" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit $?' TERM INT

started=$(date +%s)
failed=0
while kill -0 "$pid" 2>/dev/null; do
  sleep "$INTERVAL" &
  wait $!
  kill -0 "$pid" 2>/dev/null || break
  if probe; then
    failed=0
  elif (( $(date +%s) - started >= GRACE )); then
    failed=$((failed + 1))
    echo "orthanc-watchdog: index probe failed ($failed of $FAILURES)" >&2
    if (( failed >= FAILURES )); then
      echo "orthanc-watchdog: Orthanc lost its index; stopping it so that it is restarted" >&2
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 "$STOP_GRACE"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      exit 75
    fi
  fi
done
wait "$pid"
exit $?
