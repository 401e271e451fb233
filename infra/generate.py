"""Generate the deploy files from the app's own definitions, so they cannot drift from the code.

Writes:

- ``infra/ringback-infra.json``: the CloudFormation stack for everything Chalice does not
  create. Every PynamoDB model in ``chalicelib.storage.schema.ALL_MODELS`` becomes a table (keys,
  GSIs/LSIs, TTL, point-in-time recovery, on-demand billing), every ``chalicelib.queues``
  queue becomes a queue plus its dead-letter queue and redrive policy, plus the KMS key for
  secrets (and its alias), an SNS topic and CloudWatch alarms (DLQ not empty, oldest message
  age), and Outputs naming them all. Deployed with ``aws cloudformation deploy`` (path 1).
- ``infra/ringback-merge.json``: the same stack plus SAM ``Globals`` that hand the functions the
  queue URL and key alias, for ``chalice package --merge-template`` (path 2, one stack).
- ``.chalice/policy-<stage>.json``: the Lambda role's least-privilege policy for ``dev`` and
  ``prod``, from the action list in ``infra/permissions.py``, on ``ringback-<stage>-*`` only.

Run ``.venv/bin/python -m infra.generate`` after changing a model, a queue or the action list;
``--check`` exits non-zero (and names the stale files) instead of writing.

Table and queue names in the app are ``<RINGBACK_TABLE_PREFIX><short>`` and
``ringback-<stage>-<short>``; the template declares them as ``ringback-${Stage}-<short>``, so one
template serves every stage and the stage's ``RINGBACK_TABLE_PREFIX`` must be
``ringback-<stage>-`` (as ``.chalice/config.json`` has it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import permissions

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "infra" / "ringback-infra.json"
MERGE_TEMPLATE_PATH = ROOT / "infra" / "ringback-merge.json"
POLICY_STAGES = ("dev", "prod")
REGENERATE_COMMAND = ".venv/bin/python -m infra.generate"

DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the maximum: a failed delivery stays replayable longest
QUEUE_RETENTION_SECONDS = 14 * 24 * 3600
"""The work queue keeps messages the maximum too (SQS's default is 4 days): once its message is
in SQS, a first attempt has no other record that it is due (no reconciler index entry), and an
expired message is deleted, not dead-lettered."""
DEFAULT_KMS_ALIAS = "alias/ringback"  # chalicelib.settings.kms_key_id()'s default
QUEUE_URL_ENV = {"delivery": "RINGBACK_DELIVERY_QUEUE_URL"}  # queue role -> app setting

Json = dict[str, Any]


def policy_path(stage: str) -> Path:
    return ROOT / ".chalice" / f"policy-{stage}.json"


def stage_prefix(stage: str) -> str:
    """What every resource of a stage is named with (tables, queues, functions, alarms)."""
    return f"ringback-{stage}-"


@dataclass(frozen=True)
class TableDef:
    """One table, as the PynamoDB model declares it, with the stage prefix taken off."""

    short_name: str
    attribute_definitions: list[dict[str, str]]
    key_schema: list[dict[str, str]]
    global_indexes: list[Json] = field(default_factory=list)
    local_indexes: list[Json] = field(default_factory=list)
    ttl_attribute: str | None = None


@dataclass(frozen=True)
class QueueDef:
    short_name: str
    dlq_short_name: str
    visibility_timeout: int
    max_receives: int
    dlq_visibility_timeout: int
    url_env: str | None = None  # the setting the app reads this queue's URL from


def _strip_prefix(name: str, prefix: str, what: str) -> str:
    if not name.startswith(prefix) or len(name) == len(prefix):
        raise ValueError(
            f"{what} {name!r} does not start with the stage prefix {prefix!r}: every resource "
            "of a stage must be named ringback-<stage>-<name> (the template and the IAM "
            "policies rely on it)"
        )
    return name[len(prefix) :]


def _key_schema(raw: list[dict[str, str]]) -> list[dict[str, str]]:
    """HASH first, then RANGE: the order DynamoDB and CloudFormation require."""
    ordered = sorted(raw, key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
    return [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in ordered]


def _index(raw: Json) -> Json:
    projection = {"ProjectionType": raw["projection"]["ProjectionType"]}
    if raw["projection"].get("NonKeyAttributes"):
        projection["NonKeyAttributes"] = sorted(raw["projection"]["NonKeyAttributes"])
    return {
        "IndexName": raw["index_name"],
        "KeySchema": _key_schema(raw["key_schema"]),
        "Projection": projection,
    }


def table_defs() -> list[TableDef]:
    """Every table in ``ALL_MODELS``, read from the models themselves (PynamoDB's schema)."""
    from chalicelib import settings
    from chalicelib.storage.schema import ALL_MODELS, TTL_ATTRIBUTES

    prefix = settings.table_prefix()
    defs: list[TableDef] = []
    for model in ALL_MODELS:
        table_name: str = model.Meta.table_name
        schema: Json = dict(model._get_schema())
        attributes: dict[str, str] = {}
        indexes = schema["global_secondary_indexes"] + schema["local_secondary_indexes"]
        for attr in [*schema["attribute_definitions"]] + [
            a for index in indexes for a in index["attribute_definitions"]
        ]:
            attributes[attr["AttributeName"]] = attr["AttributeType"]
        defs.append(
            TableDef(
                short_name=_strip_prefix(table_name, prefix, "table"),
                attribute_definitions=[
                    {"AttributeName": name, "AttributeType": kind}
                    for name, kind in sorted(attributes.items())
                ],
                key_schema=_key_schema(schema["key_schema"]),
                global_indexes=sorted(
                    (_index(i) for i in schema["global_secondary_indexes"]),
                    key=lambda i: str(i["IndexName"]),
                ),
                local_indexes=sorted(
                    (_index(i) for i in schema["local_secondary_indexes"]),
                    key=lambda i: str(i["IndexName"]),
                ),
                ttl_attribute=TTL_ATTRIBUTES.get(table_name),
            )
        )
    unknown_ttl = set(TTL_ATTRIBUTES) - {m.Meta.table_name for m in ALL_MODELS}
    if unknown_ttl:
        raise ValueError(f"TTL_ATTRIBUTES names tables not in ALL_MODELS: {sorted(unknown_ttl)}")
    return defs


def queue_defs() -> list[QueueDef]:
    """Every queue in ``chalicelib.queues.all_queues()`` (each with its DLQ)."""
    from chalicelib import settings
    from chalicelib.queues import all_queues, delivery_queue

    prefix = stage_prefix(settings.stage())
    delivery = delivery_queue().name
    return [
        QueueDef(
            short_name=_strip_prefix(spec.name, prefix, "queue"),
            dlq_short_name=_strip_prefix(spec.dlq_name, prefix, "dead-letter queue"),
            visibility_timeout=spec.visibility_timeout,
            max_receives=spec.max_receives,
            dlq_visibility_timeout=spec.dlq_visibility_timeout,
            url_env=QUEUE_URL_ENV["delivery"] if spec.name == delivery else None,
        )
        for spec in all_queues()
    ]


@dataclass(frozen=True)
class SqsTrigger:
    """An ``@app.on_sqs_message`` handler and the queue it reads, as logical ids."""

    function_logical_id: str
    event_logical_id: str  # the SAM event Chalice declares on the function
    queue_logical_id: str


def sqs_triggers(queues: list[QueueDef]) -> list[SqsTrigger]:
    """The SQS-triggered functions in ``app.py``, each with the template queue it reads.

    A trigger on a queue this template does not create would fail the deploy, so it fails here.
    """
    from chalice.app import SQSEventConfig
    from chalice.utils import to_cfn_resource_name

    from app import app as chalice_app
    from chalicelib import settings

    prefix = stage_prefix(settings.stage())
    logical_ids: dict[str, str] = {}
    for queue in queues:
        logical_ids[queue.short_name] = f"{camel(queue.short_name)}Queue"
        logical_ids[queue.dlq_short_name] = f"{camel(queue.short_name)}DeadLetterQueue"
    triggers: list[SqsTrigger] = []
    for source in chalice_app.event_sources:
        if not isinstance(source, SQSEventConfig):
            continue
        queue_name = source.queue or (source.queue_arn or "").rsplit(":", 1)[-1]
        short = _strip_prefix(queue_name, prefix, f"queue of SQS handler {source.name!r}")
        if short not in logical_ids:
            raise ValueError(
                f"SQS handler {source.name!r} reads {queue_name!r}, which is not in "
                "chalicelib.queues.all_queues(): the infra template would not create it"
            )
        triggers.append(
            SqsTrigger(
                function_logical_id=to_cfn_resource_name(source.name),
                event_logical_id=to_cfn_resource_name(f"{source.name}-sqs-event-source"),
                queue_logical_id=logical_ids[short],
            )
        )
    return sorted(triggers, key=lambda t: (t.function_logical_id, t.queue_logical_id))


def camel(short_name: str) -> str:
    """``campaign_registrations`` -> ``CampaignRegistrations`` (for logical ids and outputs)."""
    parts = short_name.replace("-", "_").split("_")
    return "".join(part[:1].upper() + part[1:] for part in parts if part)


def _named(short_name: str) -> Json:
    return {"Fn::Sub": f"ringback-${{Stage}}-{short_name}"}


def _stage_tags() -> list[Json]:
    return [{"Key": permissions.STAGE_TAG, "Value": {"Ref": "Stage"}}]


def _table_resource(table: TableDef) -> Json:
    props: Json = {
        "TableName": _named(table.short_name),
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": table.attribute_definitions,
        "KeySchema": table.key_schema,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "Tags": _stage_tags(),
    }
    if table.global_indexes:
        props["GlobalSecondaryIndexes"] = table.global_indexes
    if table.local_indexes:
        props["LocalSecondaryIndexes"] = table.local_indexes
    if table.ttl_attribute:
        props["TimeToLiveSpecification"] = {
            "AttributeName": table.ttl_attribute,
            "Enabled": True,
        }
    return {
        "Type": "AWS::DynamoDB::Table",
        # The data outlives a stack deletion or a replacement; teardown deletes tables by hand.
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": props,
    }


def _queue_resources(queue: QueueDef) -> tuple[Json, Json]:
    q, dlq = f"{camel(queue.short_name)}Queue", f"{camel(queue.short_name)}DeadLetterQueue"
    resources: Json = {
        dlq: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": _named(queue.dlq_short_name),
                # The dead_letters function consumes it: at least 6x its timeout, as for the
                # work queue (an SQS trigger refuses a queue shorter than the function).
                "VisibilityTimeout": queue.dlq_visibility_timeout,
                "MessageRetentionPeriod": DLQ_RETENTION_SECONDS,
                "SqsManagedSseEnabled": True,
                "Tags": _stage_tags(),
            },
        },
        q: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": _named(queue.short_name),
                "VisibilityTimeout": queue.visibility_timeout,
                "MessageRetentionPeriod": QUEUE_RETENTION_SECONDS,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                    "maxReceiveCount": queue.max_receives,
                },
                "SqsManagedSseEnabled": True,
                "Tags": _stage_tags(),
            },
        },
        f"{dlq}NotEmptyAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": _named(f"{queue.dlq_short_name}-not-empty"),
                "AlarmDescription": (
                    "Messages reached the dead-letter queue: deliveries gave up. Inspect and "
                    "replay them (docs/deploy.md)."
                ),
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "AlarmTopic"}],
                "OKActions": [{"Ref": "AlarmTopic"}],
            },
        },
        f"{q}OldestMessageAgeAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": _named(f"{queue.short_name}-oldest-message-age"),
                "AlarmDescription": (
                    "The oldest message has waited too long: the dispatcher is failing, "
                    "throttled or backed up."
                ),
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [q, "QueueName"]}}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 5,
                "Threshold": {"Ref": "OldestMessageAgeAlarmSeconds"},
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "AlarmTopic"}],
                "OKActions": [{"Ref": "AlarmTopic"}],
            },
        },
    }
    outputs: Json = {}
    for logical, short, label in (
        (q, queue.short_name, "queue"),
        (dlq, queue.dlq_short_name, "dead-letter queue"),
    ):
        hint = f" (the app's {queue.url_env})" if logical == q and queue.url_env else ""
        outputs[f"{logical}Url"] = {
            "Description": f"URL of the {short} {label}{hint}",
            "Value": {"Ref": logical},
        }
        outputs[f"{logical}Arn"] = {
            "Description": f"ARN of the {short} {label}",
            "Value": {"Fn::GetAtt": [logical, "Arn"]},
        }
        outputs[f"{logical}Name"] = {
            "Description": f"Name of the {short} {label}",
            "Value": {"Fn::GetAtt": [logical, "QueueName"]},
        }
    return resources, outputs


def build_template(tables: list[TableDef], queues: list[QueueDef]) -> Json:
    """The infra stack: pure data in, a CloudFormation template (dict) out."""
    resources: Json = {}
    outputs: Json = {
        "Stage": {"Description": "The stage these resources belong to", "Value": {"Ref": "Stage"}},
        "TablePrefix": {
            "Description": "The app's RINGBACK_TABLE_PREFIX for this stage",
            "Value": {"Fn::Sub": "ringback-${Stage}-"},
        },
    }
    for table in tables:
        logical = f"{camel(table.short_name)}Table"
        resources[logical] = _table_resource(table)
        outputs[f"{logical}Name"] = {
            "Description": f"Name of the {table.short_name} table",
            "Value": {"Ref": logical},
        }
        outputs[f"{logical}Arn"] = {
            "Description": f"ARN of the {table.short_name} table",
            "Value": {"Fn::GetAtt": [logical, "Arn"]},
        }
    for queue in queues:
        queue_resources, queue_outputs = _queue_resources(queue)
        resources.update(queue_resources)
        outputs.update(queue_outputs)
    resources["SecretsKey"] = {
        "Type": "AWS::KMS::Key",
        # Ciphertexts in the tables are unreadable without it: never delete it with the stack.
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": {"Fn::Sub": "Ringback ${Stage}: signing secrets and passwords at rest"},
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AccountIamPoliciesDecide",
                        "Effect": "Allow",
                        "Principal": {
                            "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
                        },
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            },
            "Tags": _stage_tags(),
        },
    }
    resources["SecretsKeyAlias"] = {
        "Type": "AWS::KMS::Alias",
        "Properties": {"AliasName": {"Ref": "KmsAliasName"}, "TargetKeyId": {"Ref": "SecretsKey"}},
    }
    resources["AlarmTopic"] = {
        "Type": "AWS::SNS::Topic",
        "Properties": {"TopicName": _named("alarms"), "Tags": _stage_tags()},
    }
    outputs["SecretsKeyArn"] = {
        "Description": "ARN of the KMS key for secrets",
        "Value": {"Fn::GetAtt": ["SecretsKey", "Arn"]},
    }
    outputs["SecretsKeyAliasName"] = {
        "Description": "The app's RINGBACK_KMS_KEY_ID",
        "Value": {"Ref": "KmsAliasName"},
    }
    outputs["AlarmTopicArn"] = {
        "Description": "SNS topic the alarms notify: subscribe on-call to it",
        "Value": {"Ref": "AlarmTopic"},
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            "Ringback infrastructure for one stage: tables, queues, KMS key, alarms. Generated by "
            f"`{REGENERATE_COMMAND}` from chalicelib; do not edit by hand."
        ),
        "Parameters": {
            "Stage": {
                "Type": "String",
                "Description": "Chalice stage (dev, prod): resources are named ringback-<Stage>-*",
                "AllowedPattern": "^[a-z][a-z0-9]{0,15}$",
            },
            "KmsAliasName": {
                "Type": "String",
                "Description": (
                    "Alias of the secrets key; the app reads it from RINGBACK_KMS_KEY_ID "
                    f"(default {DEFAULT_KMS_ALIAS}). Aliases are unique per account and region."
                ),
                "Default": DEFAULT_KMS_ALIAS,
                "AllowedPattern": "^alias/[a-zA-Z0-9/_-]+$",
            },
            "OldestMessageAgeAlarmSeconds": {
                "Type": "Number",
                "Description": "Alarm when a delivery queue's oldest message is older than this",
                "Default": 1800,
                "MinValue": 60,
            },
        },
        "Resources": resources,
        "Outputs": outputs,
    }


def build_merge_template(
    template: Json, queues: list[QueueDef], triggers: list[SqsTrigger]
) -> Json:
    """The infra template plus what one stack needs on top, for ``chalice package
    --merge-template`` (path 2):

    - SAM ``Globals`` giving every function the settings that name stack resources;
    - ``FunctionResponseTypes: [ReportBatchItemFailures]`` on every SQS trigger, and
      ``RINGBACK_REPORT_BATCH_FAILURES=true`` so the dispatcher returns ``batchItemFailures``
      (only the failed records come back) instead of failing the whole batch, as it must under
      ``chalice deploy``, which cannot set that switch. A handler returning None
      succeeds whole; one that raises fails whole, as before.
    - ``DependsOn`` from each SQS-triggered function to its queue (unless a Global already
      references it): Chalice names the queue by an ARN string, not a reference, so without it
      CloudFormation may create the event source mapping before the queue (and fail). The
      mapping references the function, so it waits too.
    """
    variables: Json = {
        "RINGBACK_KMS_KEY_ID": {"Ref": "KmsAliasName"},
        "RINGBACK_REPORT_BATCH_FAILURES": "true",
    }
    for queue in queues:
        if queue.url_env:
            variables[queue.url_env] = {"Ref": f"{camel(queue.short_name)}Queue"}
    merged: Json = json.loads(json.dumps(template))
    merged["Description"] = merged["Description"].replace(
        "Ringback infrastructure", "Ringback app and infrastructure (chalice package merge)"
    )
    merged["Globals"] = {"Function": {"Environment": {"Variables": variables}}}
    referenced = {v["Ref"] for v in variables.values() if isinstance(v, dict)}  # dependencies
    for trigger in triggers:
        if trigger.function_logical_id in template["Resources"]:
            raise ValueError(
                f"handler {trigger.function_logical_id!r} collides with an infra resource name"
            )
        function = merged["Resources"].setdefault(trigger.function_logical_id, {})
        if trigger.queue_logical_id not in referenced:
            function.setdefault("DependsOn", []).append(trigger.queue_logical_id)
        events = function.setdefault("Properties", {}).setdefault("Events", {})
        events[trigger.event_logical_id] = {
            "Properties": {"FunctionResponseTypes": ["ReportBatchItemFailures"]}
        }
    return merged


def build_policy(stage: str) -> Json:
    """The Lambda role's policy for ``stage``: only the actions in ``infra.permissions``, only on
    resources named ``ringback-<stage>-*`` (and the key tagged with the stage)."""
    prefix = stage_prefix(stage)
    function = f"ringback-{stage}"  # chalice deploy names functions ringback-<stage>[-<handler>]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "StageTables",
                "Effect": "Allow",
                "Action": permissions.actions(permissions.DYNAMODB_OPERATIONS),
                "Resource": [f"arn:aws:dynamodb:*:*:table/{prefix}*"],
            },
            {
                "Sid": "StageTableIndexes",
                "Effect": "Allow",
                "Action": permissions.actions(
                    permissions.DYNAMODB_OPERATIONS, permissions.DYNAMODB_INDEX_OPERATIONS
                ),
                "Resource": [f"arn:aws:dynamodb:*:*:table/{prefix}*/index/*"],
            },
            {
                "Sid": "StageQueues",
                "Effect": "Allow",
                "Action": permissions.actions(permissions.SQS_OPERATIONS),
                "Resource": [f"arn:aws:sqs:*:*:{prefix}*"],
            },
            {
                "Sid": "StageSecretsKey",
                "Effect": "Allow",
                "Action": permissions.actions(permissions.KMS_OPERATIONS),
                "Resource": ["arn:aws:kms:*:*:key/*"],
                "Condition": {"StringEquals": {f"aws:ResourceTag/{permissions.STAGE_TAG}": stage}},
            },
            {
                "Sid": "OwnLogs",
                "Effect": "Allow",
                "Action": list(permissions.LOGS_ACTIONS),
                "Resource": [
                    f"arn:aws:logs:*:*:log-group:/aws/lambda/{function}",
                    f"arn:aws:logs:*:*:log-group:/aws/lambda/{function}:*",
                    f"arn:aws:logs:*:*:log-group:/aws/lambda/{prefix}*",
                ],
            },
        ],
    }


def dumps(document: Json) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def rendered() -> dict[Path, str]:
    """Every generated file and its content, from the definitions loaded in this process."""
    tables, queues = table_defs(), queue_defs()
    template = build_template(tables, queues)
    files = {
        TEMPLATE_PATH: dumps(template),
        MERGE_TEMPLATE_PATH: dumps(build_merge_template(template, queues, sqs_triggers(queues))),
    }
    for stage in POLICY_STAGES:
        files[policy_path(stage)] = dumps(build_policy(stage))
    return files


def stale_files(files: dict[Path, str]) -> list[Path]:
    return [p for p, text in files.items() if not p.exists() or p.read_text() != text]


def _clean_environment() -> None:
    """Stage settings shape the model classes at import: use the defaults, whatever the shell has
    exported, so the output does not depend on who runs it."""
    for name in list(os.environ):
        if name.startswith("RINGBACK_") or name == "AWS_ENDPOINT_URL":
            del os.environ[name]
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    _clean_environment()
    files = rendered()
    stale = stale_files(files)
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run `{REGENERATE_COMMAND}`)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
