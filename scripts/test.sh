#!/usr/bin/env bash
# The one test command of dowguard: lint, format check, types, then the whole
# test suite against a real Kafka broker and PostgreSQL server.
#
#   scripts/test.sh [PYTEST ARGS...]
#
# From a fresh clone it creates the virtualenv (.venv, or $DOWGUARD_VENV),
# installs the project with its dev extra, and starts the servers that are
# not given in DOWGUARD_KAFKA / DOWGUARD_TEST_POSTGRES; it stops on exit the
# servers it started. Every check runs even after one fails; the exit code
# is non-zero if any failed, including a pytest run that collected nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${DOWGUARD_VENV:-$ROOT/.venv}

say() { echo "test.sh: $*" >&2; }

# Python environment: create it once, reinstall when pyproject.toml changes.
if [[ ! -x $VENV/bin/python ]]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
stamp=$VENV/.dowguard-pyproject.sha256
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(<"$stamp") != "$wanted" ]]; then
    say "installing dowguard and its dev dependencies into $VENV"
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -e '.[dev]'
    echo "$wanted" >"$stamp"
fi

# Servers: use the ones given, else start ours and remember to stop them.
started=()
cleanup() {
    local script
    for script in "${started[@]}"; do
        "scripts/$script" stop || say "$script stop failed"
    done
}
trap cleanup EXIT
# Without these traps a TERM (a CI timeout) would skip the EXIT trap.
trap 'exit 143' TERM
trap 'exit 130' INT

if [[ -z ${DOWGUARD_KAFKA:-} ]]; then
    scripts/kafka.sh status 2>/dev/null || started+=(kafka.sh)
    DOWGUARD_KAFKA=$(scripts/kafka.sh start)
    export DOWGUARD_KAFKA
fi
if [[ -z ${DOWGUARD_TEST_POSTGRES:-} ]]; then
    scripts/postgres.sh status 2>/dev/null || started+=(postgres.sh)
    DOWGUARD_TEST_POSTGRES=$(scripts/postgres.sh start)
    export DOWGUARD_TEST_POSTGRES
fi
say "kafka $DOWGUARD_KAFKA, postgres ${DOWGUARD_TEST_POSTGRES%%@*}@..."

failed=()
check() {
    local name=$1
    shift
    local rc=0
    say "running $name"
    "$@" || rc=$?
    if ((rc != 0)); then
        say "$name failed (exit $rc)"
        failed+=("$name")
    fi
}

check "ruff check" ruff check .
check "ruff format" ruff format --check .
check "mypy" mypy
# Every test, whatever its markers: CI runs the Kafka and PostgreSQL tests.
# pytest exits 5 when it collects nothing, which counts as a failure here.
check "pytest" python -m pytest -p no:cacheprovider "$@"

if ((${#failed[@]})); then
    say "FAILED: ${failed[*]} (after ${SECONDS}s)"
    exit 1
fi
say "all checks passed in ${SECONDS}s"
