#!/usr/bin/env bash
# Real Apache Kafka (KRaft, single node) and Redis for development and tests.
#
#   scripts/services.sh start   [kafka|redis|all]   start (idempotent), wait until they accept connections
#   scripts/services.sh stop    [kafka|redis|all]   stop what this script started (data is kept)
#   scripts/services.sh restart [kafka|redis|all]   stop + start, same data directory
#   scripts/services.sh status  [kafka|redis|all]   exit 0 only if every named service answers
#
# Kafka comes from Maven Central (org.apache.kafka:kafka_2.13 and its runtime
# dependencies, resolved once with Maven into the cache dir; needs Java 17+).
# Redis is Debian's redis-server, installed with apt-get when missing.
#
# Environment (defaults in brackets):
#   CANDLEWAX_KAFKA_HOST [127.0.0.1]   CANDLEWAX_KAFKA_PORT [9092]
#   CANDLEWAX_KAFKA_CONTROLLER_PORT [KAFKA_PORT+1]   CANDLEWAX_KAFKA_HEAP [512m]
#   CANDLEWAX_REDIS_HOST [127.0.0.1]   CANDLEWAX_REDIS_PORT [6379]
#   CANDLEWAX_CACHE_DIR [<repo>/.cache]   (Maven repository and Kafka jars)
#   CANDLEWAX_SERVICES_DIR [<cache>/services]   (data, pid files; one directory per port)
#   CANDLEWAX_SERVICES_LOGS [<services>/logs]
#   CANDLEWAX_SERVICES_TIMEOUT [120]   seconds to wait for a service to come up
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KAFKA_HOST="${CANDLEWAX_KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${CANDLEWAX_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${CANDLEWAX_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_HEAP="${CANDLEWAX_KAFKA_HEAP:-512m}"
REDIS_HOST="${CANDLEWAX_REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${CANDLEWAX_REDIS_PORT:-6379}"
CACHE_DIR="${CANDLEWAX_CACHE_DIR:-$ROOT/.cache}"
STATE_DIR="${CANDLEWAX_SERVICES_DIR:-$CACHE_DIR/services}"
LOG_DIR="${CANDLEWAX_SERVICES_LOGS:-$STATE_DIR/logs}"
TIMEOUT="${CANDLEWAX_SERVICES_TIMEOUT:-120}"

POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
KAFKA_LIB="$CACHE_DIR/kafka-$KAFKA_VERSION/lib"
KAFKA_DIR="$STATE_DIR/kafka-$KAFKA_PORT"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$LOG_DIR/kafka-$KAFKA_PORT.log"
REDIS_DIR="$STATE_DIR/redis-$REDIS_PORT"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis-$REDIS_PORT.log"

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

# True if something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# PID from a pid file if that process is alive and its command line contains $2.
live_pid() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

wait_gone() {  # pid, seconds: SIGTERM was sent; SIGKILL after the grace period
  local pid="$1" i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for $2 s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

# ---- Kafka ----

kafka_jars() {
  [[ -f "$KAFKA_LIB/.complete" ]] && return 0
  command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Kafka jars)"
  log "resolving Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIB (first run only)"
  rm -rf "$KAFKA_LIB.tmp"
  mkdir -p "$LOG_DIR"
  if ! mvn -B -q -f "$POM" -Dmaven.repo.local="$CACHE_DIR/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB.tmp" \
    </dev/null >"$LOG_DIR/maven.log" 2>&1; then
    tail -n 40 "$LOG_DIR/maven.log" >&2
    die "resolving the Kafka jars failed (full log: $LOG_DIR/maven.log)"
  fi
  rm -rf "$KAFKA_LIB"
  mv "$KAFKA_LIB.tmp" "$KAFKA_LIB"
  touch "$KAFKA_LIB/.complete"
}

KAFKA_JAVA=(java "-Xmx$KAFKA_HEAP" "-Xms$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties"
  -Dkafka.log.file="$KAFKA_LOG" -cp "$KAFKA_LIB/*")

kafka_start() {
  if live_pid "$KAFKA_PID" kafka.Kafka >/dev/null && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "kafka already running on $KAFKA_HOST:$KAFKA_PORT"
    return 0
  fi
  if ! live_pid "$KAFKA_PID" kafka.Kafka >/dev/null && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "kafka: $KAFKA_HOST:$KAFKA_PORT is already served by a process this script did not start; using it"
    return 0
  fi
  kafka_jars
  mkdir -p "$KAFKA_DIR/data" "$LOG_DIR"
  sed -e "s|@HOST@|$KAFKA_HOST|g" -e "s|@PORT@|$KAFKA_PORT|g" \
    -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$KAFKA_DIR/data|g" \
    "$ROOT/scripts/kafka/server.properties.in" >"$KAFKA_DIR/server.properties"
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid)"
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$KAFKA_DIR/server.properties" >>"$LOG_DIR/kafka-$KAFKA_PORT.out" 2>&1 \
      || die "kafka: formatting $KAFKA_DIR/data failed, see $LOG_DIR/kafka-$KAFKA_PORT.out"
  fi
  local offset=0
  [[ -f "$KAFKA_LOG" ]] && offset="$(stat -c %s "$KAFKA_LOG")"
  # Own session, no inherited descriptors (not even the lock): the broker outlives
  # this script, ignores the caller's Ctrl-C and never holds its pipes open (pytest, CI).
  setsid "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" \
    </dev/null >>"$LOG_DIR/kafka-$KAFKA_PORT.out" 2>&1 9>&- &
  echo $! >"$KAFKA_PID"
  disown
  local i pid
  pid="$(cat "$KAFKA_PID")"
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || die "kafka exited while starting, see $KAFKA_LOG and $LOG_DIR/kafka-$KAFKA_PORT.out"
    if port_open "$KAFKA_HOST" "$KAFKA_PORT" \
      && tail -c "+$((offset + 1))" "$KAFKA_LOG" 2>/dev/null | grep -q "Kafka Server started"; then
      log "kafka $KAFKA_VERSION up on $KAFKA_HOST:$KAFKA_PORT (pid $pid, log $KAFKA_LOG)"
      return 0
    fi
    sleep 0.1
  done
  die "kafka did not come up within $TIMEOUT s, see $KAFKA_LOG"
}

kafka_stop() {
  local pid
  if pid="$(live_pid "$KAFKA_PID" kafka.Kafka)"; then
    kill -TERM "$pid"
    wait_gone "$pid" 60
    log "kafka on port $KAFKA_PORT stopped"
  else
    log "kafka on port $KAFKA_PORT is not running (from this script)"
  fi
  rm -f "$KAFKA_PID"
}

kafka_status() {
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    local pid
    pid="$(live_pid "$KAFKA_PID" kafka.Kafka || echo "not ours")"
    echo "kafka  up    $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
  else
    echo "kafka  down  $KAFKA_HOST:$KAFKA_PORT"
    return 1
  fi
}

# ---- Redis ----

redis_ping() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

redis_install() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  log "redis-server not found, installing Debian's package"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q redis-server >&2
}

redis_start() {
  if redis_ping; then
    log "redis already running on $REDIS_HOST:$REDIS_PORT"
    return 0
  fi
  redis_install
  mkdir -p "$REDIS_DIR" "$LOG_DIR"
  # Append-only file: the data survives a restart (the restart tests rely on it).
  redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" \
    --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
    --save "" --appendonly yes --appendfsync everysec </dev/null >/dev/null 2>&1 9>&-
  local i
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    if redis_ping; then
      log "redis up on $REDIS_HOST:$REDIS_PORT (pid $(cat "$REDIS_PID" 2>/dev/null), log $REDIS_LOG)"
      return 0
    fi
    sleep 0.1
  done
  die "redis did not come up within $TIMEOUT s, see $REDIS_LOG"
}

redis_stop() {
  local pid
  if pid="$(live_pid "$REDIS_PID" redis-server)"; then
    kill -TERM "$pid"
    wait_gone "$pid" 30
    log "redis on port $REDIS_PORT stopped"
  else
    log "redis on port $REDIS_PORT is not running (from this script)"
  fi
  rm -f "$REDIS_PID"
}

redis_status() {
  if redis_ping; then
    echo "redis  up    $REDIS_HOST:$REDIS_PORT (pid $(live_pid "$REDIS_PID" redis-server || echo "not ours"))"
  else
    echo "redis  down  $REDIS_HOST:$REDIS_PORT"
    return 1
  fi
}

# ---- main ----

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

action="${1:-}"
which="${2:-all}"
case "$which" in
  kafka) services=(kafka) ;;
  redis) services=(redis) ;;
  all) services=(kafka redis) ;;
  *) usage ;;
esac

mkdir -p "$STATE_DIR"
# One start/stop at a time per state dir (parallel test sessions share the servers).
if [[ "$action" != status ]]; then
  exec 9>"$STATE_DIR/.lock"
  flock 9
fi

rc=0
case "$action" in
  start) for s in "${services[@]}"; do "${s}_start"; done ;;
  stop) for s in "${services[@]}"; do "${s}_stop"; done ;;
  restart) for s in "${services[@]}"; do "${s}_stop"; "${s}_start"; done ;;
  status) for s in "${services[@]}"; do "${s}_status" || rc=1; done ;;
  *) usage ;;
esac
exit "$rc"
