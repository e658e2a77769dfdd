"""A daemon run in a thread of the test process, for the tests that look at
its counters and partitions while it runs; a hang or a crash fails the test."""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any

import pytest

from detector.daemon import Daemon
from dowguard.config import Settings
from tests.integration.cli_daemon import ROLES

#: How long a stopped daemon may take to leave its loop.
STOP_S = 60.0


def daemon_settings(
    bootstrap: str, topics: Mapping[str, str], group: str, **fields: Any
) -> Settings:
    """Settings for a daemon of ``group`` on a test's own topics."""
    return Settings(
        kafka_bootstrap=bootstrap,
        group_id=group,
        **{f"topic_{role}": topics[role] for role in ROLES},
        **fields,
    )


class DaemonThread:
    """Runs ``daemon`` in a thread from construction until :meth:`stop`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:
            # Kept for stop(): an exception in a thread alone fails no test.
            self.error = exc
            raise

    def stop(self) -> None:
        """Stop the daemon and fail the test if it hangs or has failed."""
        self.daemon.stop()
        self.thread.join(timeout=STOP_S)
        if self.thread.is_alive():
            frame = sys._current_frames().get(self.thread.ident or 0)
            stack = "".join(traceback.format_stack(frame)) if frame else "?"
            pytest.fail(f"daemon did not stop within {STOP_S:g} s; it is at:\n{stack}")
        assert self.error is None, f"daemon failed: {self.error!r}"
