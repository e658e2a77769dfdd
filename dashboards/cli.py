"""The ``dowguard dashboards`` commands: ``provision`` and ``validate``.

:func:`register` adds them to the main CLI; each sets ``func`` on the
parsed arguments to a handler that returns the exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_client.api import GrafanaApi

from dashboards.provision import (
    check_promql,
    load_dashboards,
    provision,
    validate_dashboards,
)
from dowguard.errors import DowError

logger = logging.getLogger(__name__)

TOKEN_ENV = "GRAFANA_TOKEN"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``dashboards provision`` and ``dashboards validate``."""
    group = subparsers.add_parser(
        "dashboards", help="Grafana dashboards: validate them, provision Grafana"
    )
    commands = group.add_subparsers(dest="dashboards_command", required=True)

    prov = commands.add_parser(
        "provision", help="create or update the datasource, folder and dashboards"
    )
    prov.add_argument("--grafana-url", required=True, help="e.g. http://grafana:3000")
    prov.add_argument(
        "--token",
        default=None,
        help=f"Grafana API or service-account token (default: ${TOKEN_ENV}; "
        "without one, user:password in the URL is used)",
    )
    prov.add_argument(
        "--prometheus-url", required=True, help="the URL Grafana reaches Prometheus at"
    )
    prov.add_argument("--folder", default="dowguard", help="folder title")
    prov.add_argument("--datasource-uid", default="dowguard-prom")
    prov.set_defaults(func=run_provision)

    check = commands.add_parser(
        "validate", help="check the dashboards' structure (and PromQL, if asked)"
    )
    check.add_argument(
        "paths", nargs="*", type=Path, help="dashboard files (default: the built-in)"
    )
    check.add_argument(
        "--prometheus-url",
        default=None,
        help="also have this Prometheus evaluate every expression",
    )
    check.set_defaults(func=run_validate)


def run_provision(args: argparse.Namespace) -> int:
    # A string credential is sent as a bearer token.
    token = args.token or os.environ.get(TOKEN_ENV) or None
    api = GrafanaApi.from_url(args.grafana_url, credential=token)
    report = provision(
        api,
        args.prometheus_url,
        folder_title=args.folder,
        datasource_uid=args.datasource_uid,
    )
    print(f"datasource {args.datasource_uid}: {report.datasource}")
    print(f"folder {report.folder_uid}: {report.folder}")
    for uid, state in report.dashboards.items():
        print(f"dashboard {uid}: {state}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    dashboards = load_dashboards(args.paths or None)
    problems = validate_dashboards(dashboards)
    if args.prometheus_url and not problems:
        problems = check_promql(args.prometheus_url, dashboards)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    names = ", ".join(str(d.get("uid")) for d in dashboards)
    print(f"{len(dashboards)} dashboards valid: {names}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dashboards commands alone (``python -m dashboards.cli``)."""
    parser = argparse.ArgumentParser(prog="dowguard")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except DowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
