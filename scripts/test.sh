#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: a virtualenv with dowguard and
# its dev extra, a Kafka broker and a PostgreSQL server started for the run
# (and stopped after it), then ruff, mypy and every test, the server-bound
# ones included. Extra arguments go to pytest.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# Debian packages it needs (PostgreSQL, Prometheus, Alertmanager, Java 17,
# Maven) are installed by .ci/run; on a machine that has them, this is all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { echo "test.sh: $*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
    say "creating the virtualenv in .venv"
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if [[ ! -f .venv/.installed ]] || [[ pyproject.toml -nt .venv/.installed ]]; then
    say "installing dowguard[dev]"
    python -m pip install -q --upgrade pip
    python -m pip install -q -e '.[dev]'
    touch .venv/.installed
fi

started=()
cleanup() {
    for svc in "${started[@]}"; do
        bash "scripts/$svc.sh" stop >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

if [[ -z ${DOWGUARD_KAFKA:-} ]]; then
    DOWGUARD_KAFKA=$(bash scripts/kafka.sh start)
    started+=(kafka)
fi
if [[ -z ${DOWGUARD_TEST_POSTGRES:-} ]]; then
    DOWGUARD_TEST_POSTGRES=$(bash scripts/postgres.sh start)
    started+=(postgres)
fi
export DOWGUARD_KAFKA DOWGUARD_TEST_POSTGRES
say "kafka at $DOWGUARD_KAFKA, postgres at ${DOWGUARD_TEST_POSTGRES%%@*}@..."

status=0
say "ruff"
ruff check . || status=1
ruff format --check . || status=1
say "mypy"
mypy || status=1
say "pytest"
set +e
python -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    say "pytest collected no tests"
    status=1
elif [[ $rc -ne 0 ]]; then
    status=1
fi
exit $status
