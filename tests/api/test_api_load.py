"""The API load benchmark: its report, its process accounting, one short run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import api_load
from bench.api_load import ALERTS_PATH, BASELINE_PATH, Figures, Run


def figures(route: str, p50: float, p99: float) -> Figures:
    return Figures(
        route=route,
        requests=100,
        errors=0,
        dropped=0,
        achieved_rps=200.0,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=p99 * 2,
        server_cpu_ms=1.5,
        load_avg=1.0,
    )


def test_a_run_reports_the_list_against_its_baseline() -> None:
    run = Run(
        "sqlite",
        1000,
        1,
        0.5,
        figures(BASELINE_PATH, 2.0, 10.0),
        figures(ALERTS_PATH, 5.0, 60.0),
    )
    assert (run.p50_ratio, run.p99_ratio) == (2.5, 6.0)
    doc = run.to_json()
    assert doc["baseline"]["route"] == BASELINE_PATH
    assert doc["listing"]["p99_ms"] == 60.0
    assert doc["meets_target"] is False
    json.dumps(doc)
    lines = api_load.table([run]).splitlines()
    assert BASELINE_PATH in lines[1] and ALERTS_PATH in lines[2]
    assert "p50 x2.5, p99 x6.0; MISSES" in lines[3]


def test_the_server_cpu_counts_its_worker_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in api_load._process_tree(os.getpid()):
            assert time.monotonic() < deadline, "the child never showed up"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_short_run_answers_every_request(tmp_path: Path, workers: int) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    run = api_load.run(url, "sqlite", 300, rate=20, seconds=1.0, workers=workers)
    assert run.workers == workers
    for passed in (run.baseline, run.listing):
        assert passed.requests == 20
        assert passed.errors == 0
        assert passed.server_cpu_ms >= 0
    # The server's CPU is read in clock ticks (10 ms): twenty light requests
    # of one route may take less than one, but both routes' together do not.
    assert run.baseline.server_cpu_ms + run.listing.server_cpu_ms > 0
    assert run.listing.route == ALERTS_PATH
