"""An :class:`~detector.alerts.AlertSink` kept in memory, optionally in a file.

It is the stand-in for the SQL store in tests and in development: same
contract (transitions deduplicated on fingerprint and seq, checkpoints and
their account shares per group and partition number, all of one commit
applied at once), no database.
With a path, every commit is written to that file atomically, so that a
process killed at any point leaves the last commit readable to the next.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detector.alerts import Checkpoint, FunctionStatus, StoredShare, Transition
from dowguard.errors import StorageError
from ingest.events import Context

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Contents:
    transitions: dict[tuple[str, int], Transition] = field(default_factory=dict)
    order: list[tuple[str, int]] = field(default_factory=list)
    checkpoints: dict[tuple[str, int], Checkpoint] = field(default_factory=dict)
    # The account shares of each checkpoint, by (group, partition number).
    shares: dict[tuple[str, int], tuple[StoredShare, ...]] = field(default_factory=dict)
    functions: dict[Context, FunctionStatus] = field(default_factory=dict)
    commits: int = 0
    duplicates: int = 0


class MemorySink:
    """Transitions, checkpoints and function status in a dict, thread-safe.

    ``path`` (optional) is a pickle file that this sink loads on creation
    and rewrites on every commit; only point it at files this process or
    its tests wrote, since unpickling runs code.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._data = _load(self.path) if self.path else _Contents()

    def commit(
        self,
        transitions: Sequence[Transition],
        checkpoints: Mapping[int, Checkpoint] | None = None,
        group: str = "",
    ) -> None:
        with self._lock:
            data = self._data
            for tr in transitions:
                key = (tr.fingerprint, tr.seq)
                if key in data.transitions:
                    data.duplicates += 1
                    continue
                data.transitions[key] = tr
                data.order.append(key)
            for number, cp in (checkpoints or {}).items():
                data.checkpoints[(group, number)] = Checkpoint(
                    cp.partition, cp.state, dict(cp.offsets)
                )
                data.shares[(group, number)] = cp.shares
            data.commits += 1
            if self.path:
                _save(self.path, data)

    def load_checkpoint(self, group: str, partition: int) -> Checkpoint | None:
        with self._lock:
            cp = self._data.checkpoints.get((group, partition))
            return (
                None
                if cp is None
                else Checkpoint(cp.partition, cp.state, dict(cp.offsets))
            )

    def load_shares(self, group: str) -> list[StoredShare]:
        with self._lock:
            return [
                share
                for (g, _), shares in sorted(self._data.shares.items())
                if g == group
                for share in shares
            ]

    def update_functions(self, rows: Sequence[FunctionStatus]) -> None:
        with self._lock:
            for row in rows:
                self._data.functions[row.context] = row
            if self.path and rows:
                _save(self.path, self._data)

    # Reading back, for tests and development.

    def transitions(self) -> list[Transition]:
        """Every stored transition, in the order it was first stored."""
        with self._lock:
            return [self._data.transitions[key] for key in self._data.order]

    def checkpoints(self, group: str) -> dict[int, Checkpoint]:
        """The latest checkpoint of every partition number of ``group``."""
        with self._lock:
            return {
                number: cp
                for (g, number), cp in self._data.checkpoints.items()
                if g == group
            }

    def functions(self) -> list[FunctionStatus]:
        with self._lock:
            return list(self._data.functions.values())

    @property
    def commits(self) -> int:
        """How many commits were applied."""
        return self._data.commits

    @property
    def duplicates(self) -> int:
        """How many transitions were skipped as already stored."""
        return self._data.duplicates


def _load(path: Path) -> _Contents:
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)
    except FileNotFoundError:
        return _Contents()
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise StorageError(f"memory sink file {path}: cannot read: {exc}") from exc
    if not isinstance(data, _Contents):
        raise StorageError(
            f"memory sink file {path}: holds {type(data).__name__}, not sink contents"
        )
    if not hasattr(data, "shares"):
        data.shares = {}  # written before account shares were stored
    return data


def _save(path: Path, data: _Contents) -> None:
    # Write a sibling file and rename it over the old one: readers and a
    # process killed mid-write see either the previous commit or this one.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(data, fh, protocol=5)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"memory sink file {path}: cannot write: {exc}") from exc
    logger.debug("memory sink saved path=%s commits=%d", path, data.commits)
