"""Forwarding of alerts to a Prometheus Alertmanager (API v2).

Open alerts are posted with an ``endsAt`` a few resend intervals ahead and
re-sent while they stay open, so Alertmanager resolves them on its own if
dowguard stops; resolved alerts are posted with their end time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from api.store import SILENCED, AlertView, SqlStore
from api.tables import RESOLVED as RESOLVED_STATUS
from detector.alerts import RESOLVED, Transition, alert_labels, rfc3339
from dowguard.config import Settings

logger = logging.getLogger(__name__)

#: How many resend intervals an open alert stays valid in Alertmanager.
VALIDITY_INTERVALS = 4
#: Alerts per POST; Alertmanager takes any number, proxies in between may not.
BATCH = 500


class Forwarder:
    """Posts alerts to Alertmanager's ``/api/v2/alerts`` and re-sends open ones.

    Failures are logged and counted, never raised: forwarding must not stop
    the daemon, and the next resend repairs what a failure missed.
    """

    def __init__(
        self,
        url: str,
        store: SqlStore | None = None,
        *,
        public_url: str = "",
        resend_s: float = 60.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.resend_s = resend_s
        self.clock = clock
        self.failures = 0
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, transitions: Sequence[Transition]) -> int:
        """Post the latest state of each alert in ``transitions``.

        Firing alerts that a dowguard silence mutes are not posted. Returns
        how many alerts were posted.
        """
        latest: dict[str, Transition] = {}
        for t in transitions:
            latest[t.fingerprint] = t
        views: dict[str, AlertView] = {}
        if self.store is not None and latest:
            views = self.store.alert_views(list(latest))
        now = self.clock()
        alerts = []
        for fp, t in latest.items():
            view = views.get(fp)
            if view is not None and view.row.status == RESOLVED_STATUS:
                # Resolved by the detector or by a person: either way, over.
                ends_at = view.row.ends_at if view.row.ends_at is not None else t.at
                alerts.append(self._from_transition(t, now, ends_at))
            elif t.event == RESOLVED:
                alerts.append(self._from_transition(t, now, t.at))
            elif view is None or view.state != SILENCED:
                alerts.append(self._from_transition(t, now))
        return self._post(alerts)

    def resend_open(self) -> int:
        """Post every firing, unsilenced alert of the store again."""
        # Limitation: an alert resolved by hand leaves Alertmanager at its endsAt.
        if self.store is None:
            return 0
        now = self.clock()
        alerts = [self._from_view(v, now) for v in self.store.firing_alerts()]
        return self._post(alerts)

    def start(self) -> None:
        """Re-send open alerts every ``resend_s`` in a background thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="alertmanager-resend", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.resend_s + 10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.resend_s):
            try:
                self.resend_open()
            except Exception:
                # The loop must outlive a bad database moment.
                logger.exception("alertmanager resend failed url=%s", self.url)

    def _alert(
        self,
        labels: dict[str, str],
        annotations: dict[str, str],
        starts_at: float,
        ends_at: float,
        fingerprint: str,
    ) -> dict[str, Any]:
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(starts_at),
            "endsAt": rfc3339(ends_at),
        }
        if self.public_url:
            alert["generatorURL"] = f"{self.public_url}/api/v1/alerts/{fingerprint}"
        return alert

    def _valid_until(self, now: float) -> float:
        return now + VALIDITY_INTERVALS * self.resend_s

    def _from_transition(
        self, t: Transition, now: float, ends_at: float | None = None
    ) -> dict[str, Any]:
        labels = alert_labels(t.context, t.kind) | {"severity": t.severity}
        annotations = {
            "summary": t.summary,
            "cost_usd": f"{t.cost_usd:.6f}",
            "fingerprint": t.fingerprint,
        }
        if ends_at is None:
            ends_at = self._valid_until(now)
        return self._alert(labels, annotations, t.starts_at, ends_at, t.fingerprint)

    def _from_view(self, view: AlertView, now: float) -> dict[str, Any]:
        row = view.row
        labels = {str(k): str(v) for k, v in row.labels.items()}
        annotations = {str(k): str(v) for k, v in row.annotations.items()}
        annotations["fingerprint"] = row.fingerprint
        return self._alert(
            labels, annotations, row.starts_at, self._valid_until(now), row.fingerprint
        )

    def _post(self, alerts: list[dict[str, Any]]) -> int:
        posted = 0
        for start in range(0, len(alerts), BATCH):
            chunk = alerts[start : start + BATCH]
            try:
                response = self._client.post(self.url, json=chunk)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self.failures += 1
                logger.warning(
                    "alertmanager post failed url=%s alerts=%d error=%s",
                    self.url,
                    len(chunk),
                    exc,
                )
                continue
            posted += len(chunk)
        if posted:
            logger.debug("alertmanager posted url=%s alerts=%d", self.url, posted)
        return posted


def build_forwarder(settings: Settings, store: SqlStore | None) -> Forwarder | None:
    """The forwarder the settings ask for, or None without alertmanager_url."""
    if not settings.alertmanager_url:
        return None
    return Forwarder(
        settings.alertmanager_url,
        store,
        public_url=settings.public_url,
        resend_s=settings.alertmanager_resend_s,
    )
