"""The in-memory sink keeps the AlertSink contract, in memory or in a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.alerts import (
    OPENED,
    RESOLVED,
    WARNING,
    Checkpoint,
    FunctionStatus,
    StoredShare,
    Transition,
    fingerprint,
)
from detector.memory_sink import MemorySink
from dowguard.errors import StorageError
from ingest.events import Context

CTX = Context("aws", "111122223333", "us-east-1", "resize")
FP = fingerprint(CTX, "cost_spike")


def transition(seq: int, event: str = OPENED) -> Transition:
    return Transition(
        event, FP, "cost_spike", WARNING, CTX, 100.0, 100.0 + seq, seq, 0.5
    )


def test_commit_skips_transitions_already_stored() -> None:
    sink = MemorySink()

    sink.commit([transition(1)])
    sink.commit([transition(1), transition(2, RESOLVED)])

    assert [(t.seq, t.event) for t in sink.transitions()] == [
        (1, OPENED),
        (2, RESOLVED),
    ]
    assert sink.duplicates == 1
    assert sink.commits == 2


def test_checkpoints_are_kept_per_group_and_partition_number() -> None:
    sink = MemorySink()
    sink.commit([], {0: Checkpoint(0, b"a", {"t": 5})}, "g1")
    sink.commit(
        [], {0: Checkpoint(0, b"b", {"t": 9}), 1: Checkpoint(1, b"c", {})}, "g2"
    )
    sink.commit([], {0: Checkpoint(0, b"d", {"t": 7})}, "g1")

    assert sink.load_checkpoint("g1", 0) == Checkpoint(0, b"d", {"t": 7})
    assert sink.load_checkpoint("g2", 0) == Checkpoint(0, b"b", {"t": 9})
    assert sink.load_checkpoint("g1", 1) is None
    assert sorted(sink.checkpoints("g2")) == [0, 1]


def test_a_loaded_checkpoint_is_a_copy() -> None:
    sink = MemorySink()
    sink.commit([], {0: Checkpoint(0, b"a", {"t": 5})}, "g")

    loaded = sink.load_checkpoint("g", 0)
    assert loaded is not None
    loaded.offsets["t"] = 99

    assert sink.load_checkpoint("g", 0) == Checkpoint(0, b"a", {"t": 5})


def test_a_file_backed_sink_is_read_back_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "sink.pickle"
    first = MemorySink(path)
    first.commit([transition(1)], {2: Checkpoint(2, b"state", {"t": 3})}, "g")
    first.update_functions([FunctionStatus(CTX, 100.0, 1.5, 0.5, 2.0, 1)])

    second = MemorySink(path)
    second.commit([transition(1)])

    assert second.load_checkpoint("g", 2) == Checkpoint(2, b"state", {"t": 3})
    assert [t.seq for t in second.transitions()] == [1]
    assert second.duplicates == 1
    assert [f.cost_usd_per_hour for f in second.functions()] == [1.5]
    assert not [p for p in tmp_path.iterdir() if p.name != "sink.pickle"]


def test_a_file_that_is_not_a_sink_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "sink.pickle"
    path.write_bytes(b"not a pickle")

    with pytest.raises(StorageError, match=r"sink\.pickle: cannot read"):
        MemorySink(path)


def test_account_shares_are_replaced_with_their_partitions_checkpoint(
    tmp_path: Path,
) -> None:
    def share(partition: int, cost: float) -> StoredShare:
        return StoredShare(
            partition, "aws", "1", 86_400.0, cost, 0.0, 2e6, cost, 0.0, (cost,), 0, 9
        )

    path = tmp_path / "sink.pickle"
    sink = MemorySink(path)
    sink.commit([], {0: Checkpoint(0, b"a", {}, (share(0, 1.0),))}, "g")
    sink.commit([], {1: Checkpoint(1, b"b", {}, (share(1, 2.0),))}, "g")
    sink.commit([], {0: Checkpoint(0, b"c", {}, (share(0, 3.0),))}, "g")
    sink.commit([], {0: Checkpoint(0, b"d", {})}, "h")
    assert MemorySink(path).load_shares("g") == [share(0, 3.0), share(1, 2.0)]
    assert sink.load_shares("h") == []
