"""The audit trail of enforcement: one record per action, written before it runs."""

from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from dowguard.errors import StorageError
from ingest.events import Context

THROTTLE = "throttle"
RELEASE = "release"
VERBS = (THROTTLE, RELEASE)

PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"
ATTEMPTING = "attempting"
SUCCEEDED = "succeeded"
FAILED = "failed"
REJECTED = "rejected"
SKIPPED = "skipped"
STATES = (
    PENDING_APPROVAL,
    APPROVED,
    ATTEMPTING,
    SUCCEEDED,
    FAILED,
    REJECTED,
    SKIPPED,
)
#: States after which a record never changes again.
FINAL_STATES = frozenset({SUCCEEDED, FAILED, REJECTED, SKIPPED})


def new_action_id() -> str:
    """A fresh, unique action id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(slots=True)
class ActionRecord:
    """One throttle or release of one function context, and how it went.

    ``key`` is unique per alert episode and verb, so the same episode can
    never cause a second action. ``previous`` is what the hook found before
    a throttle (a release puts it back); ``outcome`` is what the hook or the
    receiver answered, or the error that stopped it. Times are epoch seconds.
    """

    id: str
    key: str
    fingerprint: str
    context: Context
    verb: str
    hook: str
    state: str
    reason: str
    created_at: float
    updated_at: float
    attempts: int = 0
    previous: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the record (the API and the CLI show this)."""
        data = dataclasses.asdict(self)
        data["context"] = self.context._asdict()
        return data

    def copy(self) -> ActionRecord:
        """A deep copy, so a stored record cannot be changed behind the log."""
        return dataclasses.replace(
            self,
            previous=copy.deepcopy(self.previous),
            outcome=copy.deepcopy(self.outcome),
        )


class ActionLog(Protocol):
    """Where action records are kept; implementations must be thread safe.

    A record is stored in ``pending_approval``, ``approved`` or
    ``attempting`` state and updated as the action proceeds; the log keeps
    the latest version of each.
    """

    def record(self, rec: ActionRecord) -> bool:
        """Store a new record; False (and nothing stored) if its key exists."""

    def update(self, rec: ActionRecord) -> None:
        """Replace the stored record with the same id; StorageError if none."""

    def get(self, action_id: str) -> ActionRecord | None:
        """The record with this id, or None."""

    def find(
        self,
        state: str | None = None,
        context: Context | None = None,
        fingerprint: str | None = None,
        since: float | None = None,
    ) -> list[ActionRecord]:
        """Records matching every given filter, oldest ``created_at`` first.

        ``since`` keeps records created at or after that time.
        """


class MemoryActionLog:
    """An :class:`ActionLog` in a dict, for tests, replay and dry runs."""

    def __init__(self) -> None:
        self._by_id: dict[str, ActionRecord] = {}
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def record(self, rec: ActionRecord) -> bool:
        with self._lock:
            if rec.key in self._keys:
                return False
            if rec.id in self._by_id:
                raise StorageError(f"action log: id {rec.id} is already stored")
            self._keys.add(rec.key)
            self._by_id[rec.id] = rec.copy()
            return True

    def update(self, rec: ActionRecord) -> None:
        with self._lock:
            stored = self._by_id.get(rec.id)
            if stored is None:
                raise StorageError(f"action log: no record with id {rec.id}")
            if stored.key != rec.key:
                raise StorageError(
                    f"action log: record {rec.id} has key {stored.key!r},"
                    f" update brought {rec.key!r}"
                )
            self._by_id[rec.id] = rec.copy()

    def get(self, action_id: str) -> ActionRecord | None:
        with self._lock:
            rec = self._by_id.get(action_id)
            return rec.copy() if rec is not None else None

    def find(
        self,
        state: str | None = None,
        context: Context | None = None,
        fingerprint: str | None = None,
        since: float | None = None,
    ) -> list[ActionRecord]:
        with self._lock:
            found = [
                rec.copy()
                for rec in self._by_id.values()
                if (state is None or rec.state == state)
                and (context is None or rec.context == context)
                and (fingerprint is None or rec.fingerprint == fingerprint)
                and (since is None or rec.created_at >= since)
            ]
        found.sort(key=lambda r: (r.created_at, r.id))
        return found

    def __len__(self) -> int:
        return len(self._by_id)
