#!/usr/bin/env bash
# Start, stop or probe a Prometheus on 127.0.0.1 that scrapes dowguard's
# /metrics, for trying the dashboards by hand (the tests start their own).
#
#   scripts/prometheus.sh start|stop|status [--port 9090] [--target HOST:PORT]...
#
# Needs the Debian package `prometheus`. Config, data, log and pid file live
# in var/prometheus-PORT/. `start` prints the server URL on stdout (the URL
# to give `dowguard dashboards provision --prometheus-url`); messages go to
# stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROMETHEUS=${DOWGUARD_PROMETHEUS:-/usr/bin/prometheus}
START_TIMEOUT=${DOWGUARD_PROMETHEUS_START_TIMEOUT:-60}

usage() {
    echo "usage: $0 start|stop|status [--port N] [--target HOST:PORT]..." >&2
    exit 2
}

say() { echo "prometheus.sh: $*" >&2; }

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
PORT=9090
TARGETS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) PORT=${2:?}; shift 2 ;;
        --target) TARGETS+=("${2:?}"); shift 2 ;;
        *) usage ;;
    esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("127.0.0.1:9464")

DIR=$ROOT/var/prometheus-$PORT
PIDFILE=$DIR/prometheus.pid
URL=http://127.0.0.1:$PORT

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

ready() { curl -fsS "$URL/-/ready" >/dev/null 2>&1; }

start() {
    [[ -x $PROMETHEUS ]] || { say "no $PROMETHEUS (apt-get install -y prometheus)"; exit 1; }
    if running; then say "already running, pid $(cat "$PIDFILE")"; echo "$URL"; return; fi
    mkdir -p "$DIR/data"
    {
        echo "global:"
        echo "  scrape_interval: 5s"
        echo "scrape_configs:"
        echo "  - job_name: dowguard"
        echo "    static_configs:"
        echo "      - targets:"
        for target in "${TARGETS[@]}"; do echo "          - '$target'"; done
    } >"$DIR/prometheus.yml"
    "$PROMETHEUS" --config.file="$DIR/prometheus.yml" \
        --storage.tsdb.path="$DIR/data" \
        --web.listen-address="127.0.0.1:$PORT" >"$DIR/prometheus.log" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    until ready; do
        if ! running; then say "exited; see $DIR/prometheus.log"; exit 1; fi
        if ((SECONDS >= deadline)); then say "not ready after ${START_TIMEOUT}s"; exit 1; fi
        sleep 0.5
    done
    say "ready, pid $(cat "$PIDFILE"), scraping ${TARGETS[*]}"
    echo "$URL"
}

stop() {
    if ! running; then say "not running"; rm -f "$PIDFILE"; return; fi
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then kill -9 "$pid"; break; fi
        sleep 0.2
    done
    rm -f "$PIDFILE"
    say "stopped"
}

case $COMMAND in
    start) start ;;
    stop) stop ;;
    status) if running && ready; then echo "$URL"; else say "not running"; exit 1; fi ;;
    *) usage ;;
esac
