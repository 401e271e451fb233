"""Create every table, queue and key the app expects, from the app's own definitions.

Used by the local stack and the tests against the embedded AWS. Exports the resulting queue URLs
and key id into the environment, exactly as the stage config does on AWS.
"""

from __future__ import annotations

import json
import os

import boto3

from chalicelib import settings
from chalicelib.queues import all_queues
from chalicelib.storage.schema import ALL_MODELS, TTL_ATTRIBUTES

KMS_ALIAS = "alias/ringback"


def create_tables() -> None:
    for model in ALL_MODELS:
        if not model.exists():
            model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
    ddb = boto3.client("dynamodb", region_name=settings.region())
    for table, attribute in TTL_ATTRIBUTES.items():
        ddb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
        )


def create_queues() -> dict[str, str]:
    sqs = boto3.client("sqs", region_name=settings.region())
    urls: dict[str, str] = {}
    for spec in all_queues():
        dlq_url = sqs.create_queue(QueueName=spec.dlq_name)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        url = sqs.create_queue(
            QueueName=spec.name,
            Attributes={
                "VisibilityTimeout": str(spec.visibility_timeout),
                "MessageRetentionPeriod": str(14 * 24 * 3600),  # as infra/generate.py
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(spec.max_receives)}
                ),
            },
        )["QueueUrl"]
        urls[spec.name] = url
        urls[spec.dlq_name] = dlq_url
    return urls


def create_kms_key() -> str:
    kms = boto3.client("kms", region_name=settings.region())
    aliases = kms.list_aliases()["Aliases"]
    for alias in aliases:
        if alias["AliasName"] == KMS_ALIAS and alias.get("TargetKeyId"):
            return KMS_ALIAS
    key_id = kms.create_key(Description="ringback secrets")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key_id)
    return KMS_ALIAS


def create_all() -> None:
    create_tables()
    urls = create_queues()
    from chalicelib.queues import delivery_queue

    spec = delivery_queue()
    os.environ["RINGBACK_DELIVERY_QUEUE_URL"] = urls[spec.name]
    os.environ["RINGBACK_DELIVERY_DLQ_URL"] = urls[spec.dlq_name]
    os.environ["RINGBACK_KMS_KEY_ID"] = create_kms_key()
