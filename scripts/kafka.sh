#!/usr/bin/env bash
# Start, stop or probe a single-node Apache Kafka broker (KRaft, broker and
# controller in one process) on 127.0.0.1, for development and the tests.
#
#   scripts/kafka.sh start|stop|status [--port 9092] [--controller-port N]
#
# The port defaults to $DOWGUARD_KAFKA_PORT, else 9092; the controller
# listens on the next port up unless told otherwise.
#
# The server jars are resolved once with Maven into .cache/ (git-ignored);
# the broker's config, data, log and pid file live in var/kafka-PORT/.
# `start` prints the bootstrap address on stdout; messages go to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_VERSION=${DOWGUARD_KAFKA_VERSION:-4.1.1}
START_TIMEOUT=${DOWGUARD_KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${DOWGUARD_KAFKA_STOP_TIMEOUT:-60}
# Small heap and the serial collector: this broker shares two cores with tests.
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseSerialGC -Djava.awt.headless=true}

usage() {
    echo "usage: $0 start|stop|status [--port N] [--controller-port N]" >&2
    exit 2
}

say() { echo "kafka.sh: $*" >&2; }

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
PORT=${DOWGUARD_KAFKA_PORT:-9092}
CONTROLLER_PORT=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) PORT=${2:?--port needs a value}; shift 2 ;;
        --controller-port) CONTROLLER_PORT=${2:?--controller-port needs a value}; shift 2 ;;
        *) usage ;;
    esac
done
[[ $PORT =~ ^[0-9]+$ ]] || { say "port must be a number, got '$PORT'"; exit 2; }
CONTROLLER_PORT=${CONTROLLER_PORT:-$((PORT + 1))}

LIBS=$ROOT/.cache/kafka/$KAFKA_VERSION/libs
M2_REPO=$ROOT/.cache/m2
STATE=$ROOT/var/kafka-$PORT
DATA=$STATE/data
CONFIG=$STATE/server.properties
LOG4J=$STATE/log4j2.properties
LOG=$STATE/broker.log
PIDFILE=$STATE/kafka.pid
BOOTSTRAP=127.0.0.1:$PORT

python_bin() {
    if [[ -x $ROOT/.venv/bin/python ]]; then
        echo "$ROOT/.venv/bin/python"
    else
        command -v python3
    fi
}

# True if something speaks the Kafka protocol on the port. kafka-python gives
# a real answer (metadata from the broker); without it, an open port is all
# that can be checked.
answers() {
    local py
    py=$(python_bin)
    if "$py" -c "import kafka" 2>/dev/null; then
        "$py" - "$BOOTSTRAP" <<'PY' 2>/dev/null
import logging
import sys

from kafka import KafkaAdminClient

logging.disable(logging.CRITICAL)
try:
    admin = KafkaAdminClient(
        bootstrap_servers=sys.argv[1],
        request_timeout_ms=5000,
        bootstrap_timeout_ms=5000,
        reconnect_backoff_max_ms=1000,
    )
    admin.describe_cluster()
    admin.close()
except Exception:
    sys.exit(1)
PY
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
    fi
}

# The pid of our broker for this port, if it is alive (not a reused pid).
our_pid() {
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$CONFIG" || return 1
    echo "$pid"
}

# A zombie keeps /proc/PID with an empty command line until it is reaped.
alive() {
    [[ -r /proc/$1/cmdline ]] && [[ -n $(tr -d '\0' <"/proc/$1/cmdline") ]]
}

log_tail() {
    if [[ -f $LOG ]]; then
        say "last lines of $LOG:"
        tail -n 40 "$LOG" >&2
    fi
}

resolve_jars() {
    [[ -f $LIBS/.complete ]] && return 0
    command -v mvn >/dev/null || { say "mvn not found: install maven"; exit 1; }
    say "resolving Kafka $KAFKA_VERSION jars with Maven into $LIBS"
    rm -rf "$LIBS.partial"
    mvn -q -B -f "$ROOT/scripts/pom.xml" \
        -Dmaven.repo.local="$M2_REPO" \
        -Dkafka.version="$KAFKA_VERSION" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS.partial" >&2
    rm -rf "$LIBS"
    mv "$LIBS.partial" "$LIBS"
    touch "$LIBS/.complete"
}

write_config() {
    mkdir -p "$STATE" "$DATA"
    cat >"$CONFIG" <<EOF
# Written by scripts/kafka.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA
# Topics are created explicitly with the partition count the detector needs:
# an auto-created topic would silently break co-partitioning.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
    cat >"$LOG4J" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF
}

format_storage() {
    [[ -f $DATA/meta.properties ]] && return 0
    local cluster_id
    # A cluster id is 16 random bytes in unpadded URL-safe base64. It may
    # begin with "-", so it is passed as --cluster-id=ID, never as a word
    # of its own that the tool's argument parser would take for an option.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    say "formatting $DATA (cluster $cluster_id)"
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J" \
        kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$CONFIG" \
        >>"$LOG" 2>&1 || { log_tail; say "formatting failed"; exit 1; }
}

start() {
    local pid
    if pid=$(our_pid); then
        if answers; then
            say "already running (pid $pid) on $BOOTSTRAP"
            echo "$BOOTSTRAP"
            return 0
        fi
        say "pid $pid is alive but not answering yet; waiting"
    else
        if answers; then
            say "something else already answers on $BOOTSTRAP; not starting"
            echo "$BOOTSTRAP"
            return 0
        fi
        command -v java >/dev/null || { say "java not found: install a JDK 17+"; exit 1; }
        resolve_jars
        write_config
        format_storage
        say "starting broker on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT)"
        # setsid detaches the broker from the caller's session, so that it
        # outlives the shell or test process that started it.
        # shellcheck disable=SC2086
        setsid java $HEAP_OPTS $JVM_OPTS \
            -Dlog4j2.configurationFile="$LOG4J" \
            -cp "$LIBS/*" kafka.Kafka "$CONFIG" \
            >>"$LOG" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$PIDFILE"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until answers; do
        if ! alive "$pid"; then
            log_tail
            say "broker exited during startup"
            rm -f "$PIDFILE"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log_tail
            say "broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s"
            exit 1
        fi
        sleep 1
    done
    say "ready (pid $pid) on $BOOTSTRAP; log $LOG"
    echo "$BOOTSTRAP"
}

stop() {
    local pid
    if ! pid=$(our_pid); then
        rm -f "$PIDFILE"
        say "not running on port $PORT"
        return 0
    fi
    say "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            say "pid $pid still alive after ${STOP_TIMEOUT}s; killing"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    while alive "$pid"; do sleep 0.2; done
    rm -f "$PIDFILE"
    say "stopped"
}

status() {
    local pid=""
    pid=$(our_pid) || true
    if answers; then
        say "answering on $BOOTSTRAP${pid:+ (pid $pid)}"
        return 0
    fi
    say "not answering on $BOOTSTRAP${pid:+ (pid $pid is alive)}"
    return 1
}

case $COMMAND in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
