#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) on 127.0.0.1, no Docker.
#
#   deploy/kafka/kafka.sh up       fetch jars once, format storage, start, wait until it answers
#   deploy/kafka/kafka.sh down     stop the broker this script started
#   deploy/kafka/kafka.sh status   say whether a broker answers on the port
#
# Settings (environment):
#   KAFKA_PORT        broker port            (default 19092)
#   KAFKA_CTL_PORT    controller port        (default 19093)
#   KAFKA_HOME_DIR    data, logs, pid file   (default $RELAY_DATA_DIR/kafka, i.e. ./.relay/kafka)
#   KAFKA_HEAP_OPTS   JVM heap               (default -Xms256m -Xmx512m)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/lib"
PORT="${KAFKA_PORT:-19092}"
CTL_PORT="${KAFKA_CTL_PORT:-19093}"
HOME_DIR="${KAFKA_HOME_DIR:-${RELAY_DATA_DIR:-./.relay}/kafka}"
mkdir -p "$HOME_DIR"
HOME_DIR="$(cd "$HOME_DIR" && pwd)"
PID_FILE="$HOME_DIR/kafka.pid"
LOG_FILE="$HOME_DIR/kafka.out"
PROPS="$HOME_DIR/server.properties"

log() { echo "kafka: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch_jars() {
  if [ -f "$LIB/.complete" ]; then return; fi
  log "fetching broker jars from Maven Central into $LIB (once)"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB" >&2
  touch "$LIB/.complete"
}

write_config() {
  cat >"$PROPS" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CTL_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CTL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$HOME_DIR/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
message.max.bytes=2097152
EOF
  cat >"$HOME_DIR/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
EOF
}

java_run() {
  # shellcheck disable=SC2086
  java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$HOME_DIR/log4j2.properties" \
    -cp "$LIB/*" "$@"
}

running_pid() {
  if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    cat "$PID_FILE"
  fi
}

cmd_up() {
  if port_open "$PORT"; then
    log "a broker already answers on 127.0.0.1:$PORT; reusing it"
    return 0
  fi
  fetch_jars
  write_config
  if [ ! -f "$HOME_DIR/data/meta.properties" ]; then
    log "formatting storage in $HOME_DIR/data"
    java_run kafka.tools.StorageTool format --ignore-formatted \
      -t "$(java_run kafka.tools.StorageTool random-uuid)" -c "$PROPS" >/dev/null
  fi
  log "starting broker on 127.0.0.1:$PORT (log: $LOG_FILE)"
  nohup bash -c "exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC \
    -Dlog4j2.configurationFile='$HOME_DIR/log4j2.properties' \
    -cp '$LIB/*' kafka.Kafka '$PROPS'" >"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 240); do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "broker exited during start; last lines of $LOG_FILE:"
      tail -20 "$LOG_FILE" >&2
      exit 1
    fi
    if port_open "$PORT"; then
      log "ready on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"))"
      return 0
    fi
    sleep 0.25
  done
  log "broker did not become ready within 60 s; see $LOG_FILE"
  exit 1
}

cmd_down() {
  local pid
  pid="$(running_pid)"
  if [ -z "$pid" ]; then
    log "no broker started from $HOME_DIR is running"
    rm -f "$PID_FILE"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; log "stopped"; return 0; }
    sleep 0.25
  done
  log "broker did not stop in 30 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

cmd_status() {
  if port_open "$PORT"; then
    local pid
    pid="$(running_pid)"
    echo "kafka: up on 127.0.0.1:$PORT${pid:+ (pid $pid, started from $HOME_DIR)}"
  else
    echo "kafka: down (nothing answers on 127.0.0.1:$PORT)"
    return 1
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 up|down|status|fetch" >&2; exit 2 ;;
esac
