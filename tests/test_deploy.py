"""The deploy path, checked without an AWS account (issue 7).

- the generated infra template, merge template and stage policies match the current models,
  queues and handlers (``.venv/bin/python -m infra.generate`` regenerates them);
- cfn-lint passes on the infra template;
- ``chalice package --stage prod`` runs offline, and its SAM output (alone, and merged with the
  infra stack) translated by aws-sam-translator passes cfn-lint;
- the infra template deployed into the embedded AWS (moto CloudFormation) creates the tables and
  queues the app creates for itself from the same models (keys, GSIs, redrive);
- the stage policies grant every AWS action the code uses, only on that stage's resources.

``chalice deploy --stage dev`` against the embedded AWS is not tested: moto cannot import the
Swagger 2.0 REST API Chalice sends (docs/deploy.md says why).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from infra import generate, permissions

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECK_STAGE = "cfncheck"  # the deployed stack's stage: its names never collide with ringback-local-
OTHER_STAGE = {"dev": "prod", "prod": "dev"}


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: run `make install`"
    return str(path)


def cfn_lint(template: Path) -> None:
    result = subprocess.run(
        [tool("cfn-lint"), str(template)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"cfn-lint {template.name}:\n{result.stdout}{result.stderr}"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# 1. The committed files are what the generator makes from the code as it is now.


def test_generated_deploy_files_are_current() -> None:
    files = generate.rendered()
    stale = [str(p.relative_to(ROOT)) for p in generate.stale_files(files)]
    assert not stale, (
        f"{', '.join(stale)} no longer match the models/queues/handlers/permissions: "
        f"run `{generate.REGENERATE_COMMAND}` and commit the result"
    )


# 2. The infra stack on its own (deploy path 1).


def test_infra_template_passes_cfn_lint() -> None:
    cfn_lint(generate.TEMPLATE_PATH)


def _table_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Table resources by the short name in ``ringback-${Stage}-<short>``."""
    tables = {}
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::DynamoDB::Table":
            name = resource["Properties"]["TableName"]["Fn::Sub"]
            tables[name.removeprefix("ringback-${Stage}-")] = resource
    return tables


def test_infra_template_declares_what_moto_does_not_apply() -> None:
    """moto's CloudFormation ignores TTL, point-in-time recovery and alarms, so the template
    itself is checked for them against the app's definitions."""
    from chalicelib import settings
    from chalicelib.queues import all_queues
    from chalicelib.storage.schema import ALL_MODELS, TTL_ATTRIBUTES

    template = load(generate.TEMPLATE_PATH)
    tables = _table_resources(template)
    prefix = settings.table_prefix()
    assert set(tables) == {m.Meta.table_name.removeprefix(prefix) for m in ALL_MODELS}
    for model in ALL_MODELS:
        props = tables[model.Meta.table_name.removeprefix(prefix)]["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        ttl = TTL_ATTRIBUTES.get(model.Meta.table_name)
        expected_ttl = {"AttributeName": ttl, "Enabled": True} if ttl else None
        assert props.get("TimeToLiveSpecification") == expected_ttl, model.Meta.table_name

    resources = template["Resources"]
    queue_names = {
        logical: r["Properties"]["QueueName"]["Fn::Sub"]
        for logical, r in resources.items()
        if r["Type"] == "AWS::SQS::Queue"
    }
    alarms = {
        (
            r["Properties"]["MetricName"],
            queue_names[r["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]],
        )
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    stage_prefix = f"ringback-{settings.stage()}-"
    for spec in all_queues():
        dlq = "ringback-${Stage}-" + spec.dlq_name.removeprefix(stage_prefix)
        main = "ringback-${Stage}-" + spec.name.removeprefix(stage_prefix)
        assert ("ApproximateNumberOfMessagesVisible", dlq) in alarms
        assert ("ApproximateAgeOfOldestMessage", main) in alarms
    # The stage policies grant KMS use only on a key carrying the stage tag.
    assert {"Key": permissions.STAGE_TAG, "Value": {"Ref": "Stage"}} in resources["SecretsKey"][
        "Properties"
    ]["Tags"]


# 3. `chalice package --stage prod`, alone and merged with the infra stack (deploy path 2).


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bool], dict[str, Any]]:
    """Runs ``chalice package --stage prod`` once per variant and returns its ``sam.json``."""
    results: dict[bool, dict[str, Any]] = {}

    def run(merged: bool) -> dict[str, Any]:
        if merged not in results:
            out = tmp_path_factory.mktemp("merged" if merged else "plain")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RINGBACK_"))}
            env.update(
                AWS_ACCESS_KEY_ID="offline",
                AWS_SECRET_ACCESS_KEY="offline",
                AWS_DEFAULT_REGION="us-east-1",
                # Nothing listens here: packaging that tried to call AWS would fail.
                AWS_ENDPOINT_URL="http://127.0.0.1:9",
            )
            extra = ["--merge-template", str(generate.MERGE_TEMPLATE_PATH)] if merged else []
            result = subprocess.run(
                [tool("chalice"), "package", "--stage", "prod", *extra, str(out)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"chalice package:\n{result.stdout}{result.stderr}"
            assert (out / "deployment.zip").stat().st_size > 0
            results[merged] = load(out / "sam.json")
        return results[merged]

    return run


def translate(sam: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The SAM transform CloudFormation runs on deploy, done here with aws-sam-translator."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(sam)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # What `aws cloudformation package` does: upload deployment.zip, point at the copy.
            resource["Properties"]["CodeUri"] = "s3://ringback-artifacts/deployment.zip"
    translated: dict[str, Any] = Translator(None, Parser()).translate(
        sam, parameter_values=parameters, get_managed_policy_map=dict
    )
    return translated


@pytest.mark.parametrize("merged", [False, True], ids=["package", "package-merged"])
def test_chalice_package_prod_translates_and_passes_cfn_lint(
    packaged: Callable[[bool], dict[str, Any]], merged: bool, tmp_path: Path
) -> None:
    sam = packaged(merged)
    parameters = {"Stage": "prod"} if merged else {}
    cfn = translate(sam, parameters)
    assert "Transform" not in cfn
    path = tmp_path / "translated.json"
    path.write_text(json.dumps(cfn, indent=1))
    cfn_lint(path)

    # Chalice used the stage's policy file for every function, not a generated policy.
    policy = load(generate.policy_path("prod"))
    roles = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles
    for role in roles:
        assert [p["PolicyDocument"] for p in role["Properties"]["Policies"]] == [policy]

    # Every SQS trigger reads a queue the infra stack creates for prod.
    infra_queues = {
        r["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", "prod")
        for r in load(generate.TEMPLATE_PATH)["Resources"].values()
        if r["Type"] == "AWS::SQS::Queue"
    }
    mappings = [
        r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    for mapping in mappings:
        arn = mapping["Properties"]["EventSourceArn"]["Fn::Sub"]
        assert arn.rsplit(":", 1)[-1] in infra_queues, arn


def test_merged_package_wires_functions_to_the_stack_resources(
    packaged: Callable[[bool], dict[str, Any]],
) -> None:
    cfn = translate(packaged(True), {"Stage": "prod"})
    resources = cfn["Resources"]
    functions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    assert functions
    for logical, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["RINGBACK_STAGE"] == "prod", logical
        assert variables["RINGBACK_TABLE_PREFIX"] == "ringback-prod-", logical
        assert variables["RINGBACK_DELIVERY_QUEUE_URL"] == {"Ref": "DeliveriesQueue"}, logical
        assert variables["RINGBACK_KMS_KEY_ID"] == {"Ref": "KmsAliasName"}, logical
        assert variables["RINGBACK_REPORT_BATCH_FAILURES"] == "true", logical
    # An event source mapping names its queue by an ARN string, so its function must wait for
    # the queue (the mapping waits for the function) or CloudFormation may create it first.
    queue_ids = {
        r["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", "prod"): logical
        for logical, r in resources.items()
        if r["Type"] == "AWS::SQS::Queue"
    }
    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mappings, "app.py declares SQS handlers; the package has no event source mapping"
    for mapping in mappings:
        # The dispatcher's batchItemFailures only count with this switch on the mapping.
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        queue_name = mapping["Properties"]["EventSourceArn"]["Fn::Sub"].rsplit(":", 1)[-1]
        function = mapping["Properties"]["FunctionName"]["Ref"]
        waits_for = set(resources[function].get("DependsOn", [])) | references(resources[function])
        assert queue_ids[queue_name] in waits_for, function


def references(node: Any) -> set[str]:
    """Logical ids a fragment refers to (Ref, Fn::GetAtt): CloudFormation waits for them."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt" and isinstance(value, list):
                found.add(value[0])
            else:
                found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return found


# 4. The infra stack deployed into the embedded AWS.


def _table_shape(ddb: Any, name: str) -> dict[str, Any]:
    table = ddb.describe_table(TableName=name)["Table"]

    def keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
        ordered = sorted(schema, key=lambda k: k["KeyType"] != "HASH")
        return [(k["AttributeName"], k["KeyType"]) for k in ordered]

    def indexes(raw: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                i["IndexName"],
                keys(i["KeySchema"]),
                i["Projection"]["ProjectionType"],
                sorted(i["Projection"].get("NonKeyAttributes", [])),
            )
            for i in raw
        )

    return {
        "keys": keys(table["KeySchema"]),
        "attributes": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]
        ),
        "global_indexes": indexes(table.get("GlobalSecondaryIndexes", [])),
        "local_indexes": indexes(table.get("LocalSecondaryIndexes", [])),
        "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
    }


def _queue_shape(sqs: Any, name: str) -> dict[str, Any]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"]) if "RedrivePolicy" in attrs else None
    return {
        "visibility_timeout": int(attrs["VisibilityTimeout"]),
        "dlq_name": redrive["deadLetterTargetArn"].rsplit(":", 1)[-1] if redrive else None,
        "max_receives": int(redrive["maxReceiveCount"]) if redrive else None,
    }


@pytest.mark.filterwarnings("ignore:Tried to parse AWS")  # moto: no alarms; checked above
def test_infra_stack_in_embedded_aws_creates_what_the_app_expects(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``aws`` fixture created ringback-local-* straight from the models (PynamoDB's own
    create_table) and queue specs; the stack, deployed as stage ``cfncheck``, must match them."""
    import boto3

    from chalicelib import settings
    from chalicelib.queues import all_queues
    from chalicelib.storage import secrets
    from chalicelib.storage.schema import ALL_MODELS

    template = load(generate.TEMPLATE_PATH)
    # moto 5.2.5 cannot tag a KMS key from CloudFormation (KeyError 'TagKey': it expects the KMS
    # API's tag shape); the tag itself is checked in the template above.
    template["Resources"]["SecretsKey"]["Properties"].pop("Tags")
    cfn = boto3.client("cloudformation")
    stack_name = f"ringback-{CHECK_STAGE}-infra"
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(template),
        Parameters=[
            {"ParameterKey": "Stage", "ParameterValue": CHECK_STAGE},
            {"ParameterKey": "KmsAliasName", "ParameterValue": f"alias/ringback-{CHECK_STAGE}"},
        ],
    )
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    check_prefix = f"ringback-{CHECK_STAGE}-"
    assert outputs["TablePrefix"] == check_prefix

    ddb = boto3.client("dynamodb")
    local_prefix = settings.table_prefix()
    created = {n for n in ddb.list_tables()["TableNames"] if n.startswith(check_prefix)}
    expected = {m.Meta.table_name.removeprefix(local_prefix) for m in ALL_MODELS}
    assert {n.removeprefix(check_prefix) for n in created} == expected
    assert set(outputs[k] for k in outputs if k.endswith("TableName")) == created
    for model in ALL_MODELS:
        short = model.Meta.table_name.removeprefix(local_prefix)
        deployed = _table_shape(ddb, check_prefix + short)
        assert deployed == _table_shape(ddb, model.Meta.table_name), short
        assert deployed["billing"] == "PAY_PER_REQUEST"

    sqs = boto3.client("sqs")
    stage_prefix = f"ringback-{settings.stage()}-"
    for spec in all_queues():
        deployed_name = check_prefix + spec.name.removeprefix(stage_prefix)
        deployed = _queue_shape(sqs, deployed_name)
        local = _queue_shape(sqs, spec.name)
        assert deployed["dlq_name"] == check_prefix + spec.dlq_name.removeprefix(stage_prefix)
        assert deployed["max_receives"] == local["max_receives"] == spec.max_receives
        assert deployed["visibility_timeout"] == local["visibility_timeout"]
        assert deployed_name in outputs.values()

    # The app's own secrets code works with the stack's key through its alias.
    kms = boto3.client("kms")
    alias = outputs["SecretsKeyAliasName"]
    assert kms.encrypt(KeyId=alias, Plaintext=b"x")["KeyId"] == outputs["SecretsKeyArn"]
    monkeypatch.setenv("RINGBACK_KMS_KEY_ID", alias)
    secrets.reset_clients()
    context = {"tenant": "t", "owner": "o"}
    try:
        assert secrets.decrypt(secrets.encrypt("whsec_check", context), context) == "whsec_check"
    finally:
        secrets.reset_clients()


# 5. The stage policies grant what the code uses, and only on the stage's resources.


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed(
    policy: dict[str, Any], action: str, resource: str, tags: dict[str, str] | None = None
) -> bool:
    """A small IAM evaluator for our policies: Allow statements, wildcards, StringEquals on
    resource tags (any other condition counts as not met)."""
    context = {f"aws:ResourceTag/{k}": v for k, v in (tags or {}).items()}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatchcase(action.lower(), a.lower()) for a in _as_list(statement["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in _as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(
            op == "StringEquals" and all(context.get(k) == v for k, v in pairs.items())
            for op, pairs in conditions.items()
        ):
            return True
    return False


@pytest.mark.parametrize("stage", generate.POLICY_STAGES)
def test_stage_policy_grants_what_the_code_uses_on_that_stage_only(stage: str) -> None:
    policy = load(generate.policy_path(stage))
    config = load(ROOT / ".chalice" / "config.json")["stages"][stage]
    assert config.get("autogen_policy") is False
    assert config.get("iam_policy_file") == f"policy-{stage}.json"

    other = OTHER_STAGE[stage]
    account = "arn:aws:{}:eu-west-1:111122223333:"

    def table_arn(stage_name: str, short: str) -> str:
        return account.format("dynamodb") + f"table/ringback-{stage_name}-{short}"

    for table in generate.table_defs():
        for operation, needed in permissions.DYNAMODB_OPERATIONS.items():
            for action in needed:
                assert allowed(policy, action, table_arn(stage, table.short_name)), (
                    f"{stage}: {operation} needs {action} on {table.short_name}"
                )
                assert not allowed(policy, action, table_arn(other, table.short_name))
        for index in table.global_indexes + table.local_indexes:
            arn = table_arn(stage, table.short_name) + f"/index/{index['IndexName']}"
            for operation in permissions.DYNAMODB_INDEX_OPERATIONS:
                for action in permissions.DYNAMODB_OPERATIONS[operation]:
                    assert allowed(policy, action, arn), f"{stage}: {action} on {arn}"

    for queue in generate.queue_defs():
        for short in (queue.short_name, queue.dlq_short_name):
            for action in permissions.actions(permissions.SQS_OPERATIONS):
                assert allowed(policy, action, account.format("sqs") + f"ringback-{stage}-{short}")
                assert not allowed(
                    policy, action, account.format("sqs") + f"ringback-{other}-{short}"
                )

    key = account.format("kms") + "key/1234abcd-12ab-34cd-56ef-1234567890ab"
    for action in permissions.actions(permissions.KMS_OPERATIONS):
        assert allowed(policy, action, key, {permissions.STAGE_TAG: stage})
        assert not allowed(policy, action, key, {permissions.STAGE_TAG: other})
        assert not allowed(policy, action, key)

    for group in (f"ringback-{stage}", f"ringback-{stage}-dispatcher"):
        stream = account.format("logs") + f"log-group:/aws/lambda/{group}:log-stream:x"
        assert allowed(policy, "logs:PutLogEvents", stream)
    assert not allowed(
        policy,
        "logs:PutLogEvents",
        account.format("logs") + f"log-group:/aws/lambda/ringback-{other}:log-stream:x",
    )

    # Nothing beyond the listed actions, no wildcard action or resource.
    granted = {a for s in policy["Statement"] for a in _as_list(s["Action"])}
    listed = {
        *permissions.actions(permissions.DYNAMODB_OPERATIONS),
        *permissions.actions(permissions.SQS_OPERATIONS),
        *permissions.actions(permissions.KMS_OPERATIONS),
        *permissions.LOGS_ACTIONS,
    }
    assert granted == listed
    for statement in policy["Statement"]:
        assert "*" not in _as_list(statement["Resource"])
