"""Shared fixtures: the real Kafka broker and PostgreSQL server, fresh topics.

A server given in the environment (``DOWGUARD_KAFKA``,
``DOWGUARD_TEST_POSTGRES``) is used as it is. Otherwise the project's
scripts start one for the session and stop it at the end, if this session
started it. When a server cannot be had, tests that need it fail under CI
(``CI=true``) and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# moto's server, shared by every folder that talks to AWS.
from tests.moto_server import aws_env, moto, moto_url  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"

logger = logging.getLogger(__name__)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, detail: str) -> None:
    """Fail under CI, skip elsewhere: a missing server is never silent in CI."""
    message = f"{what} is not available: {detail}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_script(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/*.sh, capturing its output."""
    return subprocess.run(
        [str(SCRIPTS / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _server(script: str, name: str, port_args: list[str]) -> Iterator[str]:
    """Yield the address a script prints on start; stop it after if we started it."""
    if run_script(script, "status", *port_args, timeout=60).returncode == 0:
        started = False
    else:
        started = True
    result = run_script(script, "start", *port_args)
    if result.returncode != 0:
        unavailable(name, f"{script} start failed:\n{result.stderr[-3000:]}")
    address = result.stdout.strip().splitlines()[-1]
    try:
        yield address
    finally:
        if started:
            stopped = run_script(script, "stop", *port_args)
            if stopped.returncode != 0:
                logger.warning("%s stop failed: %s", script, stopped.stderr)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a running Kafka broker."""
    given = os.environ.get("DOWGUARD_KAFKA")
    if given:
        yield given
        return
    port = os.environ.get("DOWGUARD_KAFKA_PORT", "9092")
    yield from _server("kafka.sh", "Kafka", ["--port", port])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of an empty-or-reused PostgreSQL database."""
    given = os.environ.get("DOWGUARD_TEST_POSTGRES")
    if given:
        yield given
        return
    port = os.environ.get("DOWGUARD_POSTGRES_PORT", "55432")
    yield from _server("postgres.sh", "PostgreSQL", ["--port", port])


TopicFactory = Callable[..., dict[str, str]]


@pytest.fixture
def unique_topics(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[TopicFactory]:
    """A factory of fresh topics: ``unique_topics("a", "b", partitions=3)``.

    Returns a mapping from each given role to a topic name unique to this
    test, created with ``partitions`` partitions; all are deleted afterwards.
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests")
    created: list[str] = []
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]

    def make(*roles: str, partitions: int = 3) -> dict[str, str]:
        tag = uuid.uuid4().hex[:8]
        names = {role: f"test.{stem}.{tag}.{role}" for role in roles}
        spec = {
            name: {"num_partitions": partitions, "replication_factor": 1}
            for name in names.values()
        }
        admin.create_topics(spec, wait_for_metadata=True)
        created.extend(names.values())
        return names

    try:
        yield make
    finally:
        if created:
            try:
                admin.delete_topics(created)
            except Exception as exc:  # the broker may be gone at teardown
                logger.warning("deleting test topics failed: %s", exc)
        admin.close()
