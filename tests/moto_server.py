"""moto's server for the tests that talk to AWS: one per session, reset per test.

The fixtures are imported by ``tests/conftest.py``, so every test folder
shares the one server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest.events import Context
from tests.processes import free_port, stop_process

REGION = "us-east-1"
#: moto's default account, so contexts built with it match moto's functions.
ACCOUNT = "123456789012"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
STARTUP_DEADLINE_S = 60.0


def context(function: str, account: str = ACCOUNT) -> Context:
    """A context in moto's default account and region."""
    return Context("aws", account, REGION, function)


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a moto server started for this session."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _moto_command(port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited: {log_path.read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {url}")
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, so boto3 signs requests without looking further."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


class MotoAccount:
    """Helpers to lay out functions and queue mappings on a fresh moto.

    Functions are made from a tiny zip and never invoked, so moto needs no
    docker.
    """

    def __init__(self, url: str) -> None:
        import boto3

        self.url = url
        self.lam = boto3.client("lambda", region_name=REGION, endpoint_url=url)
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        self.iam = boto3.client("iam", region_name=REGION, endpoint_url=url)
        self.role_arn = ""

    def function(self, name: str, reserved: int | None = None) -> Context:
        lam = self.lam
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=self.role_arn,
            Handler="handler.handle",
            Code={"ZipFile": _zip()},
        )
        if reserved is not None:
            lam.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=reserved
            )
        return context(name)

    def queue_mapping(self, function: str, queue: str, enabled: bool) -> str:
        sqs = self.sqs
        queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        mapping = self.lam.create_event_source_mapping(
            EventSourceArn=arn["Attributes"]["QueueArn"],
            FunctionName=function,
            Enabled=enabled,
            BatchSize=10,
        )
        uuid: str = mapping["UUID"]
        return uuid

    def reserved(self, function: str) -> int | None:
        answer = self.lam.get_function_concurrency(FunctionName=function)
        value = answer.get("ReservedConcurrentExecutions")
        return None if value is None else int(value)

    def mapping_states(self, function: str) -> dict[str, str]:
        found = self.lam.list_event_source_mappings(FunctionName=function)
        return {m["UUID"]: m["State"] for m in found["EventSourceMappings"]}


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("handler.py", "def handle(event, context):\n    return 1\n")
    return buf.getvalue()


@pytest.fixture
def moto(moto_url: str, aws_env: None) -> MotoAccount:
    """A freshly reset moto server with one IAM role for Lambda."""
    httpx.post(f"{moto_url}/moto-api/reset", timeout=10.0).raise_for_status()
    account = MotoAccount(moto_url)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = account.iam.create_role(
        RoleName="dowguard-test", AssumeRolePolicyDocument=json.dumps(policy)
    )
    account.role_arn = role["Role"]["Arn"]
    return account
