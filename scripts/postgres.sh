#!/usr/bin/env bash
# Start, stop or probe a private PostgreSQL cluster for the tests, built from
# the Debian packages and independent of the system cluster.
#
#   scripts/postgres.sh start|stop|status|url|env [--port 55432]
#
# The port defaults to $DOWGUARD_POSTGRES_PORT, else 55432.
#
# The cluster lives in var/postgres-PORT/ (git-ignored), listens on
# 127.0.0.1 only and holds the database dowguard_test owned by the role
# dowguard. `start` and `url` print its SQLAlchemy URL on stdout; `env`
# prints an export line for DOWGUARD_TEST_POSTGRES. Messages go to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
START_TIMEOUT=${DOWGUARD_POSTGRES_START_TIMEOUT:-60}
DB_NAME=dowguard_test
DB_USER=dowguard
# A throwaway test cluster on loopback: the password only keeps the URL honest.
DB_PASSWORD=dowguard

usage() {
    echo "usage: $0 start|stop|status|url|env [--port N]" >&2
    exit 2
}

say() { echo "postgres.sh: $*" >&2; }

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
PORT=${DOWGUARD_POSTGRES_PORT:-55432}
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) PORT=${2:?--port needs a value}; shift 2 ;;
        *) usage ;;
    esac
done
[[ $PORT =~ ^[0-9]+$ ]] || { say "port must be a number, got '$PORT'"; exit 2; }

URL="postgresql+psycopg2://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"

find_bindir() {
    local dir
    if command -v pg_config >/dev/null && dir=$(pg_config --bindir 2>/dev/null) \
        && [[ -x $dir/initdb ]]; then
        echo "$dir"
        return 0
    fi
    # Debian keeps the server binaries out of PATH, one directory per version.
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d \
        2>/dev/null | sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/initdb ]]; then
        echo "$dir"
        return 0
    fi
    say "PostgreSQL server binaries not found: apt-get install -y postgresql"
    exit 1
}

# The server refuses to run as root, so as root every server command runs as
# the postgres system user, and the cluster directory belongs to it.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

STATE=$ROOT/var/postgres-$PORT
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$ROOT"; then
    # The postgres user cannot reach into this checkout (a home directory
    # with mode 700, say), so the cluster goes where it can.
    STATE=/var/tmp/dowguard-postgres-$PORT
fi
DATA=$STATE/data
SOCKETS=$STATE/run
LOG=$STATE/postgres.log

psql_admin() {
    as_owner "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKETS" -p "$PORT" \
        -U postgres -d postgres "$@"
}

answers() {
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 3
}

init_cluster() {
    [[ -f $DATA/PG_VERSION ]] && return 0
    say "creating cluster in $DATA"
    mkdir -p "$STATE"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$STATE"
    fi
    as_owner mkdir -p "$SOCKETS"
    as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >>"$LOG.init" 2>&1 || {
        tail -n 20 "$LOG.init" >&2
        say "initdb failed"
        exit 1
    }
    as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# Written by scripts/postgres.sh for a private test cluster.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKETS'
max_connections = 100
shared_buffers = 64MB
# Durability is not wanted from a test cluster; speed is.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

create_database() {
    local exists
    exists=$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")
    if [[ $exists != 1 ]]; then
        psql_admin -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
    fi
    exists=$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")
    if [[ $exists != 1 ]]; then
        psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
    fi
}

start() {
    BINDIR=$(find_bindir)
    if answers; then
        if [[ -f $DATA/postmaster.pid ]]; then
            create_database
            say "already running on 127.0.0.1:$PORT"
            echo "$URL"
            return 0
        fi
        say "another server already listens on 127.0.0.1:$PORT; pick another --port"
        exit 1
    fi
    init_cluster
    say "starting on 127.0.0.1:$PORT"
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$START_TIMEOUT" \
        start >/dev/null || {
        tail -n 30 "$LOG" >&2
        say "server did not start within ${START_TIMEOUT}s"
        exit 1
    }
    create_database
    say "ready; log $LOG"
    echo "$URL"
}

stop() {
    BINDIR=$(find_bindir)
    if [[ ! -f $DATA/postmaster.pid ]]; then
        say "not running on port $PORT"
        return 0
    fi
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped"
}

status() {
    BINDIR=$(find_bindir)
    if answers; then
        say "answering on 127.0.0.1:$PORT"
        return 0
    fi
    say "not answering on 127.0.0.1:$PORT"
    return 1
}

case $COMMAND in
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "$URL" ;;
    env) echo "export DOWGUARD_TEST_POSTGRES='$URL'" ;;
    *) usage ;;
esac
