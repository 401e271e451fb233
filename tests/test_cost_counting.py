"""The cost bench's AWS call counter (``bench.awscalls``): it must see every request botocore
sends, from boto3 and PynamoDB clients alike, and size DynamoDB units by DynamoDB's rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3
import botocore.endpoint
import pytest

from bench.awscalls import AwsCalls

TABLE = "cost-counting-test"


@pytest.fixture
def sent(aws: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every HTTP request botocore puts on the wire (one per attempt), by operation target."""
    requests: list[str] = []
    original = botocore.endpoint.Endpoint._send

    def spy(endpoint: Any, request: Any) -> Any:
        requests.append(request.url)
        return original(endpoint, request)

    monkeypatch.setattr(botocore.endpoint.Endpoint, "_send", spy)
    return requests


def _table() -> Any:
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb


def test_every_boto3_and_pynamodb_call_is_counted(sent: list[str]) -> None:
    from chalicelib.storage.guards import GuardModel, read_guard

    meter = AwsCalls.install(capacity=False)
    sqs_before = boto3.client("sqs")  # a client made before the tally starts is seen too
    queue_url = sqs_before.create_queue(QueueName="cost-counting")["QueueUrl"]
    sent.clear()
    with meter.tally() as tally:
        sqs_before.send_message(QueueUrl=queue_url, MessageBody="one")
        boto3.client("sqs").send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": "x" * 10} for i in range(3)],
        )
        sqs_before.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        GuardModel("cost-counting", payload="p", version=1).save()
        read_guard("cost-counting")
        read_guard("absent")
        boto3.client("kms").list_keys()
    assert tally.by_api() == Counter(
        {
            "sqs.SendMessage": 1,
            "sqs.SendMessageBatch": 1,
            "sqs.ReceiveMessage": 1,
            "dynamodb.PutItem": 1,
            "dynamodb.GetItem": 2,
            "kms.ListKeys": 1,
        }
    )
    assert tally.total == len(sent) == 7


def test_calls_outside_a_tally_or_paused_are_not_counted(sent: list[str]) -> None:
    meter = AwsCalls.install(capacity=False)
    sqs = boto3.client("sqs")
    sqs.list_queues()
    with meter.tally() as tally:
        with meter.paused():
            sqs.list_queues()
        sqs.list_queues()
    assert tally.by_api() == Counter({"sqs.ListQueues": 1})
    assert len(sent) == 3


def test_dynamodb_units_follow_item_size_and_consistency(aws: Any) -> None:
    ddb = _table()
    meter = AwsCalls.install(capacity=True)
    big = "x" * 1500  # with its names and key, between 1 KB and 2 KB
    try:
        with meter.tally() as small_put:
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "v": {"S": "y"}})
        with meter.tally() as big_put:
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": "b"}, "v": {"S": big}})
        with meter.tally() as reads:
            ddb.get_item(TableName=TABLE, Key={"pk": {"S": "b"}})
            ddb.get_item(TableName=TABLE, Key={"pk": {"S": "b"}}, ConsistentRead=True)
        with meter.tally() as transaction:
            ddb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "c"}, "v": {"S": big}}}},
                    {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "a"}}}},
                ]
            )
    finally:
        AwsCalls.install(capacity=False)
    assert small_put.wru == 1
    assert big_put.wru == 2
    assert reads.rru == 0.5 + 1
    assert transaction.wru == 2 * (2 + 1)


def test_index_writes_follow_the_projection_and_key_changes(aws: Any) -> None:
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_status",
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    meter = AwsCalls.install(capacity=True)

    def update(attribute: str, value: str) -> float:
        with meter.tally() as tally:
            ddb.update_item(
                TableName=TABLE,
                Key={"pk": {"S": "a"}},
                UpdateExpression="SET #a = :v",
                ExpressionAttributeNames={"#a": attribute},
                ExpressionAttributeValues={":v": {"S": value}},
            )
        return tally.wru

    try:
        with meter.tally() as put:
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "status": {"S": "pending"}})
        other = update("note", "claimed")
        moved = update("status", "delivered")
    finally:
        AwsCalls.install(capacity=False)
    assert put.wru == 1 + 1  # the item and its index entry
    assert other == 1  # a keys-only entry is not rewritten when other attributes change
    assert moved == 1 + 2  # a changed index key: the item, and a delete + put in the index
