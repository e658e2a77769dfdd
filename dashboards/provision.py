"""dowguard's Grafana dashboards: loading, checking and provisioning them.

The dashboards are the JSON files next to this module. Provisioning puts
the Prometheus datasource, a folder and every dashboard into a Grafana.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException

from dowguard.errors import DowError, ParseError

logger = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent

#: How every panel and target names its datasource: through the variable.
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_VARIABLE = "datasource"

GRID_COLUMNS = 24
# Grafana accepts uids of up to 40 characters; its documentation asks for 8
# or more, which our own dashboards keep to.
UID_RE = re.compile(r"^[A-Za-z0-9_-]{8,40}$")
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row"}
PANELS_WITHOUT_QUERIES = {"text", "row"}

# $name, ${name}, ${name:format}, [[name]]; ${__field.labels.x} and the
# like are Grafana's own and start with two underscores.
VARIABLE_REF_RE = re.compile(
    r"\$\{([A-Za-z0-9_]+)[^}]*\}|\$([A-Za-z0-9_]+)|\[\[(\w+)(?::[^\]]*)?\]\]"
)
LABEL_VALUES_RE = re.compile(
    r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$"
)

# What Grafana puts in place of its built-in variables, close enough for
# Prometheus to parse and evaluate the expressions.
BUILTIN_VALUES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# The scrape interval Grafana assumes for the datasource; Prometheus's own
# default, so that $__rate_interval covers at least four scrapes.
SCRAPE_INTERVAL = "15s"


class ProvisionError(DowError):
    """Grafana refused or could not be asked to store the dashboards."""


@dataclass(slots=True)
class ProvisionReport:
    """What one provisioning run did to each object, by name."""

    datasource: str = ""
    folder_uid: str = ""
    folder: str = ""
    dashboards: dict[str, str] = field(default_factory=dict)

    def changed(self) -> bool:
        states = [self.datasource, self.folder, *self.dashboards.values()]
        return any(state in ("created", "updated") for state in states)


@dataclass(frozen=True, slots=True)
class Expression:
    """One PromQL expression of a dashboard, and where it is."""

    dashboard: str
    where: str
    expr: str


def load_dashboards(paths: Iterable[Path] | None = None) -> list[dict[str, Any]]:
    """Read dashboards from ``paths``, or every ``*.json`` of this package."""
    chosen = sorted(DASHBOARD_DIR.glob("*.json")) if paths is None else list(paths)
    out = []
    for path in chosen:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            position = f"line {exc.lineno} column {exc.colno}"
            raise ParseError(str(path), position, exc.msg) from exc
        except OSError as exc:
            raise ParseError(str(path), "open", str(exc.strerror)) from exc
        if not isinstance(data, dict):
            raise ParseError(str(path), "top level", "a dashboard is a JSON object")
        out.append(data)
    return out


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def variable_names(dashboard: Mapping[str, Any]) -> list[str]:
    templating = dashboard.get("templating", {})
    return [v.get("name", "") for v in templating.get("list", [])]


def referenced_variables(node: Any) -> set[str]:
    """Names of the template variables referenced anywhere in ``node``."""
    names = set()
    for text in _strings(node):
        for match in VARIABLE_REF_RE.finditer(text):
            name = next(group for group in match.groups() if group)
            if not name.startswith("__"):
                names.add(name)
    return names


def _check_top(dash: Mapping[str, Any], name: str) -> list[str]:
    problems = []
    uid = dash.get("uid")
    if not isinstance(uid, str) or not UID_RE.match(uid):
        problems.append(f"{name}: uid {uid!r} is not 8-40 letters, digits, - or _")
    if not isinstance(dash.get("title"), str) or not dash["title"].strip():
        problems.append(f"{name}: title is missing")
    if dash.get("id") is not None:
        problems.append(f"{name}: id must be null in a dashboard meant for import")
    tags = dash.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(f"{name}: tags must be a list of strings")
    time = dash.get("time")
    if not isinstance(time, dict) or not {"from", "to"} <= time.keys():
        problems.append(f"{name}: time needs from and to")
    if not isinstance(dash.get("refresh"), str):
        problems.append(f"{name}: refresh must be a string such as '30s'")
    if not isinstance(dash.get("schemaVersion"), int):
        problems.append(f"{name}: schemaVersion must be an integer")
    return problems


def _check_templating(dash: Mapping[str, Any], name: str) -> list[str]:
    problems = []
    variables = dash.get("templating", {}).get("list")
    if not isinstance(variables, list):
        return [f"{name}: templating.list is missing"]
    names = variable_names(dash)
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: variable {dup!r} is defined twice")
    by_name = {v.get("name"): v for v in variables}
    ds_var = by_name.get(DATASOURCE_VARIABLE)
    if not ds_var or ds_var.get("type") != "datasource":
        problems.append(f"{name}: no datasource variable named {DATASOURCE_VARIABLE!r}")
    elif ds_var.get("query") != "prometheus":
        problems.append(f"{name}: the datasource variable must offer prometheus")
    for var in variables:
        if var.get("type") == "query" and var.get("datasource") != DATASOURCE_REF:
            problems.append(
                f"{name}: variable {var.get('name')!r} must query {DATASOURCE_REF}"
            )
    for missing in sorted(referenced_variables(dash) - set(names)):
        problems.append(f"{name}: variable ${missing} is used but not defined")
    return problems


def _check_panel(panel: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    if panel.get("type") not in PANEL_TYPES:
        problems.append(f"{where}: type {panel.get('type')!r} is not one we use")
    if not isinstance(panel.get("title"), str) or not panel["title"].strip():
        problems.append(f"{where}: title is missing")
    if panel.get("type") in PANELS_WITHOUT_QUERIES:
        return problems
    if panel.get("datasource") != DATASOURCE_REF:
        problems.append(f"{where}: datasource must be {DATASOURCE_REF}")
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if not isinstance(unit, str) or not unit:
        problems.append(f"{where}: fieldConfig.defaults.unit is missing")
    targets = panel.get("targets")
    if not isinstance(targets, list) or not targets:
        return [*problems, f"{where}: has no targets"]
    ref_ids = [t.get("refId") for t in targets]
    for dup in sorted({r for r in ref_ids if ref_ids.count(r) > 1 and r}):
        problems.append(f"{where}: refId {dup!r} is used twice")
    for index, target in enumerate(targets):
        at = f"{where} target {index}"
        if not isinstance(target.get("refId"), str) or not target["refId"]:
            problems.append(f"{at}: refId is missing")
        if not isinstance(target.get("expr"), str) or not target["expr"].strip():
            problems.append(f"{at}: expr is missing")
        if target.get("datasource") != DATASOURCE_REF:
            problems.append(f"{at}: datasource must be {DATASOURCE_REF}")
    return problems


def _check_grid(panels: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    problems = []
    boxes: list[tuple[str, int, int, int, int]] = []
    for panel in panels:
        where = f"{name} panel {panel.get('id')}"
        grid = panel.get("gridPos")
        keys = ("x", "y", "w", "h")
        if not isinstance(grid, dict) or not all(
            isinstance(grid.get(k), int) for k in keys
        ):
            problems.append(f"{where}: gridPos needs integer x, y, w and h")
            continue
        x, y, w, h = (grid[k] for k in keys)
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            problems.append(f"{where}: gridPos {grid} leaves the 24-column grid")
        for other, ox, oy, ow, oh in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append(f"{where}: overlaps {other}")
        boxes.append((f"panel {panel.get('id')}", x, y, w, h))
    return problems


def validate_dashboard(dash: Mapping[str, Any]) -> list[str]:
    """Everything wrong with one dashboard, one sentence per problem."""
    name = str(dash.get("uid") or dash.get("title") or "dashboard")
    problems = _check_top(dash, name) + _check_templating(dash, name)
    panels = dash.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, f"{name}: has no panels"]
    ids = [p.get("id") for p in panels]
    if not all(isinstance(i, int) for i in ids):
        problems.append(f"{name}: every panel needs an integer id")
    for dup in sorted({i for i in ids if ids.count(i) > 1 and isinstance(i, int)}):
        problems.append(f"{name}: panel id {dup} is used twice")
    for panel in panels:
        problems += _check_panel(panel, f"{name} panel {panel.get('id')}")
    return problems + _check_grid(panels, name)


def validate_dashboards(dashboards: Sequence[Mapping[str, Any]]) -> list[str]:
    """Problems of each dashboard, and uids or titles shared between them."""
    problems = [p for dash in dashboards for p in validate_dashboard(dash)]
    for key in ("uid", "title"):
        values = [d.get(key) for d in dashboards]
        for dup in sorted({str(v) for v in values if values.count(v) > 1}):
            problems.append(f"dashboards: {key} {dup!r} is used twice")
    return problems


def expressions(dash: Mapping[str, Any]) -> list[Expression]:
    """Every PromQL expression: targets, annotations and variable queries.

    A ``label_values(selector, label)`` variable query yields its selector.
    """
    name = str(dash.get("uid"))
    found = []
    for panel in dash.get("panels", []):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} ({panel.get('title')}) {target['refId']}"
            found.append(Expression(name, where, target["expr"]))
    for annotation in dash.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            where = f"annotation {annotation.get('name')}"
            found.append(Expression(name, where, annotation["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("definition") or ""
        match = LABEL_VALUES_RE.match(query)
        if var.get("type") == "query" and match:
            where = f"variable {var.get('name')}"
            found.append(Expression(name, where, match.group(1)))
    return found


def render_expr(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Substitute template variables as Grafana would before a query.

    Variables missing from ``values`` become ``.*``, which is what our
    variables send when "All" is selected.
    """
    chosen = {**BUILTIN_VALUES, **(values or {})}

    def substitute(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return chosen.get(name, ".*")

    return VARIABLE_REF_RE.sub(substitute, expr)


def check_promql(
    prometheus_url: str,
    dashboards: Sequence[Mapping[str, Any]],
    values: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> list[str]:
    """Ask a Prometheus to evaluate every expression; the ones it refuses.

    Evaluation (not only parsing) also catches type errors such as a range
    vector where an instant vector is needed.
    """
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    problems = []
    try:
        for dash in dashboards:
            for item in expressions(dash):
                query = render_expr(item.expr, values)
                error = _query_error(http, prometheus_url, query)
                if error:
                    problems.append(f"{item.dashboard} {item.where}: {error}")
    finally:
        if own:
            http.close()
    return problems


def _query_error(http: httpx.Client, prometheus_url: str, query: str) -> str:
    url = prometheus_url.rstrip("/") + "/api/v1/query"
    try:
        response = http.get(url, params={"query": query})
    except httpx.HTTPError as exc:
        raise ProvisionError(f"prometheus {url}: query failed: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}, not JSON: {response.text[:200]}"
    if response.status_code == 200 and body.get("status") == "success":
        return ""
    return f"{body.get('errorType', response.status_code)}: {body.get('error')}"


def datasource_body(uid: str, name: str, prometheus_url: str) -> dict[str, Any]:
    """The Prometheus datasource as Grafana's datasource API takes it."""
    return {
        "uid": uid,
        "name": name,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "jsonData": {"httpMethod": "POST", "timeInterval": SCRAPE_INTERVAL},
    }


def prepare_dashboard(
    dash: Mapping[str, Any], datasource_uid: str, datasource_name: str
) -> dict[str, Any]:
    """A copy of ``dash`` whose datasource variable selects our datasource."""
    out = copy.deepcopy(dict(dash))
    out["id"] = None
    for var in out.get("templating", {}).get("list", []):
        if var.get("name") == DATASOURCE_VARIABLE:
            var["current"] = {"text": datasource_name, "value": datasource_uid}
    return out


def _is_not_found(exc: GrafanaException) -> bool:
    return getattr(exc, "status_code", None) == 404


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:40] or "dowguard"


class _Grafana:
    """The few calls provisioning makes, with Grafana's errors made ours."""

    def __init__(self, api: GrafanaApi) -> None:
        self.api = api
        self.where = getattr(api.client, "url", "grafana")

    def call(self, what: str, fn: Any, *args: Any, missing_ok: bool = False) -> Any:
        """Run one client call; ``None`` for a 404 when ``missing_ok``."""
        try:
            return fn(*args)
        except GrafanaException as exc:
            if missing_ok and _is_not_found(exc):
                return None
            raise ProvisionError(f"grafana {self.where}: {what}: {exc}") from exc
        except OSError as exc:
            raise ProvisionError(f"grafana {self.where}: {what}: {exc}") from exc


def _ensure_datasource(
    grafana: _Grafana, uid: str, name: str, prometheus_url: str
) -> str:
    api = grafana.api.datasource
    wanted = datasource_body(uid, name, prometheus_url)
    stored = grafana.call(
        f"get datasource {uid}", api.get_datasource_by_uid, uid, missing_ok=True
    )
    if stored is None:
        grafana.call(f"create datasource {uid}", api.create_datasource, wanted)
        logger.info("datasource created uid=%s url=%s", uid, prometheus_url)
        return "created"
    stored_json = stored.get("jsonData") or {}
    same = all(stored.get(k) == v for k, v in wanted.items() if k != "jsonData")
    same = same and all(stored_json.get(k) == v for k, v in wanted["jsonData"].items())
    if same:
        return "unchanged"
    # Keep what someone added by hand (auth, extra jsonData): a PUT
    # replaces the whole datasource.
    body = {k: v for k, v in stored.items() if k not in _DATASOURCE_READ_ONLY}
    body.update({**wanted, "jsonData": {**stored_json, **wanted["jsonData"]}})
    grafana.call(f"update datasource {uid}", api.update_datasource_by_uid, uid, body)
    logger.info("datasource updated uid=%s url=%s", uid, prometheus_url)
    return "updated"


_DATASOURCE_READ_ONLY = {"id", "orgId", "typeName", "typeLogoUrl", "readOnly"}
_DATASOURCE_READ_ONLY |= {"secureJsonFields", "version"}


def _ensure_folder(grafana: _Grafana, title: str) -> tuple[str, str]:
    api = grafana.api.folder
    uid = _slug(title)
    found = grafana.call(f"get folder {uid}", api.get_folder, uid, missing_ok=True)
    if found is not None:
        if found.get("title") != title:
            logger.info("folder renamed uid=%s title=%s", uid, found.get("title"))
        return uid, "found"
    # Limitation: only the first page of folders (1000) is searched by title.
    for folder in grafana.call("list folders", api.get_all_folders) or []:
        if folder.get("title") == title:
            return str(folder["uid"]), "found"
    created = grafana.call(f"create folder {title!r}", api.create_folder, title, uid)
    logger.info("folder created uid=%s title=%s", created.get("uid", uid), title)
    return str(created.get("uid", uid)), "created"


def _without_version(dash: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dash.items() if k not in ("id", "version")}


def _ensure_dashboard(grafana: _Grafana, dash: dict[str, Any], folder_uid: str) -> str:
    api = grafana.api.dashboard
    uid = dash["uid"]
    stored = grafana.call(
        f"get dashboard {uid}", api.get_dashboard, uid, missing_ok=True
    )
    if stored is not None:
        in_folder = stored.get("meta", {}).get("folderUid") == folder_uid
        same = _without_version(stored.get("dashboard", {})) == _without_version(dash)
        if in_folder and same:
            return "unchanged"
    body = {"dashboard": dash, "folderUid": folder_uid, "overwrite": True}
    body["message"] = "provisioned by dowguard"
    saved = grafana.call(f"save dashboard {uid}", api.update_dashboard, body)
    state = "created" if stored is None else "updated"
    logger.info(
        "dashboard %s uid=%s version=%s folder=%s",
        state,
        uid,
        saved.get("version"),
        folder_uid,
    )
    return state


def provision(
    api: GrafanaApi,
    prometheus_url: str,
    folder_title: str = "dowguard",
    datasource_uid: str = "dowguard-prom",
    *,
    datasource_name: str = "dowguard Prometheus",
    dashboards: Sequence[Mapping[str, Any]] | None = None,
) -> ProvisionReport:
    """Create or update the datasource, the folder and every dashboard.

    Idempotent: what already matches is left alone, so a second run makes
    no change and no new dashboard version.
    """
    chosen = list(dashboards) if dashboards is not None else load_dashboards()
    problems = validate_dashboards(chosen)
    if problems:
        raise ProvisionError("dashboards are invalid: " + "; ".join(problems))
    grafana = _Grafana(api)
    report = ProvisionReport()
    report.datasource = _ensure_datasource(
        grafana, datasource_uid, datasource_name, prometheus_url
    )
    report.folder_uid, report.folder = _ensure_folder(grafana, folder_title)
    for dash in chosen:
        ready = prepare_dashboard(dash, datasource_uid, datasource_name)
        report.dashboards[ready["uid"]] = _ensure_dashboard(
            grafana, ready, report.folder_uid
        )
    return report
