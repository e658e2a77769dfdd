"""``dowguard run --kafka`` as a child process, configured through the environment.

The end-to-end tests run the command a user runs, so that the wiring in the
command line (store, enforcer, forwarder, signal handling) is what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest.events import Event
from ingest.kafka_io import make_producer, publish_events
from tests.conftest import ROOT

#: The roles of the topics a daemon reads and writes.
ROLES = ("invocations", "billing", "traces", "evidence", "deadletter")


def stream_topics(topics: Mapping[str, str]) -> dict[str, str]:
    """The input topics of a test's topic set, by role."""
    return {role: topics[role] for role in ("invocations", "billing", "traces")}


def publish(bootstrap: str, topics: Mapping[str, str], events: Sequence[Event]) -> None:
    """Send ``events`` to the daemon's input topics, each to its stream's."""
    producer = make_producer(bootstrap)
    try:
        sent = publish_events(producer, list(events), stream_topics(topics))
        assert sent == len(events)
    finally:
        producer.close()


def topic_env(topics: Mapping[str, str]) -> dict[str, str]:
    """The settings that point dowguard at a test's own topics."""
    return {f"DOWGUARD_TOPIC_{role.upper()}": topics[role] for role in ROLES}


def dowguard(
    *args: str, env: Mapping[str, str], timeout_s: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run one dowguard command to its end, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "dowguard.cli", *args],
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Only the settings given reach the child, not those of this shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWGUARD_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class DaemonProcess:
    """``dowguard run --kafka BOOTSTRAP`` in a child process; its output in a file."""

    def __init__(
        self,
        bootstrap: str,
        env: Mapping[str, str],
        log: Path,
        args: Sequence[str] = (),
    ) -> None:
        self.log = log
        command = ["run", "--kafka", bootstrap, *args]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dowguard.cli", *command],
                cwd=ROOT,
                env=child_env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, and the exit code once the daemon has finished."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon did not stop on SIGTERM\n{self.tail()}")

    def run_until(
        self,
        condition: Callable[[], bool],
        what: str,
        timeout_s: float = 180.0,
        detail: Callable[[], str] | None = None,
    ) -> None:
        """Wait for ``condition``, then SIGTERM; the daemon must exit with 0.

        It is killed if anything on the way fails, so no daemon outlives
        its test.
        """
        try:
            wait_for(condition, what, timeout_s, detail or self.tail)
            code = self.stop()
            assert code == 0, f"daemon exited with {code}\n{self.tail()}"
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float = 90.0,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{detail()}")
        time.sleep(0.1)


def caught_up(bootstrap: str, group: str, topics: list[str], partitions: int) -> bool:
    """Whether ``group`` has committed offsets at the end of every partition."""
    probe = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        end = probe.end_offsets(tps)
        return all((probe.committed(tp) or 0) >= end[tp] for tp in tps)
    finally:
        probe.close()
