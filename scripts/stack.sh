#!/usr/bin/env bash
# Project-local services for Aperture: PostgreSQL, Redis and Orthanc, each on its own port and data folder.
#
#   scripts/stack.sh up       install missing Debian packages (as root), start everything, print the env
#   scripts/stack.sh down     stop everything this stack started
#   scripts/stack.sh status   say what runs
#   scripts/stack.sh env      print the settings the gateway needs (KEY=value lines)
#   scripts/stack.sh wipe     stop and delete the stack folder
#   scripts/stack.sh packages only install missing Debian packages (WITH_BROWSER=1 adds chromium)
#   scripts/stack.sh orthanc  start only Orthanc (ORTHANC_DICOM_ALLOWED: calling AE allow-list, see start_orthanc)
#
# One folder is one stack. STACK_DIR picks it (default .stack/dev); ports come from PG_PORT, REDIS_PORT,
# ORTHANC_HTTP_PORT and ORTHANC_DICOM_PORT, remembered in $STACK_DIR/ports so that later calls agree.
# Idempotent: `up` on a running stack does nothing; after a crash, stale pid files are cleared and it starts again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack/dev}"
mkdir -p "$STACK_DIR"
STACK_DIR="$(cd "$STACK_DIR" && pwd)"
# As root, PostgreSQL runs as the 'postgres' user, which must be able to reach its data folder.
if [[ $(id -u) -eq 0 ]]; then chmod a+x "$STACK_DIR"; fi
PORTS_FILE="$STACK_DIR/ports"

# Ports: explicit env wins, then what this stack used before, then defaults.
if [[ -f "$PORTS_FILE" ]]; then
  # shellcheck disable=SC1090
  source <(sed 's/^/SAVED_/' "$PORTS_FILE")
fi
PG_PORT="${PG_PORT:-${SAVED_PG_PORT:-55432}}"
REDIS_PORT="${REDIS_PORT:-${SAVED_REDIS_PORT:-56379}}"
ORTHANC_HTTP_PORT="${ORTHANC_HTTP_PORT:-${SAVED_ORTHANC_HTTP_PORT:-58042}}"
ORTHANC_DICOM_PORT="${ORTHANC_DICOM_PORT:-${SAVED_ORTHANC_DICOM_PORT:-54242}}"
# The archive's own AE title (a second Orthanc started as a test peer gets another one).
ORTHANC_AET="${ORTHANC_AET:-APERTURE}"
[[ "$ORTHANC_AET" =~ ^[A-Za-z0-9_.-]{1,16}$ ]] || { echo "ORTHANC_AET: not an AE title" >&2; exit 1; }
STABLE_AGE="${ORTHANC_STABLE_AGE:-${SAVED_STABLE_AGE:-5}}"
# Orthanc's index: postgresql (default of `up`) or sqlite (default of `orthanc`, which starts no PostgreSQL).
if [[ "${1:-up}" == orthanc ]]; then ORTHANC_INDEX="${ORTHANC_INDEX:-${SAVED_ORTHANC_INDEX:-sqlite}}"; fi
ORTHANC_INDEX="${ORTHANC_INDEX:-${SAVED_ORTHANC_INDEX:-postgresql}}"
[[ "$ORTHANC_INDEX" == postgresql || "$ORTHANC_INDEX" == sqlite ]] || { echo "[stack] error: ORTHANC_INDEX is postgresql or sqlite" >&2; exit 1; }

PG_DATA="$STACK_DIR/pg"
PG_SOCK="$STACK_DIR/run"
REDIS_DIR="$STACK_DIR/redis"
ORTHANC_DIR="$STACK_DIR/orthanc"
LOG_DIR="$STACK_DIR/log"
PG_DB=aperture
PG_USER=aperture

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x "$d/pg_ctl" ]] && { echo "$d"; return; }
  done
  command -v pg_ctl >/dev/null && dirname "$(command -v pg_ctl)" && return
  return 1
}

orthanc_plugin() { # orthanc_plugin <library name>
  local f
  for f in "/usr/share/orthanc/plugins/$1" "/usr/lib/orthanc/plugins/$1"; do
    [[ -f "$f" ]] && { echo "$f"; return; }
  done
  return 1
}
# Only the DICOMweb plugin (the reference the tests and benchmarks compare against). The GDCM plugin
# (orthanc-gdcm, JPEG 2000 decoding) is deliberately not loaded: with Debian's 1.5 build, decoding crashed
# Orthanc (stack overflow in libgdcmMSFF on an HTTP worker thread) during the WADO tests.
dicomweb_plugin() { orthanc_plugin libOrthancDicomWeb.so; }
# Debian's orthanc-python: runs orthanc-config/aperture-arrivals.py, the C-STORE filter that hands re-arrivals of
# archived objects to the gateway (Orthanc 1.10 logs no change for them).
python_plugin() { orthanc_plugin libOrthancPython.so; }
# Debian's orthanc-postgresql: Orthanc's index in its own database (`orthanc`) of the stack's PostgreSQL cluster, as
# production runs it (the SQLite index slows down past a few tens of thousands of instances), and so that one
# pg_basebackup or one streaming replica holds the Aperture index and Orthanc's index at the same point in time
# (docs/two-sites.md). The files stay on disk (StorageDirectory). ORTHANC_INDEX=sqlite keeps the SQLite index; it is
# the default for `stack.sh orthanc`, an Orthanc alone without the stack's PostgreSQL.
pg_index_plugin() { orthanc_plugin libOrthancPostgreSQLIndex.so; }
ORTHANC_DB=orthanc

ensure_packages() {
  local missing=()
  pg_bindir >/dev/null || missing+=(postgresql)
  command -v Orthanc >/dev/null || missing+=(orthanc)
  dicomweb_plugin >/dev/null || missing+=(orthanc-dicomweb)
  python_plugin >/dev/null || missing+=(orthanc-python)
  pg_index_plugin >/dev/null || missing+=(orthanc-postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v dcmsend >/dev/null || missing+=(dcmtk)
  command -v dciodvfy >/dev/null || missing+=(dicom3tools)
  # The decoder reference test (test/decode-reference.itest.ts) checks JPEG 2000 and HTJ2K against OpenJPEG's tool.
  command -v opj_decompress >/dev/null || missing+=(libopenjp2-tools)
  command -v curl >/dev/null || missing+=(curl)
  # The compose stack's reverse-proxy configuration is checked with `haproxy -c` on a test certificate (test/deploy.itest.ts).
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v openssl >/dev/null || missing+=(openssl)
  # pipelines (issue 19): tools run in bubblewrap under prlimit; dcm2niix and the pydicom threshold tool are the demo's.
  command -v bwrap >/dev/null || missing+=(bubblewrap)
  command -v prlimit >/dev/null || missing+=(util-linux)
  command -v dcm2niix >/dev/null || missing+=(dcm2niix)
  /usr/bin/python3 -c 'import pydicom, numpy' 2>/dev/null || missing+=(python3-pydicom python3-numpy)
  # Tests also drive the OHIF viewer in Debian's Chromium (scripts/test.sh asks for it).
  if [[ "${WITH_BROWSER:-0}" == 1 ]]; then command -v chromium >/dev/null || missing+=(chromium); fi
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]} (run as root once, or: sudo apt-get install ${missing[*]})"
  fi
  log "installing Debian packages: ${missing[*]}"
  # A package's post-install may try to start its system service; we run our own instances instead.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    > "$LOG_DIR/apt.log" 2>&1 || rc=$?
  rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || { tail -20 "$LOG_DIR/apt.log" >&2; die "apt-get failed (see $LOG_DIR/apt.log)"; }
}

# PostgreSQL refuses to run as root: as root, the cluster belongs to the 'postgres' system user.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A pid names a live process: it exists and is not a zombie. Right after a kill -9 the dead process stays a zombie
# until init reaps it, and `kill -0` (or pg_ctl status) still succeeds on it, so "already running" would be a lie.
proc_alive() { # proc_alive <pid>
  local pid=$1 state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}
pid_in() { [[ -f "$1" ]] && head -1 "$1" | tr -d '[:space:]'; } # pid_in <pid file>

wait_for() { # wait_for <seconds> <description> <command...>
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what did not come up within ${secs}s (logs in $LOG_DIR)"
}

start_postgres() {
  local bin; bin="$(pg_bindir)"
  mkdir -p "$PG_SOCK"
  # The log folder too: a data folder made elsewhere (a restore, a standby's base backup) skips initdb below.
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$PG_SOCK" "$LOG_DIR"; fi
  if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
    log "initialising PostgreSQL cluster in $PG_DATA"
    rm -rf "$PG_DATA"; mkdir -p "$PG_DATA"
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$PG_DATA" "$LOG_DIR"; fi
    as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$LOG_DIR/initdb.log" 2>&1 \
      || as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --locale=C >"$LOG_DIR/initdb.log" 2>&1 \
      || die "initdb failed (see $LOG_DIR/initdb.log)"
  fi
  local pid; pid="$(pid_in "$PG_DATA/postmaster.pid" || true)"
  if [[ -n "$pid" ]] && proc_alive "$pid"; then
    # A live postmaster owns the data folder (starting a second one would corrupt it): it must answer, or we stop.
    wait_for 30 "PostgreSQL (pid $pid, running but not answering)" "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
    log "PostgreSQL already running on port $PG_PORT"
  else
    # The postmaster is gone (or a zombie, which PostgreSQL's own lock check would take for a live one): its lock
    # files are stale. Its children notice the death within a moment and leave; until they have, the shared memory
    # block is still attached and a new postmaster refuses to start, hence a few attempts.
    rm -f "$PG_DATA/postmaster.pid" "$PG_SOCK/.s.PGSQL.$PG_PORT.lock"
    local attempt
    for attempt in 1 2 3 4 5; do
      as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-on} -c max_connections=200 -c shared_buffers=256MB" \
        start >/dev/null 2>&1 && break
      [[ $attempt -eq 5 ]] && { tail -20 "$LOG_DIR/postgres.log" >&2; die "PostgreSQL did not start"; }
      sleep 1
    done
    log "PostgreSQL started on 127.0.0.1:$PG_PORT"
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE $PG_DB" >/dev/null
  fi
  # Orthanc's index, next to Aperture's in the same cluster (a standby has it already, and is read-only).
  if [[ "$("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT pg_is_in_recovery()")" == f ]] \
    && ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$ORTHANC_DB'" | grep -q 1; then
    "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE $ORTHANC_DB" >/dev/null
  fi
}

start_redis() {
  mkdir -p "$REDIS_DIR"
  local pid; pid="$(pid_in "$REDIS_DIR/redis.pid" || true)"
  if [[ -n "$pid" ]] && proc_alive "$pid" && redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "Redis already running on port $REDIS_PORT"
    return
  fi
  # Alive but silent (hung): replace it; Redis holds no data here that the append-only file does not.
  if [[ -n "$pid" ]] && proc_alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$REDIS_DIR/redis.pid"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes --dir "$REDIS_DIR" \
    --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$LOG_DIR/redis.log" \
    --save "" --appendonly yes --maxmemory-policy noeviction >/dev/null
  wait_for 20 Redis redis-cli -p "$REDIS_PORT" ping
  log "Redis started on 127.0.0.1:$REDIS_PORT"
}

orthanc_credentials() {
  if [[ ! -f "$ORTHANC_DIR/credentials" ]]; then
    mkdir -p "$ORTHANC_DIR"
    printf 'aperture:%s\n' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$ORTHANC_DIR/credentials"
    chmod 600 "$ORTHANC_DIR/credentials"
  fi
  cat "$ORTHANC_DIR/credentials"
}

# ORTHANC_DICOM_ALLOWED="CT01@10.0.0.5,MR02@10.0.0.6": the calling AE titles (each optionally @ its address) that may
# C-STORE/C-ECHO to Orthanc. Empty = anyone (demo, tests). Orthanc checks addresses for all or for none
# (DicomCheckModalityHost), so an entry without an address turns the address check off for every entry.
DICOM_ALWAYS_ALLOW=true DICOM_CHECK_HOST=false DICOM_MODALITIES=""
dicom_allow_list() {
  local entries entry aet host n=0 hosts=true
  [[ -n "${ORTHANC_DICOM_ALLOWED:-}" ]] || return 0
  IFS=', ' read -r -a entries <<< "$ORTHANC_DICOM_ALLOWED"
  for entry in "${entries[@]}"; do
    [[ -n "$entry" ]] || continue
    aet="${entry%%@*}"; host=""
    [[ "$entry" == *@* ]] && host="${entry#*@}"
    [[ "$aet" =~ ^[A-Za-z0-9_.\ -]{1,16}$ ]] || die "ORTHANC_DICOM_ALLOWED: '$aet' is not an AE title"
    [[ -z "$host" || "$host" =~ ^[A-Za-z0-9.:-]+$ ]] || die "ORTHANC_DICOM_ALLOWED: '$host' is not an address"
    [[ -n "$host" ]] || hosts=false
    # Port is unused: these modalities are only ever callers, never sent to.
    DICOM_MODALITIES+="${DICOM_MODALITIES:+, }\"allowed$n\" : { \"AET\" : \"$aet\", \"Host\" : \"${host:-0.0.0.0}\", \"Port\" : 104, \"AllowEcho\" : true, \"AllowStore\" : true, \"AllowFind\" : false, \"AllowMove\" : false, \"AllowGet\" : false, \"AllowStorageCommitment\" : false }"
    n=$((n + 1))
  done
  ((n > 0)) || die "ORTHANC_DICOM_ALLOWED has no entries"
  DICOM_ALWAYS_ALLOW=false
  DICOM_CHECK_HOST=$hosts
  log "DICOM allow-list: $n calling AE title(s), address check $hosts"
}

start_orthanc() {
  mkdir -p "$ORTHANC_DIR/storage"
  local creds user pass plugin pyplugin index_plugin=""
  creds="$(orthanc_credentials)"; user="${creds%%:*}"; pass="${creds#*:}"
  plugin="$(dicomweb_plugin)"
  pyplugin="$(python_plugin)" || die "Orthanc's Python plugin is missing (Debian package orthanc-python)"
  if [[ "$ORTHANC_INDEX" == postgresql ]]; then
    index_plugin="$(pg_index_plugin)" || die "Orthanc's PostgreSQL plugin is missing (Debian package orthanc-postgresql)"
    index_plugin=", \"$index_plugin\""
  fi
  dicom_allow_list
  sed -e "s#@STORAGE_DIR@#$ORTHANC_DIR/storage#g" -e "s#@HTTP_PORT@#$ORTHANC_HTTP_PORT#g" \
      -e "s#@DICOM_PORT@#$ORTHANC_DICOM_PORT#g" -e "s#@ORTHANC_USER@#$user#g" \
      -e "s#@ORTHANC_PASSWORD@#$pass#g" -e "s#@DICOMWEB_PLUGIN@#$plugin#g" -e "s#@STABLE_AGE@#$STABLE_AGE#g" \
      -e "s#@DICOM_ALWAYS_ALLOW@#$DICOM_ALWAYS_ALLOW#g" -e "s#@DICOM_CHECK_HOST@#$DICOM_CHECK_HOST#g" \
      -e "s#@DICOM_MODALITIES@#$DICOM_MODALITIES#g" -e "s#@PYTHON_PLUGIN@#$pyplugin#g" \
      -e "s#@INDEX_PLUGIN@#$index_plugin#g" -e "s#@PG_PORT@#$PG_PORT#g" -e "s#@PG_USER@#$PG_USER#g" \
      -e "s#@ORTHANC_DB@#$ORTHANC_DB#g" \
      -e "s#@DICOM_AET@#$ORTHANC_AET#g" \
      -e "s#@ARRIVALS_PY@#$ROOT/orthanc-config/aperture-arrivals.py#g" \
      "$ROOT/orthanc-config/orthanc.json.tmpl" > "$ORTHANC_DIR/orthanc.json"
  local running; running="$(pid_in "$ORTHANC_DIR/orthanc.pid" || true)"
  if proc_alive "$running"; then
    # Orthanc 1.10's PostgreSQL plugin never reconnects once the database went away (every call then answers 503
    # "no connection to the server"): an Orthanc alive but unable to read its index is restarted.
    if [[ "$ORTHANC_INDEX" != postgresql ]] || curl -fsS -m 10 -u "$user:$pass" "http://127.0.0.1:$ORTHANC_HTTP_PORT/statistics" >/dev/null 2>&1; then
      log "Orthanc already running on port $ORTHANC_HTTP_PORT"
      return
    fi
    log "Orthanc (pid $running) lost its index database: restarting it"
    kill "$running" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do proc_alive "$running" || break; sleep 0.1; done
    kill -9 "$running" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do proc_alive "$running" || break; sleep 0.1; done
  fi
  local preload=""
  if [[ -f "$ROOT/scripts/loopback-bind.so" ]]; then preload="$ROOT/scripts/loopback-bind.so"; fi
  LD_PRELOAD="$preload" APERTURE_LOOPBACK_PORTS="$ORTHANC_HTTP_PORT" \
    setsid nohup Orthanc --logdir="$LOG_DIR" "$ORTHANC_DIR/orthanc.json" >"$LOG_DIR/orthanc.out" 2>&1 < /dev/null &
  echo $! > "$ORTHANC_DIR/orthanc.pid"
  wait_for 60 Orthanc curl -fsS -u "$user:$pass" "http://127.0.0.1:$ORTHANC_HTTP_PORT/system"
  log "Orthanc started: REST on 127.0.0.1:$ORTHANC_HTTP_PORT, DICOM on port $ORTHANC_DICOM_PORT (AET $ORTHANC_AET)"
}

print_env() {
  local creds; creds="$(orthanc_credentials)"
  cat <<EOF
DATABASE_URL=postgres://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
ORTHANC_URL=http://127.0.0.1:$ORTHANC_HTTP_PORT
ORTHANC_USERNAME=${creds%%:*}
ORTHANC_PASSWORD=${creds#*:}
ORTHANC_DICOM_PORT=$ORTHANC_DICOM_PORT
ORTHANC_STORAGE_DIR=$ORTHANC_DIR/storage
ARCHIVE_FILE_READS=true
EOF
}

save_ports() {
  cat > "$PORTS_FILE" <<EOF
PG_PORT=$PG_PORT
REDIS_PORT=$REDIS_PORT
ORTHANC_HTTP_PORT=$ORTHANC_HTTP_PORT
ORTHANC_DICOM_PORT=$ORTHANC_DICOM_PORT
STABLE_AGE=$STABLE_AGE
ORTHANC_INDEX=$ORTHANC_INDEX
EOF
}

stop_all() {
  local bin
  if [[ -f "$ORTHANC_DIR/orthanc.pid" ]]; then
    local pid; pid="$(cat "$ORTHANC_DIR/orthanc.pid")"
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$ORTHANC_DIR/orthanc.pid"
  fi
  if [[ -f "$REDIS_DIR/redis.pid" ]]; then
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
    rm -f "$REDIS_DIR/redis.pid"
  fi
  if bin="$(pg_bindir)" && [[ -d "$PG_DATA" ]]; then
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  log "stopped stack in $STACK_DIR"
}

build_loopback_shim() {
  # Orthanc 1.10 cannot choose its HTTP bind address; a tiny LD_PRELOAD shim pins that one socket to 127.0.0.1.
  local src="$ROOT/scripts/loopback-bind.c" so="$ROOT/scripts/loopback-bind.so"
  [[ -f "$src" ]] || return 0
  if [[ ! -f "$so" || "$src" -nt "$so" ]] && command -v cc >/dev/null; then
    cc -shared -fPIC -O2 -o "$so" "$src" -ldl 2>"$LOG_DIR/shim.log" || log "loopback shim not built (see $LOG_DIR/shim.log)"
  fi
}

cmd="${1:-up}"
mkdir -p "$LOG_DIR"
case "$cmd" in
  up)
    ensure_packages
    save_ports
    build_loopback_shim
    start_postgres
    start_redis
    start_orthanc
    print_env > "$STACK_DIR/env"
    print_env
    ;;
  orthanc)
    # Orthanc alone (e.g. a second archive with other DICOM settings for a test); `down` stops it.
    save_ports
    build_loopback_shim
    start_orthanc
    print_env > "$STACK_DIR/env"
    print_env
    ;;
  packages) ensure_packages ;;
  down) stop_all ;;
  wipe) stop_all; rm -rf "$STACK_DIR" ;;
  env) print_env ;;
  status)
    port_open "$PG_PORT" && echo "postgres: up ($PG_PORT)" || echo "postgres: down"
    port_open "$REDIS_PORT" && echo "redis: up ($REDIS_PORT)" || echo "redis: down"
    port_open "$ORTHANC_HTTP_PORT" && echo "orthanc: up ($ORTHANC_HTTP_PORT, DICOM $ORTHANC_DICOM_PORT)" || echo "orthanc: down"
    ;;
  *) die "usage: $0 up|orthanc|down|status|env|wipe|packages" ;;
esac
