"""A local stand-in for Lambda's recursion-config API, which moto lacks.

It emulates exactly GET and PUT /2024-08-31/functions/{name}/recursion-config.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from .receivers import LoopbackServer

_PATH = re.compile(r"^/2024-08-31/functions/([^/?]+)/recursion-config(\?.*)?$")
_VALUES = ("Allow", "Terminate")


class RecursionStandin(LoopbackServer):
    """Holds the recursion config of a few named functions.

    The body of a PUT is ``{"RecursiveLoop": "Allow" | "Terminate"}``, the
    answer of both calls the current value. An unknown function answers
    404 ``ResourceNotFoundException``, any other path or method 404
    ``UnknownOperationException``; nothing else of Lambda is emulated.
    """

    def __init__(self, functions: dict[str, str] | None = None) -> None:
        super().__init__()
        self.config: dict[str, str] = dict(functions or {})
        self.requests: list[tuple[str, str, Any]] = []

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        match = _PATH.match(path)
        if match is None or method not in ("GET", "PUT"):
            return _error(404, "UnknownOperationException", f"no {method} {path}")
        # boto3 may send a name or an ARN; the name is the last part of both.
        name = unquote(match.group(1)).split(":")[-1]
        with self.lock:
            self.requests.append((method, name, json.loads(body) if body else None))
            if name not in self.config:
                return _error(404, "ResourceNotFoundException", f"no function {name}")
            if method == "PUT":
                try:
                    value = json.loads(body)["RecursiveLoop"]
                except (ValueError, KeyError, TypeError):
                    value = None
                if value not in _VALUES:
                    return _error(
                        400, "InvalidParameterValueException", "RecursiveLoop"
                    )
                self.config[name] = value
            reply = {"RecursiveLoop": self.config[name]}
        return 200, {"Content-Type": "application/json"}, json.dumps(reply).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    payload = json.dumps({"__type": code, "Type": "User", "message": message})
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
    return status, headers, payload.encode()
