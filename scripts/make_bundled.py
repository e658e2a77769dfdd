"""Regenerate data/recording, the bundled recording, from its fixed seed.

Run from the repository root: ``python scripts/make_bundled.py``. It checks
that the scenarios meet what the bundled recording promises (see
data/README.md) and that the files stay small, and fails otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dowguard.simulate import SimConfig, simulate, write_recording

logger = logging.getLogger(__name__)

#: The seed of the bundled recording; changing it changes every byte.
BUNDLED_SEED = 1
#: Upper bound on the committed files, all together.
MAX_BYTES = 5 * 1024 * 1024
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "recording"


def check(labels: dict[str, Any], size: int) -> list[str]:
    """What the recording fails to promise, as readable lines (none: fine)."""
    problems: list[str] = []
    if size > MAX_BYTES:
        problems.append(f"files take {size} bytes, more than {MAX_BYTES}")
    minutes = (labels["end"] - labels["start"]) / 60.0
    if not 30.0 <= minutes <= 40.0:
        problems.append(f"recording lasts {minutes:.1f} minutes, not 30-40")
    kinds = {s["kind"]: s for s in labels["scenarios"]}
    spike = kinds.get("cost_spike")
    if spike is None:
        problems.append("no cost spike")
    else:
        got = spike["intensity"]
        if (got["rate_multiplier"] or 0) < 20:
            problems.append(f"spike rate only x{got['rate_multiplier']}")
        if got["extra_usd_per_hour"] < 5:
            problems.append(f"spike adds only ${got['extra_usd_per_hour']}/h")
        if spike["end"] - spike["onset"] < 180:
            problems.append("spike shorter than 3 minutes")
        if spike["onset"] - labels["start"] < 15 * 60:
            problems.append("less than 15 minutes of normal traffic before the spike")
    loop = kinds.get("recursive_loop")
    if loop is None:
        problems.append("no recursive loop")
    else:
        got = loop["intensity"]
        hops = got["hop_interval_s"]
        if got["max_hops"] < 10:
            problems.append(f"loop reaches only {got['max_hops']} hops")
        if hops["min"] < 0.2 or hops["max"] > 2.0:
            problems.append(f"hop intervals {hops['min']}-{hops['max']} s, not 0.2-2")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    recording = simulate(SimConfig(seed=BUNDLED_SEED))
    paths = write_recording(recording, args.out)
    size = 0
    for name, path in sorted(paths.items()):
        size += path.stat().st_size
        print(f"{path.stat().st_size:>10}  {name}")
    print(f"{size:>10}  total")
    problems = check(recording.labels, size)
    for problem in problems:
        print(f"make_bundled: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
