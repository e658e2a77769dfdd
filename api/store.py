"""SQL storage of alerts, checkpoints, functions, silences, keys and actions.

:class:`SqlStore` is the daemon's and replay's :class:`~detector.alerts.AlertSink`
and answers every query of the API; :class:`SqlActionLog` is the enforcement
audit trail on the same database. SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    false,
    func,
    inspect,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from api import db
from api.tables import (
    FIRING,
    RESOLVED,
    AccountShareRow,
    ActionRow,
    AlertRow,
    ApiKeyRow,
    Base,
    CheckpointRow,
    CommentRow,
    FunctionRow,
    SilenceRow,
    TransitionRow,
)
from detector import alerts as lifecycle
from detector.alerts import (
    ALERT_NAME,
    AccountAlert,
    Checkpoint,
    FunctionStatus,
    StoredShare,
    Transition,
    alert_labels,
)
from detector.enforcement.audit import ActionRecord
from dowguard.errors import DowError, StorageError
from ingest.events import Context

logger = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound=Select[Any])
#: Tables listed newest first, by creation time and then id.
Created = TypeVar("Created", SilenceRow, ActionRow)

#: Alert states as people see them, derived from status, ack and silences.
OPEN = "open"
ACKNOWLEDGED = "acknowledged"
SILENCED = "silenced"
ALERT_STATES = (OPEN, ACKNOWLEDGED, RESOLVED, SILENCED)

#: Silence states, derived from the time window.
PENDING = "pending"
ACTIVE = "active"
EXPIRED = "expired"
SILENCE_STATES = (PENDING, ACTIVE, EXPIRED)

#: Alert labels that live in their own column, so matchers can run in SQL.
LABEL_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    "kind": AlertRow.kind,
    "severity": AlertRow.severity,
    "provider": AlertRow.provider,
    "account": AlertRow.account,
    "region": AlertRow.region,
    "function": AlertRow.function,
    "qualifier": AlertRow.qualifier,
}
CONSTANT_LABELS = {"alertname": ALERT_NAME}

#: Sort keys of the alert list and the columns behind them.
ALERT_SORTS: dict[str, InstrumentedAttribute[float]] = {
    "starts_at": AlertRow.starts_at,
    "cost_usd": AlertRow.cost_usd,
}

# Limitation: only the newest MAX_ACTIVE_SILENCES active silences mute alerts.
MAX_ACTIVE_SILENCES = 1000
#: Upper bound on rows one non-paginated read returns (forwarding, find).
MAX_SCAN_ROWS = 10_000
#: Rows per index that SQLite's ANALYZE samples.
ANALYSIS_LIMIT = 1000
#: How long listings may reuse a count or the active silences: at a few
#: hundred requests a second, counting the same rows again is most of the
#: work of a listing.
DEFAULT_CACHE_S = 2.0
#: A count older than cache_s is still served, while one recount runs in the
#: background, until it is this many times cache_s old.
STALE_COUNT_FACTOR = 5
CACHE_ENTRIES = 1024
#: Alert listing statements kept built, one per shape of query.
LISTING_ENTRIES = 256


class NotFoundError(DowError):
    """The alert, silence, function or action asked for does not exist."""


class ConflictError(DowError):
    """The request contradicts the current state of what it addresses."""


class InvalidCursorError(DowError):
    """A pagination cursor that this store did not hand out, or for another sort."""


class AlertRecord(NamedTuple):
    """The columns of an alert that views show: all but its evidence.

    Listings read these as plain rows; building ORM objects (or even frozen
    dataclasses) for a page of alerts costs several times the query itself.
    Labels and annotations stay the JSON text the database holds, so that a
    listing can pass them on without decoding and encoding them again; the
    store writes both only as maps of strings to strings.
    """

    id: int
    fingerprint: str
    kind: str
    severity: str
    status: str
    labels_json: str
    annotations_json: str
    cost_usd: float
    starts_at: float
    ends_at: float | None
    updated_at: float
    acked_at: float | None
    acked_by: str | None
    resolved_by: str | None
    context_key: str
    provider: str
    account: str
    region: str
    function: str
    qualifier: str

    @property
    def labels(self) -> dict[str, Any]:
        labels: dict[str, Any] = orjson.loads(self.labels_json)
        return labels

    @property
    def annotations(self) -> dict[str, Any]:
        annotations: dict[str, Any] = orjson.loads(self.annotations_json)
        return annotations

    @classmethod
    def of(cls, row: AlertRow) -> AlertRecord:
        values = {name: getattr(row, name) for name in RECORD_NAMES}
        values["labels_json"] = orjson.dumps(row.labels).decode()
        values["annotations_json"] = orjson.dumps(row.annotations).decode()
        return cls(**values)


#: Record fields read as they are, and the JSON columns read as their text
#: (a cast, because PostgreSQL's driver would otherwise parse JSONB).
RECORD_NAMES = tuple(n for n in AlertRecord._fields if not n.endswith("_json"))
RECORD_COLUMNS: tuple[ColumnElement[Any], ...] = tuple(
    cast(getattr(AlertRow, name[: -len("_json")]), Text).label(name)
    if name.endswith("_json")
    else getattr(AlertRow, name)
    for name in AlertRecord._fields
)


@dataclass(slots=True)
class AlertView:
    """An alert with the state derived from its ack and the silences."""

    row: AlertRecord
    state: str
    silenced_by: tuple[str, ...] = ()


@dataclass(slots=True)
class AlertDetail:
    view: AlertView
    evidence: dict[str, Any]
    transitions: list[TransitionRow]
    comments: list[CommentRow]


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list, with the total it comes from."""

    data: list[T]
    count: int
    next_cursor: str | None


@dataclass(slots=True)
class AlertQuery:
    """Filters, order and page of the alert list; times are epoch seconds."""

    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    account: str | None = None
    function: str | None = None
    since: float | None = None
    until: float | None = None
    sort: str = "starts_at"
    order: str = "desc"
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class AlertListing:
    """The page and count statements of one shape of alert query.

    Values (filters, cursor, page size) are bound parameters, so one built
    statement serves every query of its shape, and SQLAlchemy finds its
    compiled form by a cache key it computed once.
    """

    page: Select[Any]
    count: Select[Any]

    @staticmethod
    def shape(query: AlertQuery, silences: tuple[str, ...]) -> tuple[Any, ...]:
        """What the statements depend on other than bound values."""
        return (
            query.states,
            silences if query.states else (),
            bool(query.kinds),
            bool(query.severities),
            query.account is not None,
            query.function is not None,
            query.since is not None,
            query.until is not None,
            query.sort,
            query.order,
            bool(query.cursor),
        )

    @staticmethod
    def params(query: AlertQuery) -> dict[str, Any]:
        """The filter values of ``query``, named as the statements bind them."""
        values: dict[str, Any] = {}
        if query.kinds:
            values["kinds"] = list(query.kinds)
        if query.severities:
            values["severities"] = list(query.severities)
        for name in ("account", "function", "since", "until"):
            value = getattr(query, name)
            if value is not None:
                values[name] = value
        return values


@dataclass(slots=True)
class ActionQuery:
    states: tuple[str, ...] = ()
    verb: str | None = None
    context_key: str | None = None
    fingerprint: str | None = None
    since: float | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(slots=True)
class Matcher:
    """One Alertmanager-style matcher over an alert label."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.is_regex:
            try:
                self._pattern = re.compile(self.value)
            except re.error as exc:
                raise ValueError(
                    f"matcher {self.name}: bad regex {self.value!r}: {exc}"
                ) from exc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Matcher:
        return cls(
            str(data["name"]),
            str(data["value"]),
            bool(data.get("isRegex", False)),
            bool(data.get("isEqual", True)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.is_regex,
            "isEqual": self.is_equal,
        }

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set matches (an absent label is the empty string)."""
        actual = labels.get(self.name, "")
        if self._pattern is not None:
            hit = self._pattern.fullmatch(actual) is not None
        else:
            hit = actual == self.value
        return hit if self.is_equal else not hit

    def clause(self) -> ColumnElement[bool]:
        """The same test as :meth:`matches`, as SQL over the alerts table."""
        column = LABEL_COLUMNS.get(self.name)
        if column is None:
            constant = CONSTANT_LABELS.get(self.name, "")
            return true() if self.matches({self.name: constant}) else false()
        if self.is_regex:
            # Limitation: PostgreSQL runs regexes as POSIX ARE; exotic syntax differs.
            hit = column.regexp_match(f"^(?:{self.value})$")
        else:
            hit = column == self.value
        return hit if self.is_equal else not_(hit)


def silence_state(row: SilenceRow, now: float) -> str:
    if now < row.starts_at:
        return PENDING
    return ACTIVE if now < row.ends_at else EXPIRED


def alert_label_set(row: AlertRecord) -> dict[str, str]:
    """The labels matchers see: identity labels plus severity."""
    labels = {name: str(getattr(row, name)) for name in LABEL_COLUMNS}
    labels.update(CONSTANT_LABELS)
    return labels


def encode_cursor(sort: str, order: str, value: Any, row_id: Any) -> str:
    raw = orjson.dumps([sort, order, value, row_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str) -> tuple[Any, Any]:
    """The (sort value, id) a cursor resumes after; it must match the sort."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursorError(f"cursor {cursor[:40]!r}: not a cursor") from exc
    if not isinstance(data, list) or len(data) != 4:
        raise InvalidCursorError(f"cursor {cursor[:40]!r}: not a cursor")
    if data[0] != sort or data[1] != order:
        raise InvalidCursorError(
            f"cursor {cursor[:40]!r}: made for sort {data[0]} {data[1]},"
            f" used with sort {sort} {order}"
        )
    return data[2], data[3]


def _keyset(
    stmt: S,
    sort_col: InstrumentedAttribute[Any],
    id_col: InstrumentedAttribute[Any],
    order: str,
    after: tuple[Any, Any] | None,
) -> S:
    """Order by (sort column, id) and resume strictly after ``after``."""
    key = tuple_(sort_col, id_col)
    if order == "asc":
        if after is not None:
            stmt = stmt.where(key > tuple_(*after))
        return stmt.order_by(sort_col.asc(), id_col.asc())
    if after is not None:
        stmt = stmt.where(key < tuple_(*after))
    return stmt.order_by(sort_col.desc(), id_col.desc())


def _insert_for(session: Session) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT on SQLite and PostgreSQL."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise StorageError(f"database dialect {name}: only sqlite and postgresql")


def _context_values(context: Context) -> dict[str, str]:
    return {
        "context_key": "/".join(context),
        "provider": context.provider,
        "account": context.account,
        "region": context.region,
        "function": context.function,
        "qualifier": context.qualifier,
    }


def context_of(row: AlertRecord | AlertRow | FunctionRow | ActionRow) -> Context:
    return Context(row.provider, row.account, row.region, row.function, row.qualifier)


def _share_values(group: str, share: StoredShare, now: float) -> dict[str, Any]:
    alert = share.alert
    return {
        "consumer_group": group,
        "partition": share.partition,
        "provider": share.provider,
        "account": share.account,
        "day_end": share.day_end,
        "day_cost": share.day_cost,
        "month_start": share.month_start,
        "month_end": share.month_end,
        "month_cost": share.month_cost,
        "bucket": share.bucket,
        "buckets": list(share.buckets),
        "first": share.first,
        "watermark": share.watermark,
        "alert": None
        if alert is None
        else {
            "seq": alert.seq,
            "open": alert.open,
            "starts_at": alert.starts_at,
            "cost": alert.cost,
        },
        "updated_at": now,
    }


def _stored_share(row: AccountShareRow) -> StoredShare:
    doc = row.alert
    alert = None
    if doc is not None:
        alert = AccountAlert(
            int(doc["seq"]),
            bool(doc["open"]),
            float(doc["starts_at"]),
            float(doc["cost"]),
        )
    return StoredShare(
        row.partition,
        row.provider,
        row.account,
        row.day_end,
        row.day_cost,
        row.month_start,
        row.month_end,
        row.month_cost,
        row.bucket,
        tuple(float(v) for v in row.buckets),
        row.first,
        row.watermark,
        alert,
    )


class SqlStore:
    """Alerts, checkpoints and everything the API reads, in one SQL database.

    Every method runs in its own transaction; rows it returns are detached
    and safe to read after it returns.
    """

    def __init__(
        self,
        url: str = "sqlite:///dowguard.db",
        *,
        clock: Callable[[], float] = time.time,
        cache_s: float = DEFAULT_CACHE_S,
    ) -> None:
        self.url = url
        self.clock = clock
        self.cache_s = cache_s
        self.engine = db.make_engine(url)
        #: The database is a file this process reads itself (SQLite), with
        #: no server to wait for.
        self.in_process = self.engine.dialect.name == "sqlite"
        # Listings read through a pool of autocommit connections on a server:
        # no BEGIN before the statements and no ROLLBACK after them, and no
        # switch of the isolation level at each checkout. (SQLite reads open
        # no transaction anyway.)
        self._reader = (
            self.engine
            if self.in_process
            else db.make_engine(url, isolation_level="AUTOCOMMIT")
        )
        self._read, self._write = db.session_factories(self.engine)
        #: Cached values with the store-clock time they were computed at.
        self._cache: dict[tuple[Any, ...], tuple[Any, float]] = {}
        self._cache_lock = threading.Lock()
        #: Bumped by every write, so a recount begun before it is not kept.
        self._generation = 0
        self._refreshing: dict[tuple[Any, ...], Future[None]] = {}
        self._refresher: ThreadPoolExecutor | None = None
        self._listings: dict[tuple[Any, ...], AlertListing] = {}

    # -- schema ---------------------------------------------------------------

    def create_all(self) -> None:
        """Create missing tables straight from the models (tests, SQLite files)."""
        Base.metadata.create_all(self.engine)

    def upgrade(self, revision: str = "head") -> None:
        """Run the Alembic migrations up to ``revision``."""
        from api.migrations import upgrade

        upgrade(self.engine, revision)

    def ensure_schema(self) -> None:
        """Bring the schema to the newest migration, adopting a create_all DB."""
        from api.migrations import ensure_schema

        ensure_schema(self.engine)
        self.optimize()

    def optimize(self) -> None:
        """Refresh the query planner's statistics of the alerts table.

        Without them SQLite picks poor plans for filtered, sorted listings;
        the sampling limit keeps this to milliseconds on any table size.
        """
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
            conn.exec_driver_sql("ANALYZE alerts")
            conn.commit()
        logger.debug("statistics refreshed url=%s", self._safe_url)

    def ping(self) -> bool:
        """Whether the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            logger.warning("database ping failed url=%s error=%s", self._safe_url, exc)
            return False
        return True

    def close(self) -> None:
        if self._refresher is not None:
            self._refresher.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()
        self._reader.dispose()

    @property
    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        factory = self._write if write else self._read
        try:
            with factory() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StorageError(
                f"database {self._safe_url}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if write:
                self._forget()

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A Core connection for reads that need no ORM objects."""
        try:
            with self._reader.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(
                f"database {self._safe_url}: {type(exc).__name__}: {exc}"
            ) from exc

    def _cached(
        self,
        key: tuple[Any, ...],
        compute: Callable[[], T],
        *,
        refresh_behind: bool = False,
    ) -> T:
        """``compute()``, remembered for ``cache_s`` seconds of the store's clock.

        Any write through this store empties the cache. With
        ``refresh_behind`` an expired value is still returned, up to
        STALE_COUNT_FACTOR times ``cache_s`` old, while one background
        thread computes the next: a request never waits for a recount that
        another request could have waited for instead.
        """
        if self.cache_s <= 0:
            return compute()
        now = self.clock()
        with self._cache_lock:
            hit = self._cache.get(key)
            generation = self._generation
        if hit is not None:
            value: T = hit[0]
            age = now - hit[1]
            if age < self.cache_s:
                return value
            if refresh_behind and age < self.cache_s * STALE_COUNT_FACTOR:
                self._refresh_behind(key, compute, generation)
                return value
        value = compute()
        self._remember(key, value, now, generation)
        return value

    def _remember(
        self, key: tuple[Any, ...], value: Any, at: float, generation: int
    ) -> None:
        with self._cache_lock:
            if generation != self._generation:
                return
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = (value, at)

    def _refresh_behind(
        self, key: tuple[Any, ...], compute: Callable[[], Any], generation: int
    ) -> None:
        def refresh() -> None:
            at = self.clock()
            try:
                self._remember(key, compute(), at, generation)
            except DowError as exc:
                # The stale value stays; the next request past it tries again.
                logger.warning("background recount failed key=%s error=%s", key[0], exc)
            finally:
                with self._cache_lock:
                    self._refreshing.pop(key, None)

        with self._cache_lock:
            if key in self._refreshing:
                return
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(1, "dowguard-recount")
            self._refreshing[key] = self._refresher.submit(refresh)

    def settle(self) -> None:
        """Wait for the background recounts under way (tests, shutdown)."""
        with self._cache_lock:
            pending = list(self._refreshing.values())
        for future in pending:
            future.result()

    def _forget(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self._generation += 1

    # -- AlertSink ------------------------------------------------------------

    def commit(
        self,
        transitions: Sequence[Transition],
        checkpoints: Mapping[int, Checkpoint] | None = None,
        group: str = "",
    ) -> None:
        """Store transitions and checkpoints in one transaction (idempotent)."""
        now = self.clock()
        with self._session(write=True) as session:
            insert = _insert_for(session)
            applied = 0
            for t in transitions:
                if self._store_transition(session, insert, t, now):
                    self._apply(session, t)
                    applied += 1
            for cp in (checkpoints or {}).values():
                values = {
                    "consumer_group": group,
                    "partition": cp.partition,
                    "state": cp.state,
                    "offsets": dict(cp.offsets),
                    "updated_at": now,
                }
                stmt = insert(CheckpointRow).values(values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["consumer_group", "partition"],
                    set_={k: stmt.excluded[k] for k in ("state", "offsets")}
                    | {"updated_at": stmt.excluded.updated_at},
                )
                session.execute(stmt)
                self._store_shares(session, insert, group, cp, now)
        logger.debug(
            "committed transitions=%d new=%d checkpoints=%d group=%s",
            len(transitions),
            applied,
            len(checkpoints or {}),
            group,
        )

    @staticmethod
    def _store_shares(
        session: Session, insert: Any, group: str, cp: Checkpoint, now: float
    ) -> None:
        """Replace the account shares of ``cp``'s partition with its own."""
        session.execute(
            delete(AccountShareRow).where(
                AccountShareRow.consumer_group == group,
                AccountShareRow.partition == cp.partition,
            )
        )
        if cp.shares:
            rows = [_share_values(group, share, now) for share in cp.shares]
            session.execute(insert(AccountShareRow), rows)

    @staticmethod
    def _store_transition(
        session: Session, insert: Any, t: Transition, now: float
    ) -> bool:
        stmt = (
            insert(TransitionRow)
            .values(
                fingerprint=t.fingerprint,
                seq=t.seq,
                event=t.event,
                at=t.at,
                payload=t.to_json(),
                stored_at=now,
            )
            .on_conflict_do_nothing(index_elements=["fingerprint", "seq"])
            .returning(TransitionRow.id)
        )
        return session.execute(stmt).first() is not None

    @staticmethod
    def _apply(session: Session, t: Transition) -> None:
        row = session.scalar(
            select(AlertRow).where(AlertRow.fingerprint == t.fingerprint)
        )
        if row is None:
            row = AlertRow(
                fingerprint=t.fingerprint,
                status=FIRING,
                starts_at=t.starts_at,
                last_seq=t.seq - 1,
                **_context_values(t.context),
            )
            session.add(row)
        elif t.seq <= row.last_seq:
            # A late redelivery of an older transition: history only.
            return
        manually_resolved = row.status == RESOLVED and row.resolved_by is not None
        if t.event == lifecycle.OPENED or (
            row.status == RESOLVED and not manually_resolved
        ):
            row.status = FIRING
            row.starts_at = t.starts_at
            row.ends_at = None
            row.acked_at = None
            row.acked_by = None
            row.resolved_by = None
        elif t.starts_at < row.starts_at:
            # The detector moves an open alert's start earlier when evidence
            # read late shows it began sooner; as in Alertmanager, the
            # earliest start wins.
            row.starts_at = t.starts_at
        if t.event == lifecycle.RESOLVED:
            row.status = RESOLVED
            row.ends_at = t.at
        row.kind = t.kind
        row.severity = t.severity
        row.labels = alert_labels(t.context, t.kind) | {"severity": t.severity}
        row.annotations = {"summary": t.summary, "cost_usd": f"{t.cost_usd:.6f}"}
        row.evidence = t.evidence
        row.cost_usd = t.cost_usd
        row.updated_at = t.at
        row.last_seq = t.seq
        row.last_event = t.event

    def load_checkpoint(self, group: str, partition: int) -> Checkpoint | None:
        with self._session() as session:
            row = session.get(CheckpointRow, (group, partition))
            if row is None:
                return None
            offsets = {str(k): int(v) for k, v in row.offsets.items()}
            return Checkpoint(row.partition, row.state, offsets)

    def load_shares(self, group: str) -> list[StoredShare]:
        stmt = (
            select(AccountShareRow)
            .where(AccountShareRow.consumer_group == group)
            .order_by(
                AccountShareRow.partition,
                AccountShareRow.provider,
                AccountShareRow.account,
            )
        )
        with self._session() as session:
            return [_stored_share(row) for row in session.scalars(stmt)]

    def update_functions(self, rows: Sequence[FunctionStatus]) -> None:
        """Upsert the detector's figures; enforcement columns are left alone."""
        if not rows:
            return
        figures = (
            "updated_at",
            "cost_usd_per_hour",
            "baseline_usd_per_hour",
            "invocations_per_s",
            "open_alerts",
        )
        values = [
            _context_values(r.context) | {name: getattr(r, name) for name in figures}
            for r in rows
        ]
        with self._session(write=True) as session:
            stmt = _insert_for(session)(FunctionRow)
            stmt = stmt.on_conflict_do_update(
                index_elements=["context_key"],
                set_={name: stmt.excluded[name] for name in figures},
            )
            session.execute(stmt, values)

    # -- alerts ---------------------------------------------------------------

    def active_silences(self) -> list[tuple[str, list[Matcher]]]:
        """The matchers of the silences in force now, by silence id, bounded."""

        def load() -> list[tuple[str, list[Matcher]]]:
            now = self.clock()
            stmt = (
                select(SilenceRow.id, SilenceRow.matchers)
                .where(SilenceRow.starts_at <= now, SilenceRow.ends_at > now)
                .order_by(SilenceRow.created_at.desc())
                .limit(MAX_ACTIVE_SILENCES)
            )
            with self._session() as session:
                rows = session.execute(stmt).tuples().all()
            return [(sid, [Matcher.from_json(m) for m in ms]) for sid, ms in rows]

        return self._cached(("silences",), load)

    @staticmethod
    def _silenced_clause(
        compiled: Sequence[tuple[str, list[Matcher]]],
    ) -> ColumnElement[bool]:
        if not compiled:
            return false()
        return or_(*(and_(*(m.clause() for m in ms)) for _, ms in compiled))

    def _state_clause(
        self, states: Sequence[str], silenced: ColumnElement[bool]
    ) -> ColumnElement[bool]:
        firing = AlertRow.status == FIRING
        clauses = {
            RESOLVED: AlertRow.status == RESOLVED,
            SILENCED: and_(firing, silenced),
            ACKNOWLEDGED: and_(firing, not_(silenced), AlertRow.acked_at.is_not(None)),
            OPEN: and_(firing, not_(silenced), AlertRow.acked_at.is_(None)),
        }
        return or_(*(clauses[s] for s in states))

    @staticmethod
    def _view(
        row: AlertRecord, compiled: Sequence[tuple[str, list[Matcher]]]
    ) -> AlertView:
        if row.status == RESOLVED:
            return AlertView(row, RESOLVED)
        if compiled:
            labels = alert_label_set(row)
            by = tuple(
                sid for sid, ms in compiled if all(m.matches(labels) for m in ms)
            )
            if by:
                return AlertView(row, SILENCED, by)
        return AlertView(row, ACKNOWLEDGED if row.acked_at is not None else OPEN)

    def list_alerts(self, query: AlertQuery) -> Page[AlertView]:
        """Alerts matching ``query``, one page, with the total count."""
        after = (
            decode_cursor(query.cursor, query.sort, query.order)
            if query.cursor
            else None
        )
        compiled = self.active_silences()
        silences = tuple(sid for sid, _ in compiled)
        listing = self._listing(query, compiled, silences)
        values = AlertListing.params(query)
        page_values = values | {"limit": query.limit + 1}
        if after is not None:
            page_values |= {"after_value": after[0], "after_id": after[1]}
        # Pages of every sort and cursor of one filter share its count.
        key = (
            "alerts",
            query.states,
            silences if query.states else (),
            query.kinds,
            query.severities,
            query.account,
            query.function,
            query.since,
            query.until,
        )

        def count() -> int:
            with self._connect() as conn:
                return int(conn.scalar(listing.count, values) or 0)

        # Limitation: counts can miss what other processes wrote in the last 5 cache_s.
        total = self._cached(key, count, refresh_behind=True)
        with self._connect() as conn:
            fetched = conn.execute(listing.page, page_values).all()
        rows = [AlertRecord._make(r) for r in fetched]
        next_cursor = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            last = rows[-1]
            value = getattr(last, query.sort)
            next_cursor = encode_cursor(query.sort, query.order, value, last.id)
        views = [self._view(r, compiled) for r in rows]
        return Page(views, total, next_cursor)

    def _listing(
        self,
        query: AlertQuery,
        compiled: Sequence[tuple[str, list[Matcher]]],
        silences: tuple[str, ...],
    ) -> AlertListing:
        """The statements for the shape of ``query``, built on first use."""
        shape = AlertListing.shape(query, silences)
        with self._cache_lock:
            found = self._listings.get(shape)
        if found is not None:
            return found
        filters: list[ColumnElement[bool]] = []
        if query.states:
            silenced = self._silenced_clause(compiled)
            filters.append(self._state_clause(query.states, silenced))
        if query.kinds:
            filters.append(AlertRow.kind.in_(bindparam("kinds", expanding=True)))
        if query.severities:
            severities: BindParameter[str] = bindparam("severities", expanding=True)
            filters.append(AlertRow.severity.in_(severities))
        if query.account is not None:
            filters.append(AlertRow.account == bindparam("account"))
        if query.function is not None:
            filters.append(AlertRow.function == bindparam("function"))
        if query.since is not None:
            filters.append(AlertRow.starts_at >= bindparam("since"))
        if query.until is not None:
            filters.append(AlertRow.starts_at < bindparam("until"))
        sort_col = ALERT_SORTS[query.sort]
        after = None
        if query.cursor:
            after = (
                bindparam("after_value", type_=sort_col.type),
                bindparam("after_id", type_=AlertRow.id.type),
            )
        page = _keyset(
            select(*RECORD_COLUMNS).where(*filters),
            sort_col,
            AlertRow.id,
            query.order,
            after,
        ).limit(bindparam("limit"))
        count = select(func.count()).select_from(AlertRow).where(*filters)
        listing = AlertListing(page, count)
        with self._cache_lock:
            if len(self._listings) >= LISTING_ENTRIES:
                self._listings.clear()
            self._listings[shape] = listing
        return listing

    def firing_alerts(self, include_silenced: bool = False) -> list[AlertView]:
        """Every firing alert (bounded), for re-sending to Alertmanager."""
        compiled = self.active_silences()
        stmt = select(*RECORD_COLUMNS).where(AlertRow.status == FIRING)
        if not include_silenced:
            stmt = stmt.where(not_(self._silenced_clause(compiled)))
        stmt = stmt.order_by(AlertRow.id).limit(MAX_SCAN_ROWS)
        with self._session() as session:
            rows = [AlertRecord(*r) for r in session.execute(stmt)]
        return [self._view(r, compiled) for r in rows]

    def alert_views(self, fingerprints: Sequence[str]) -> dict[str, AlertView]:
        """The current views of the given alerts, by fingerprint."""
        compiled = self.active_silences()
        stmt = select(*RECORD_COLUMNS).where(AlertRow.fingerprint.in_(fingerprints))
        with self._session() as session:
            rows = [AlertRecord(*r) for r in session.execute(stmt)]
        return {r.fingerprint: self._view(r, compiled) for r in rows}

    def get_alert(self, fingerprint: str) -> AlertDetail:
        compiled = self.active_silences()
        with self._session() as session:
            row = self._alert_row(session, fingerprint)
            transitions = session.scalars(
                select(TransitionRow)
                .where(TransitionRow.fingerprint == fingerprint)
                .order_by(TransitionRow.seq)
                .limit(MAX_SCAN_ROWS)
            )
            comments = session.scalars(
                select(CommentRow)
                .where(CommentRow.fingerprint == fingerprint)
                .order_by(CommentRow.id)
                .limit(MAX_SCAN_ROWS)
            )
            return AlertDetail(
                self._view(AlertRecord.of(row), compiled),
                dict(row.evidence),
                list(transitions),
                list(comments),
            )

    @staticmethod
    def _alert_row(session: Session, fingerprint: str) -> AlertRow:
        row = session.scalar(
            select(AlertRow).where(AlertRow.fingerprint == fingerprint)
        )
        if row is None:
            raise NotFoundError(f"alert {fingerprint!r}: no such alert")
        return row

    def acknowledge(self, fingerprint: str, by: str, comment: str = "") -> AlertView:
        """Mark a firing alert acknowledged; acking it again changes nothing."""
        now = self.clock()
        compiled = self.active_silences()
        with self._session(write=True) as session:
            row = self._alert_row(session, fingerprint)
            if row.status == RESOLVED:
                raise ConflictError(f"alert {fingerprint}: resolved, cannot be acked")
            if row.acked_at is None:
                row.acked_at = now
                row.acked_by = by
            self._add_comment(session, fingerprint, "ack", by, comment, now)
            record = AlertRecord.of(row)
        return self._view(record, compiled)

    def resolve(self, fingerprint: str, by: str, comment: str = "") -> AlertView:
        """Resolve an alert by hand until the detector opens a new episode."""
        now = self.clock()
        with self._session(write=True) as session:
            row = self._alert_row(session, fingerprint)
            if row.status != RESOLVED:
                row.status = RESOLVED
                row.ends_at = now
                row.resolved_by = by
            self._add_comment(session, fingerprint, "resolve", by, comment, now)
            return AlertView(AlertRecord.of(row), RESOLVED)

    def add_comment(self, fingerprint: str, by: str, body: str) -> CommentRow:
        now = self.clock()
        with self._session(write=True) as session:
            self._alert_row(session, fingerprint)
            row = self._add_comment(session, fingerprint, "comment", by, body, now)
            assert row is not None
            session.flush()
            return row

    @staticmethod
    def _add_comment(
        session: Session,
        fingerprint: str,
        action: str,
        by: str,
        body: str,
        now: float,
    ) -> CommentRow | None:
        if not body and action != "comment":
            return None
        row = CommentRow(
            fingerprint=fingerprint, action=action, author=by, body=body, created_at=now
        )
        session.add(row)
        return row

    # -- silences -------------------------------------------------------------

    def create_silence(
        self,
        matchers: Sequence[Matcher],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
    ) -> SilenceRow:
        now = self.clock()
        row = SilenceRow(
            id=uuid.uuid4().hex,
            matchers=[m.to_json() for m in matchers],
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            created_at=now,
            updated_at=now,
        )
        with self._session(write=True) as session:
            session.add(row)
        logger.info(
            "silence created id=%s by=%s matchers=%d", row.id, created_by, len(matchers)
        )
        return row

    def get_silence(self, silence_id: str) -> SilenceRow:
        with self._session() as session:
            row = session.get(SilenceRow, silence_id)
            if row is None:
                raise NotFoundError(f"silence {silence_id!r}: no such silence")
            return row

    def list_silences(
        self, state: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[SilenceRow]:
        """Silences, newest first, optionally only those in ``state``."""
        now = self.clock()
        filters: list[ColumnElement[bool]] = []
        if state == PENDING:
            filters.append(SilenceRow.starts_at > now)
        elif state == ACTIVE:
            filters += [SilenceRow.starts_at <= now, SilenceRow.ends_at > now]
        elif state == EXPIRED:
            filters.append(SilenceRow.ends_at <= now)
        return self._newest_first(SilenceRow, filters, limit, cursor)

    def expire_silence(self, silence_id: str) -> SilenceRow:
        """End a silence now; a pending one never starts. Idempotent."""
        now = self.clock()
        with self._session(write=True) as session:
            row = session.get(SilenceRow, silence_id)
            if row is None:
                raise NotFoundError(f"silence {silence_id!r}: no such silence")
            if row.ends_at > now:
                row.ends_at = now
                row.starts_at = min(row.starts_at, now)
                row.updated_at = now
                logger.info("silence expired id=%s", silence_id)
            return row

    # -- functions ------------------------------------------------------------

    def _open_alerts_of_function(self) -> Any:
        return (
            select(func.count())
            .where(
                AlertRow.context_key == FunctionRow.context_key,
                AlertRow.status == FIRING,
            )
            .scalar_subquery()
        )

    def list_functions(
        self,
        account: str | None = None,
        function: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[tuple[FunctionRow, int]]:
        """Tracked contexts, costliest first, with their firing alert count."""
        filters: list[ColumnElement[bool]] = []
        if account is not None:
            filters.append(FunctionRow.account == account)
        if function is not None:
            filters.append(FunctionRow.function == function)
        sort = "cost_usd_per_hour"
        after = decode_cursor(cursor, sort, "desc") if cursor else None
        with self._session() as session:
            count = session.scalar(
                select(func.count()).select_from(FunctionRow).where(*filters)
            )
            stmt = _keyset(
                select(FunctionRow, self._open_alerts_of_function()).where(*filters),
                FunctionRow.cost_usd_per_hour,
                FunctionRow.id,
                "desc",
                after,
            ).limit(limit + 1)
            rows = [(r, int(n)) for r, n in session.execute(stmt).tuples()]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1][0]
            next_cursor = encode_cursor(sort, "desc", last.cost_usd_per_hour, last.id)
        return Page(rows, int(count or 0), next_cursor)

    def get_function(self, context_key: str) -> tuple[FunctionRow, int]:
        with self._session() as session:
            stmt = select(FunctionRow, self._open_alerts_of_function()).where(
                FunctionRow.context_key == context_key
            )
            found = session.execute(stmt).tuples().first()
            if found is None:
                raise NotFoundError(f"function {context_key!r}: not tracked")
            return found[0], int(found[1])

    # -- API keys -------------------------------------------------------------

    def add_api_key(self, name: str, role: str, key_hash: str) -> ApiKeyRow:
        row = ApiKeyRow(
            name=name, role=role, key_hash=key_hash, created_at=self.clock()
        )
        with self._session(write=True) as session:
            session.add(row)
        return row

    def find_api_key(self, key_hash: str) -> ApiKeyRow | None:
        """The unrevoked key with this hash, if any."""
        with self._session() as session:
            return session.scalar(
                select(ApiKeyRow).where(
                    ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked.is_(False)
                )
            )

    def list_api_keys(self) -> list[ApiKeyRow]:
        with self._session() as session:
            return list(session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)))

    def revoke_api_key(self, key_id: int) -> ApiKeyRow:
        with self._session(write=True) as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFoundError(f"api key {key_id}: no such key")
            row.revoked = True
            return row

    # -- actions --------------------------------------------------------------

    def list_actions(self, query: ActionQuery) -> Page[ActionRow]:
        """The audit trail, newest first."""
        filters: list[ColumnElement[bool]] = []
        if query.states:
            filters.append(ActionRow.state.in_(query.states))
        if query.verb is not None:
            filters.append(ActionRow.verb == query.verb)
        if query.context_key is not None:
            filters.append(ActionRow.context_key == query.context_key)
        if query.fingerprint is not None:
            filters.append(ActionRow.fingerprint == query.fingerprint)
        if query.since is not None:
            filters.append(ActionRow.created_at >= query.since)
        return self._newest_first(ActionRow, filters, query.limit, query.cursor)

    def _newest_first(
        self,
        table: type[Created],
        filters: Sequence[ColumnElement[bool]],
        limit: int,
        cursor: str | None,
    ) -> Page[Created]:
        """One page of ``table`` by ``created_at`` descending, with the count."""
        after = decode_cursor(cursor, "created_at", "desc") if cursor else None
        with self._session() as session:
            count = session.scalar(
                select(func.count()).select_from(table).where(*filters)
            )
            stmt = _keyset(
                select(table).where(*filters),
                table.created_at,
                table.id,
                "desc",
                after,
            ).limit(limit + 1)
            rows = list(session.scalars(stmt))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor("created_at", "desc", last.created_at, last.id)
        return Page(rows, int(count or 0), next_cursor)

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())


def action_record(row: ActionRow) -> ActionRecord:
    return ActionRecord(
        id=row.id,
        key=row.key,
        fingerprint=row.fingerprint,
        context=context_of(row),
        verb=row.verb,
        hook=row.hook,
        state=row.state,
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempts=row.attempts,
        previous=dict(row.previous),
        outcome=dict(row.outcome),
    )


def _action_values(rec: ActionRecord) -> dict[str, Any]:
    return _context_values(rec.context) | {
        "id": rec.id,
        "key": rec.key,
        "fingerprint": rec.fingerprint,
        "verb": rec.verb,
        "hook": rec.hook,
        "state": rec.state,
        "reason": rec.reason,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "attempts": rec.attempts,
        "previous": rec.previous,
        "outcome": rec.outcome,
    }


class SqlActionLog:
    """The enforcement audit trail (an ``ActionLog``) in the store's database.

    Each write also sets the function's enforcement columns, in the same
    transaction, so the function list shows the latest action.
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def record(self, rec: ActionRecord) -> bool:
        with self.store._session(write=True) as session:
            same_id = session.get(ActionRow, rec.id)
            if same_id is not None:
                if same_id.key == rec.key:
                    return False
                raise StorageError(f"action log: id {rec.id} is already stored")
            insert = _insert_for(session)
            stmt = (
                insert(ActionRow)
                .values(_action_values(rec))
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(ActionRow.id)
            )
            if session.execute(stmt).first() is None:
                return False
            self._mark_function(session, insert, rec)
        logger.info(
            "action recorded id=%s verb=%s state=%s context=%s",
            rec.id,
            rec.verb,
            rec.state,
            "/".join(rec.context),
        )
        return True

    def update(self, rec: ActionRecord) -> None:
        with self.store._session(write=True) as session:
            stored = session.get(ActionRow, rec.id)
            if stored is None:
                raise StorageError(f"action log: no record with id {rec.id}")
            if stored.key != rec.key:
                raise StorageError(
                    f"action log: record {rec.id} has key {stored.key!r},"
                    f" update brought {rec.key!r}"
                )
            values = _action_values(rec)
            del values["id"]
            session.execute(
                update(ActionRow).where(ActionRow.id == rec.id).values(values)
            )
            self._mark_function(session, _insert_for(session), rec)

    @staticmethod
    def _mark_function(session: Session, insert: Any, rec: ActionRecord) -> None:
        marks = {
            "enforcement_action_id": rec.id,
            "enforcement_verb": rec.verb,
            "enforcement_state": rec.state,
            "enforcement_at": rec.updated_at,
        }
        values = _context_values(rec.context) | marks
        values |= {
            "updated_at": rec.updated_at,
            "cost_usd_per_hour": 0.0,
            "baseline_usd_per_hour": 0.0,
            "invocations_per_s": 0.0,
            "open_alerts": 0,
        }
        stmt = insert(FunctionRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["context_key"],
            set_={name: stmt.excluded[name] for name in marks},
        )
        session.execute(stmt)

    def get(self, action_id: str) -> ActionRecord | None:
        with self.store._session() as session:
            row = session.get(ActionRow, action_id)
            return action_record(row) if row is not None else None

    def find(
        self,
        state: str | None = None,
        context: Context | None = None,
        fingerprint: str | None = None,
        since: float | None = None,
    ) -> list[ActionRecord]:
        stmt = select(ActionRow)
        if state is not None:
            stmt = stmt.where(ActionRow.state == state)
        if context is not None:
            stmt = stmt.where(ActionRow.context_key == "/".join(context))
        if fingerprint is not None:
            stmt = stmt.where(ActionRow.fingerprint == fingerprint)
        if since is not None:
            stmt = stmt.where(ActionRow.created_at >= since)
        stmt = stmt.order_by(ActionRow.created_at, ActionRow.id).limit(MAX_SCAN_ROWS)
        with self.store._session() as session:
            return [action_record(r) for r in session.scalars(stmt)]
