"""The AWS API calls the app makes at run time, and the IAM actions that authorise them.

This is the one list the stage policies (``.chalice/policy-<stage>.json``) are generated from and
``tests/test_deploy.py`` checks them against. When code starts making a new kind of call (a
``Model.scan()``, a ``TransactGet``, an SQS call ...), add it here and run
``.venv/bin/python -m infra.generate``.

Some API operations have no IAM action of their own: a ``TransactWriteItems`` is authorised item
by item (``PutItem``/``UpdateItem``/``DeleteItem``/``ConditionCheckItem``), and SQS's batch calls
by their single-message actions. Naming ``dynamodb:TransactWriteItems`` or
``sqs:SendMessageBatch`` in a policy grants nothing (and cfn-lint flags it as unknown), so the
mapping below says which real actions each operation needs.
"""

from __future__ import annotations

# DynamoDB operations PynamoDB issues for the app (PynamoDB 6 never calls DescribeTable at run
# time: it builds the table's metadata from the model).
DYNAMODB_OPERATIONS: dict[str, tuple[str, ...]] = {
    "GetItem": ("dynamodb:GetItem",),  # Model.get, consistent guard reads
    "PutItem": ("dynamodb:PutItem",),  # Model.save (conditional puts)
    "UpdateItem": ("dynamodb:UpdateItem",),  # Model.update
    "DeleteItem": ("dynamodb:DeleteItem",),  # Model.delete
    "Query": ("dynamodb:Query",),  # Model.query; also on index/* (GSI queries)
    "BatchGetItem": ("dynamodb:BatchGetItem",),  # Model.batch_get
    "BatchWriteItem": ("dynamodb:BatchWriteItem",),  # Model.batch_write
    "TransactWriteItems": (  # TransactWrite: one action per kind of item it touches
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ),
}

# DynamoDB operations that also run against an index (``<table>/index/<name>``).
DYNAMODB_INDEX_OPERATIONS: tuple[str, ...] = ("Query",)

# SQS: the app sends (batches of) work; the Lambda service polls for the SQS triggers with the
# function's role (ReceiveMessage/DeleteMessage/GetQueueAttributes), and a handler that schedules
# its own retry changes a message's visibility.
SQS_OPERATIONS: dict[str, tuple[str, ...]] = {
    "SendMessage": ("sqs:SendMessage",),
    "SendMessageBatch": ("sqs:SendMessage",),
    "ReceiveMessage": ("sqs:ReceiveMessage",),
    "DeleteMessage": ("sqs:DeleteMessage",),
    "DeleteMessageBatch": ("sqs:DeleteMessage",),
    "ChangeMessageVisibility": ("sqs:ChangeMessageVisibility",),
    "ChangeMessageVisibilityBatch": ("sqs:ChangeMessageVisibility",),
    "GetQueueAttributes": ("sqs:GetQueueAttributes",),
    "GetQueueUrl": ("sqs:GetQueueUrl",),
}

# KMS: signing secrets and passwords are encrypted/decrypted directly with the stage's key.
KMS_OPERATIONS: dict[str, tuple[str, ...]] = {
    "Encrypt": ("kms:Encrypt",),
    "Decrypt": ("kms:Decrypt",),
}

# CloudWatch Logs: what every Lambda function needs to write its own log group.
LOGS_ACTIONS: tuple[str, ...] = (
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
)

# The tag the infra template puts on the stage's KMS key; the policies grant KMS use only on a
# key carrying ``<STAGE_TAG>=<stage>`` (the key's id is random, so it cannot be named in advance).
STAGE_TAG = "ringback-stage"


def actions(operations: dict[str, tuple[str, ...]], names: tuple[str, ...] = ()) -> list[str]:
    """The sorted, distinct IAM actions for ``names`` (every operation when empty)."""
    chosen = names or tuple(operations)
    return sorted({action for name in chosen for action in operations[name]})
