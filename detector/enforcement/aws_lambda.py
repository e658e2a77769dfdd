"""The AWS Lambda hook: reserved concurrency, event source mappings, recursion.

Whatever a throttle changes is recorded first and put back exactly by a release.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from detector.enforcement.base import HookError
from ingest.events import Context

if TYPE_CHECKING:
    from mypy_boto3_lambda.client import LambdaClient
    from mypy_boto3_lambda.literals import RecursiveLoopType

logger = logging.getLogger(__name__)

#: Error codes after which the same call may succeed later.
TRANSIENT_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ServiceException",
        "ServiceUnavailableException",
        "ResourceConflictException",
        "ResourceInUseException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalFailure",
    }
)
#: Mapping states in which the mapping polls (or is about to).
_POLLING_STATES = frozenset({"Enabled", "Enabling", "Updating", "Creating"})
_TERMINATE = "Terminate"

ClientFactory = Callable[[str], "LambdaClient"]


def lambda_clients(
    endpoint_url: str = "",
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 10.0,
) -> ClientFactory:
    """A cached region -> Lambda client factory.

    botocore's own retries are switched off: the enforcement service retries
    with its own backoff behind its circuit breaker, and two layers of
    retries would multiply the wait.
    """
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
    )
    clients: dict[str, LambdaClient] = {}
    lock = threading.Lock()

    def client_for(region: str) -> LambdaClient:
        with lock:
            if region not in clients:
                clients[region] = boto3.client(
                    "lambda",
                    region_name=region,
                    endpoint_url=endpoint_url or None,
                    config=config,
                )
            return clients[region]

    return client_for


class AwsLambdaHook:
    """Throttles Lambda functions through boto3.

    A throttle sets the function's reserved concurrency to ``ceiling`` (0
    stops every invocation; a function already reserved below it keeps its
    value). For a loop it also disables the event source mappings that poll
    for the function (``disable_mappings``) and, with
    ``recursion_terminate``, sets its recursion config to ``Terminate``.
    Concurrency is per function, so the context's qualifier is not used.

    ``recursion_clients`` serves the recursion-config calls when they must go
    elsewhere than the other calls. ``account``, when set, is the only
    account this hook's credentials may touch.
    """

    name = "aws_lambda"

    def __init__(
        self,
        clients: ClientFactory,
        *,
        ceiling: int = 0,
        disable_mappings: bool = True,
        recursion_terminate: bool = False,
        recursion_clients: ClientFactory | None = None,
        account: str = "",
    ) -> None:
        if ceiling < 0:
            raise ValueError(f"aws_lambda hook: ceiling must be >= 0, got {ceiling}")
        self.clients = clients
        self.ceiling = ceiling
        self.disable_mappings = disable_mappings
        self.recursion_terminate = recursion_terminate
        self.recursion_clients = recursion_clients or clients
        # Limitation: one set of credentials; no role is assumed per account.
        self.account = account
        # The original state of each context this hook holds throttled, so a
        # repeated or retried throttle never records its own changes.
        self._held: dict[Context, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def throttle(
        self, context: Context, reason: str, *, loop: bool = False
    ) -> dict[str, Any]:
        self._check(context)
        with self._lock:
            previous = dict(self._held.get(context, {}))
        try:
            self._capture(context, previous, loop)
        except HookError as exc:
            exc.previous = previous
            raise
        with self._lock:
            self._held[context] = previous
        self._apply(context, previous)
        logger.info(
            "throttled function=%s account=%s region=%s concurrency=%s"
            " mappings_disabled=%d reason=%s",
            context.function,
            context.account,
            context.region,
            previous["applied_concurrency"],
            len(previous.get("mappings_disabled", ())),
            reason,
        )
        return dict(previous)

    def release(self, context: Context, previous: dict[str, Any]) -> None:
        self._check(context)
        if "reserved_concurrency" not in previous:
            raise HookError(
                f"aws_lambda release of {context.function}: previous state has"
                f" no reserved_concurrency, got keys {sorted(previous)}",
                transient=False,
            )
        reserved = previous["reserved_concurrency"]
        if reserved is None:
            self._delete_concurrency(context)
        else:
            self._put_concurrency(context, int(reserved))
        for uuid in previous.get("mappings_disabled", ()):
            self._set_mapping(context, uuid, enabled=True)
        recursion = previous.get("recursive_loop")
        if recursion is not None and recursion != _TERMINATE:
            self._put_recursion(context, recursion)
        with self._lock:
            self._held.pop(context, None)
        logger.info(
            "released function=%s account=%s region=%s concurrency=%s",
            context.function,
            context.account,
            context.region,
            reserved,
        )

    def read(self, context: Context) -> dict[str, Any]:
        self._check(context)
        state: dict[str, Any] = {
            "function": context.function,
            "reserved_concurrency": self._get_concurrency(context),
            "mappings": [
                {"uuid": m["UUID"], "state": m["State"], "source": m["Source"]}
                for m in self._mappings(context)
            ],
        }
        if self.recursion_terminate:
            state["recursive_loop"] = self._get_recursion(context)
        return state

    def _check(self, context: Context) -> None:
        if context.provider != "aws":
            raise HookError(
                f"aws_lambda hook: context {context.key().decode()} is on"
                f" provider {context.provider!r}, not aws",
                transient=False,
            )
        if self.account and context.account != self.account:
            raise HookError(
                f"aws_lambda hook manages account {self.account}, context"
                f" {context.key().decode()} is in account {context.account}",
                transient=False,
            )

    def _capture(self, context: Context, previous: dict[str, Any], loop: bool) -> None:
        # Fill in only what is not held yet: a retry after a partial throttle
        # must keep what was there before the first attempt.
        if "reserved_concurrency" not in previous:
            reserved = self._get_concurrency(context)
            previous["function"] = context.function
            previous["reserved_concurrency"] = reserved
            target = self.ceiling if reserved is None else min(reserved, self.ceiling)
            previous["applied_concurrency"] = target
        if loop and self.disable_mappings and "mappings_disabled" not in previous:
            previous["mappings_disabled"] = [
                m["UUID"]
                for m in self._mappings(context)
                if m["State"] in _POLLING_STATES
            ]
        if loop and self.recursion_terminate and "recursive_loop" not in previous:
            previous["recursive_loop"] = self._get_recursion(context)

    def _apply(self, context: Context, previous: dict[str, Any]) -> None:
        try:
            self._put_concurrency(context, previous["applied_concurrency"])
            for uuid in previous.get("mappings_disabled", ()):
                self._set_mapping(context, uuid, enabled=False)
            if previous.get("recursive_loop") not in (None, _TERMINATE):
                self._put_recursion(context, _TERMINATE)
        except HookError as exc:
            exc.previous = dict(previous)
            raise

    def _get_concurrency(self, context: Context) -> int | None:
        client = self.clients(context.region)
        answer = self._call(
            "GetFunctionConcurrency",
            context,
            lambda: client.get_function_concurrency(FunctionName=context.function),
        )
        value = answer.get("ReservedConcurrentExecutions")
        return None if value is None else int(value)

    def _put_concurrency(self, context: Context, value: int) -> None:
        client = self.clients(context.region)
        self._call(
            "PutFunctionConcurrency",
            context,
            lambda: client.put_function_concurrency(
                FunctionName=context.function, ReservedConcurrentExecutions=value
            ),
        )

    def _delete_concurrency(self, context: Context) -> None:
        client = self.clients(context.region)
        self._call(
            "DeleteFunctionConcurrency",
            context,
            lambda: client.delete_function_concurrency(FunctionName=context.function),
        )

    def _mappings(self, context: Context) -> list[dict[str, Any]]:
        client = self.clients(context.region)

        def listing() -> dict[str, Any]:
            found: list[dict[str, Any]] = []
            pages = client.get_paginator("list_event_source_mappings")
            for page in pages.paginate(FunctionName=context.function):
                for m in page.get("EventSourceMappings", []):
                    found.append(
                        {
                            "UUID": m.get("UUID", ""),
                            "State": m.get("State", ""),
                            "Source": m.get("EventSourceArn", ""),
                        }
                    )
            return {"mappings": found}

        result: list[dict[str, Any]] = self._call(
            "ListEventSourceMappings", context, listing
        )["mappings"]
        return result

    def _set_mapping(self, context: Context, uuid: str, *, enabled: bool) -> None:
        client = self.clients(context.region)
        try:
            self._call(
                "UpdateEventSourceMapping",
                context,
                lambda: client.update_event_source_mapping(UUID=uuid, Enabled=enabled),
            )
        except HookError as exc:
            # A mapping deleted while the function was throttled has nothing
            # left to restore; every other failure stops the release.
            if enabled and exc.detail.get("code") == "ResourceNotFoundException":
                logger.warning(
                    "mapping gone function=%s uuid=%s", context.function, uuid
                )
                return
            raise

    def _get_recursion(self, context: Context) -> str:
        client = self.recursion_clients(context.region)
        answer = self._call(
            "GetFunctionRecursionConfig",
            context,
            lambda: client.get_function_recursion_config(FunctionName=context.function),
        )
        return str(answer.get("RecursiveLoop", _TERMINATE))

    def _put_recursion(self, context: Context, value: str) -> None:
        client = self.recursion_clients(context.region)
        self._call(
            "PutFunctionRecursionConfig",
            context,
            lambda: client.put_function_recursion_config(
                FunctionName=context.function,
                RecursiveLoop=cast("RecursiveLoopType", value),
            ),
        )

    def _call(
        self, operation: str, context: Context, fn: Callable[[], Any]
    ) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = fn()
            return answer
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            meta = exc.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode", 0))
            transient = code in TRANSIENT_CODES or status == 429 or status >= 500
            raise HookError(
                f"aws_lambda {operation} of {context.function} in"
                f" {context.region}: {code or status}: {error.get('Message', '')}",
                transient=transient,
                detail={"operation": operation, "code": code, "status": status},
            ) from exc
        except (HTTPClientError, BotoConnectionError) as exc:
            raise HookError(
                f"aws_lambda {operation} of {context.function} in"
                f" {context.region}: no answer: {exc}",
                transient=True,
                detail={"operation": operation, "code": type(exc).__name__},
            ) from exc
        except BotoCoreError as exc:
            raise HookError(
                f"aws_lambda {operation} of {context.function} in"
                f" {context.region}: {exc}",
                transient=False,
                detail={"operation": operation, "code": type(exc).__name__},
            ) from exc
