"""The fault-injecting embedded AWS (devstack/faults.py): each fault reaches a boto3 client, with
its default retries, as the error code AWS itself sends; an applied-then-failed write really
committed; the draws are seeded; set-up is never faulted; the proxy forwards and fails."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

from devstack.embedded_aws import EmbeddedAws
from devstack.faults import APPLIED_THEN_FAILED, STATS_PATH, FaultInjector, Forwarder
from tests.conftest import ROOT

CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


@pytest.fixture(scope="module")
def faulty() -> Iterator[EmbeddedAws]:
    """An embedded AWS of its own with a fault injector, enabled per test."""
    aws = EmbeddedAws(faults=0.0, faults_seed=1)
    aws.start()
    yield aws
    aws.stop()


@pytest.fixture
def injector(faulty: EmbeddedAws) -> Iterator[FaultInjector]:
    faulty.reset()
    assert faulty.faults is not None
    faulty.faults.disable()
    faulty.faults.kinds = None
    faulty.faults.after_write_share = 0.5
    faulty.faults.reset_counts()
    yield faulty.faults
    faulty.faults.disable()


def _client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, **CREDENTIALS)  # default retries


def _observe(client: Any, injector: FaultInjector | None = None) -> list[tuple[int, str]]:
    """Every attempt's (HTTP status, error code) as botocore parsed it, before its retry logic;
    with ``injector``, the faults stop after the first one (so the retry goes through)."""
    seen: list[tuple[int, str]] = []

    def hook(response: Any = None, **kwargs: Any) -> None:
        if response is None:
            return
        http, parsed = response
        code = parsed.get("Error", {}).get("Code", "")
        seen.append((http.status_code, code))
        if code and injector is not None:
            injector.disable()

    client.meta.events.register("needs-retry", hook)
    return seen


def _table(url: str) -> Any:
    ddb = _client("dynamodb", url)
    ddb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
    return ddb


def _queue(url: str) -> tuple[Any, str]:
    sqs = _client("sqs", url)
    return sqs, sqs.create_queue(QueueName="q")["QueueUrl"]


def _force(injector: FaultInjector, kind: str, *, share: float = 0.0) -> None:
    injector.rate = 1.0
    injector.kinds = (kind,)
    injector.after_write_share = share
    injector.enable()


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("InternalServerError", 500),
    ],
)
def test_dynamodb_faults_reach_boto3_as_aws_codes(
    faulty: EmbeddedAws, injector: FaultInjector, kind: str, status: int
) -> None:
    ddb = _table(faulty.url)
    seen = _observe(ddb, injector)
    _force(injector, kind)
    item = ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert seen == [(status, kind), (200, "")]
    assert item["ResponseMetadata"]["RetryAttempts"] == 1  # boto3 retried it, as on AWS
    assert item["Item"]["pk"]["S"] == "a"


@pytest.mark.parametrize(("kind", "status"), [("ServiceUnavailable", 503), ("InternalError", 500)])
def test_sqs_faults_reach_boto3_as_aws_codes(
    faulty: EmbeddedAws, injector: FaultInjector, kind: str, status: int
) -> None:
    sqs, url = _queue(faulty.url)
    seen = _observe(sqs, injector)
    _force(injector, kind)
    sent = sqs.send_message(QueueUrl=url, MessageBody="x")
    assert seen[0] == (status, kind)
    assert sent["ResponseMetadata"]["RetryAttempts"] == 1
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "x"


def test_kms_throttling_reaches_boto3(faulty: EmbeddedAws, injector: FaultInjector) -> None:
    kms = _client("kms", faulty.url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    seen = _observe(kms, injector)
    _force(injector, "ThrottlingException")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"s")["CiphertextBlob"]
    assert seen[0] == (400, "ThrottlingException")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"s"


def test_a_fault_that_outlasts_the_retries_surfaces_as_client_error(
    faulty: EmbeddedAws, injector: FaultInjector
) -> None:
    kms = _client("kms", faulty.url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    _force(injector, "ThrottlingException")
    with pytest.raises(ClientError) as raised:
        kms.encrypt(KeyId=key_id, Plaintext=b"s")
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] >= 1


def test_applied_then_failed_write_committed(faulty: EmbeddedAws, injector: FaultInjector) -> None:
    ddb = _table(faulty.url)
    seen = _observe(ddb, injector)
    _force(injector, APPLIED_THEN_FAILED, share=1.0)
    with pytest.raises(ClientError) as raised:  # the retry finds its own write
        ddb.put_item(
            TableName="t",
            Item={"pk": {"S": "new"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    assert seen[0] == (500, "InternalServerError")
    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert ddb.get_item(TableName="t", Key={"pk": {"S": "new"}})["Item"]["pk"]["S"] == "new"
    assert injector.stats()["by_kind"] == {f"dynamodb {APPLIED_THEN_FAILED}": 1}


def test_applied_then_failed_send_queues_twice(
    faulty: EmbeddedAws, injector: FaultInjector
) -> None:
    sqs, url = _queue(faulty.url)
    _observe(sqs, injector)
    _force(injector, APPLIED_THEN_FAILED, share=1.0)
    sqs.send_message(QueueUrl=url, MessageBody="once")
    bodies = [
        m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    ]
    assert bodies == ["once", "once"]  # the client's retry sent it again


def test_reads_are_never_applied_then_failed(faulty: EmbeddedAws, injector: FaultInjector) -> None:
    ddb = _table(faulty.url)
    seen = _observe(ddb)
    _force(injector, APPLIED_THEN_FAILED, share=1.0)
    ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert seen == [(200, "")]


def test_setup_and_reset_are_never_faulted(faulty: EmbeddedAws, injector: FaultInjector) -> None:
    injector.rate = 1.0
    injector.enable()
    client = _client("dynamodb", faulty.url)
    seen = _observe(client)
    client.create_table(
        TableName="setup",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.describe_table(TableName="setup")
    sqs = _client("sqs", faulty.url)
    sqs.create_queue(QueueName="setup")
    sqs.get_queue_url(QueueName="setup")
    faulty.reset()
    assert seen == [(200, ""), (200, "")]
    assert injector.stats()["faults"] == 0


def _replay(seed: int, rate: float, calls: int) -> list[str]:
    def ok(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.0")])
        return [b"{}"]

    injector = FaultInjector(ok, rate, seed, enabled=True)
    answers = []
    for n in range(calls):
        operation = ("GetItem", "PutItem", "Query")[n % 3]
        environ = {
            "PATH_INFO": "/",
            "REQUEST_METHOD": "POST",
            "HTTP_X_AMZ_TARGET": f"DynamoDB_20120810.{operation}",
            "CONTENT_LENGTH": "2",
            "wsgi.input": io.BytesIO(b"{}"),
        }
        status: list[str] = []

        def start(line: str, headers: Any, exc_info: Any = None, into: list[str] = status) -> None:
            into.append(line)

        body = b"".join(injector(environ, start))
        answers.append(f"{status[0]} {json.loads(body).get('__type', '')}")
    return answers


def test_the_draws_are_seeded() -> None:
    first = _replay(seed=7, rate=0.2, calls=300)
    assert first == _replay(seed=7, rate=0.2, calls=300)
    assert first != _replay(seed=8, rate=0.2, calls=300)
    failed = sum(1 for a in first if not a.startswith("200"))
    assert 30 <= failed <= 90  # about a fifth of 300
    assert len({a for a in first if not a.startswith("200")}) >= 3  # several kinds


def test_proxy_forwards_and_fails(faulty: EmbeddedAws, injector: FaultInjector) -> None:
    proxy = FaultInjector(Forwarder(faulty.url), 1.0, 3, kinds=("InternalServerError",))
    server = make_server("127.0.0.1", 0, proxy, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ddb = _table(url)  # set-up through the proxy; the injector still disabled
        seen = _observe(ddb, proxy)
        proxy.enable()
        ddb.put_item(TableName="t", Item={"pk": {"S": "via-proxy"}})
        assert seen == [(500, "InternalServerError"), (200, "")]
        direct = _client("dynamodb", faulty.url)  # the write reached the upstream
        assert direct.get_item(TableName="t", Key={"pk": {"S": "via-proxy"}})["Item"]
        stats = requests.get(url + STATS_PATH, timeout=5).json()
        assert stats["by_kind"] == {"dynamodb InternalServerError": 1}
        assert requests.post(url + "/ringback-faults/pause", timeout=5).json()["enabled"] is False
        seen.clear()
        ddb.put_item(TableName="t", Item={"pk": {"S": "paused"}})
        assert seen == [(200, "")]
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_command_line(faulty: EmbeddedAws, injector: FaultInjector) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.faults",
            "--upstream",
            faulty.url,
            "--rate",
            "1",
            "--seed",
            "4",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        sqs, queue = _queue(url)
        with pytest.raises(ClientError) as raised:
            sqs.receive_message(QueueUrl=queue)
        assert raised.value.response["Error"]["Code"] in (
            "ServiceUnavailable",
            "InternalError",
        )
        stats = requests.get(url + STATS_PATH, timeout=5).json()
        assert stats["faults"] == stats["calls"]["sqs"] >= 2  # every receive, retries included
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.stack
def test_local_stack_option_fails_calls_after_setup() -> None:
    """``devstack.run --aws-faults 1.0``: the stack still starts (set-up is never faulted), then
    every data call fails, as the stats endpoint and the API's answers show."""
    import os
    import signal
    import socket
    import time

    def free() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    port, aws_port = free(), free()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
    env["RINGBACK_ADMIN_KEY"] = "rbk_faults-admin"
    options = ["--port", str(port), "--aws-port", str(aws_port), "--aws-faults", "1.0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.run", "--no-worker", *options, "--aws-faults-seed", "5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        stats = requests.get(f"http://127.0.0.1:{aws_port}{STATS_PATH}", timeout=5).json()
        assert (stats["enabled"], stats["rate"], stats["seed"]) == (True, 1.0, 5)
        made = requests.post(
            f"{base}/admin/tenants",
            headers={"Authorization": "Bearer rbk_faults-admin"},
            json={"name": "t"},
            timeout=120,
        )
        assert made.status_code >= 500
        after = requests.get(f"http://127.0.0.1:{aws_port}{STATS_PATH}", timeout=5).json()
        assert after["faults"] > stats["faults"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
