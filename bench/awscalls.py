"""Counting every AWS request a process makes, and the DynamoDB capacity units each consumes.

Shared by ``bench.cost`` and ``bench.scheduler``. The hook patches
``botocore.client.BaseClient._make_api_call``, the single method every botocore client goes
through: boto3's clients and PynamoDB's own client (``Connection._make_api_call`` calls
``self.client._make_api_call``) alike, whenever they were created. Patching the class, not a
client, is what makes a missed call impossible; ``tests/test_cost_counting.py`` checks it against
the HTTP requests botocore actually sends.

moto's ``ReturnConsumedCapacity`` answers fixed figures (moto 5.2.5: 1.0 for a 3 KB PutItem that
DynamoDB bills as 3 write units, 0.5 for an UpdateItem), so DynamoDB units are computed from item
sizes by DynamoDB's published rules (on-demand):

- write: ceil(item KB) per item written (the larger of the item before and after), at least 1,
  plus the same for every global secondary index the item is (or was) projected into; an index
  whose key changes costs a delete and a put; transactions cost twice;
- read: ceil(KB / 4) per item (GetItem/BatchGetItem) or per request over all items evaluated
  (Query/Scan, before any filter), at least 1, halved when eventually consistent; transactional
  reads cost twice.

To size items it makes side requests with its own un-metered client (the item before a write,
the whole item when a read projected only some attributes, a Query without its filter). Those are
not counted and do not change what the code under test sees.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import botocore.client

_ORIGINAL = botocore.client.BaseClient._make_api_call
_LOCAL = threading.local()


@dataclass
class Call:
    service: str
    operation: str
    billed: float = 1.0  # SQS: 64 KB chunks; EventBridge PutEvents: entries; else 1 per call
    wru: float = 0.0
    rru: float = 0.0


@dataclass
class Tally:
    """What a stretch of code cost in AWS requests."""

    calls: list[Call] = field(default_factory=list)

    def by_api(self) -> Counter[str]:
        return Counter(f"{c.service}.{c.operation}" for c in self.calls)

    def by_service(self) -> Counter[str]:
        return Counter(c.service for c in self.calls)

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def wru(self) -> float:
        return sum(c.wru for c in self.calls)

    @property
    def rru(self) -> float:
        return sum(c.rru for c in self.calls)

    def billed(self, service: str) -> float:
        return sum(c.billed for c in self.calls if c.service == service)

    def count(self, service: str, operation: str | None = None) -> int:
        return sum(
            1
            for c in self.calls
            if c.service == service and (operation is None or c.operation == operation)
        )


class AwsCalls:
    """Installs the hook once per process; ``tally()`` collects the calls made inside it."""

    _installed: AwsCalls | None = None

    def __init__(self, capacity: bool = True) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._current: Tally | None = None
        self._schemas: dict[str, dict[str, Any]] = {}
        self._side: Any = None

    @classmethod
    def install(cls, capacity: bool = True) -> AwsCalls:
        if cls._installed is None:
            meter = cls(capacity)

            def metered(client: Any, operation: str, params: dict[str, Any]) -> Any:
                return meter._call(client, operation, params)

            botocore.client.BaseClient._make_api_call = metered  # type: ignore[method-assign]
            cls._installed = meter
        cls._installed.capacity = capacity
        cls._installed._schemas.clear()  # tables may have been made again since
        return cls._installed

    @contextlib.contextmanager
    def tally(self) -> Iterator[Tally]:
        tally = Tally()
        with self._lock:
            previous, self._current = self._current, tally
        try:
            yield tally
        finally:
            with self._lock:
                self._current = previous

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made by this thread inside are not counted (set-up, bookkeeping)."""
        before = getattr(_LOCAL, "off", False)
        _LOCAL.off = True
        try:
            yield
        finally:
            _LOCAL.off = before

    def drop_last(self, tally: Tally, service: str, operation: str) -> None:
        """Forget the latest ``service.operation`` (an empty poll that is not the operation's)."""
        with self._lock:
            for i in range(len(tally.calls) - 1, -1, -1):
                if tally.calls[i].service == service and tally.calls[i].operation == operation:
                    del tally.calls[i]
                    return

    # ------------------------------------------------------------------ the hook

    def _call(self, client: Any, operation: str, params: dict[str, Any]) -> Any:
        tally = self._current
        if tally is None or getattr(_LOCAL, "off", False):
            return _ORIGINAL(client, operation, params)
        service = client.meta.service_model.service_name
        call = Call(service, operation)
        sizing = service == "dynamodb" and self.capacity
        before = self._before(operation, params) if sizing else None
        try:
            response = _ORIGINAL(client, operation, params)
        except Exception:
            if sizing:
                self._size(call, operation, params, None, before)
            self._record(tally, call)
            raise
        if sizing:
            self._size(call, operation, params, response, before)
        elif service == "sqs":
            call.billed = _sqs_chunks(operation, params, response)
        elif service == "events" and operation == "PutEvents":
            call.billed = float(len(params.get("Entries", [])))
        self._record(tally, call)
        return response

    def _record(self, tally: Tally, call: Call) -> None:
        with self._lock:
            tally.calls.append(call)

    # ------------------------------------------------------------------ DynamoDB sizing

    def _client(self) -> Any:
        if self._side is None:
            import boto3

            self._side = boto3.client("dynamodb")
        return self._side

    def _schema(self, table: str) -> dict[str, Any]:
        if table not in self._schemas:
            with self.paused():
                described = self._client().describe_table(TableName=table)["Table"]
            keys = [k["AttributeName"] for k in described["KeySchema"]]
            indexes = [
                (
                    [k["AttributeName"] for k in index["KeySchema"]],
                    index.get("Projection", {}),
                )
                for index in described.get("GlobalSecondaryIndexes", [])
            ]
            self._schemas[table] = {"keys": keys, "indexes": indexes}
        return self._schemas[table]

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        with self.paused():
            try:
                got = self._client().get_item(TableName=table, Key=key, ConsistentRead=True)
            except Exception:
                return None
        item: dict[str, Any] | None = got.get("Item")
        return item

    def _key_of(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in self._schema(table)["keys"] if k in item}

    def _write_targets(
        self, operation: str, params: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any], str, dict[str, Any] | None]]:
        """(table, key, kind, item written) of every item a write touches, in order."""
        if operation == "PutItem":
            table, item = params["TableName"], params["Item"]
            return [(table, self._key_of(table, item), "Put", item)]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"], operation[:-4], None)]
        found: list[tuple[str, dict[str, Any], str, dict[str, Any] | None]] = []
        if operation == "BatchWriteItem":
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        found.append((table, self._key_of(table, item), "Put", item))
                    else:
                        found.append((table, request["DeleteRequest"]["Key"], "Delete", None))
        elif operation == "TransactWriteItems":
            for entry in params.get("TransactItems", []):
                (kind, body), *_ = entry.items()
                table = body["TableName"]
                item = body.get("Item")
                key = body["Key"] if "Key" in body else self._key_of(table, item or {})
                found.append((table, key, kind, item))
        return found

    def _before(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any] | None]:
        """The items as they are before a write: one BatchGetItem per 100 keys."""
        targets = self._write_targets(operation, params)
        if len(targets) == 1:
            return [self._get(targets[0][0], targets[0][1])]
        found: dict[str, list[dict[str, Any]]] = {}
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, key, _, _ in targets:
            if key not in by_table.setdefault(table, []):
                by_table[table].append(key)
        with self.paused():
            for table, keys in by_table.items():
                for start in range(0, len(keys), 100):
                    request = {table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
                    while request:
                        got = self._client().batch_get_item(RequestItems=request)
                        found.setdefault(table, []).extend(got["Responses"].get(table, []))
                        request = got.get("UnprocessedKeys") or {}
        return [
            next(
                (i for i in found.get(table, []) if all(i.get(k) == v for k, v in key.items())),
                None,
            )
            for table, key, _, _ in targets
        ]

    def _size(
        self,
        call: Call,
        operation: str,
        params: dict[str, Any],
        response: dict[str, Any] | None,
        before: list[dict[str, Any] | None] | None,
    ) -> None:
        if operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"):
            call.wru = self._writes(operation, params, before or [], 1, response is not None)
        elif operation == "TransactWriteItems":
            call.wru = self._writes(operation, params, before or [], 2, response is not None)
        elif operation == "GetItem":
            call.rru = self._item_reads(params, response, params.get("ConsistentRead", False))
        elif operation == "BatchGetItem":
            total = 0.0
            for table, spec in params.get("RequestItems", {}).items():
                for key in spec.get("Keys", []):
                    item = self._get(table, key)
                    total += _read_units(_size(item), spec.get("ConsistentRead", False))
            call.rru = total
        elif operation == "TransactGetItems":
            total = 0.0
            for entry in params.get("TransactItems", []):
                body = entry["Get"]
                total += 2 * _read_units(_size(self._get(body["TableName"], body["Key"])), True)
            call.rru = total
        elif operation in ("Query", "Scan"):
            call.rru = self._query_reads(operation, params, response)

    def _writes(
        self,
        operation: str,
        params: dict[str, Any],
        before: list[dict[str, Any] | None],
        factor: int,
        succeeded: bool,
    ) -> float:
        targets = self._write_targets(operation, params)
        total = 0.0
        for (table, key, kind, item), old in zip(targets, before, strict=False):
            if kind == "ConditionCheck":
                total += factor * _write_units(_size(old))
                continue
            if not succeeded:
                new = old
            elif kind == "Put":
                new = item
            elif kind == "Delete":
                new = None
            else:
                new = self._get(table, key)
            total += factor * self._item_write(table, old, new)
        return total

    def _item_write(
        self, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> float:
        units = _write_units(max(_size(old), _size(new)))
        for index_keys, projection in self._schema(table)["indexes"]:
            was = old is not None and all(k in old for k in index_keys)
            now = new is not None and all(k in new for k in index_keys)
            old_entry = _projected(old, index_keys, projection, self._schema(table)["keys"])
            new_entry = _projected(new, index_keys, projection, self._schema(table)["keys"])
            if was and now:
                if any(old[k] != new[k] for k in index_keys):  # type: ignore[index]
                    units += _write_units(_size(old_entry)) + _write_units(_size(new_entry))
                elif old_entry != new_entry:
                    units += _write_units(max(_size(old_entry), _size(new_entry)))
            elif now:
                units += _write_units(_size(new_entry))
            elif was:
                units += _write_units(_size(old_entry))
        return float(units)

    def _item_reads(
        self, params: dict[str, Any], response: dict[str, Any] | None, consistent: bool
    ) -> float:
        item = (response or {}).get("Item")
        if "ProjectionExpression" in params or "AttributesToGet" in params:
            item = self._get(params["TableName"], params["Key"])
        return _read_units(_size(item), consistent)

    def _query_reads(
        self, operation: str, params: dict[str, Any], response: dict[str, Any] | None
    ) -> float:
        consistent = bool(params.get("ConsistentRead", False)) and "IndexName" not in params
        items = (response or {}).get("Items", [])
        trimmed = any(k in params for k in ("FilterExpression", "ProjectionExpression", "Select"))
        if trimmed or response is None:
            bare = {
                k: v
                for k, v in params.items()
                if k not in ("FilterExpression", "ProjectionExpression", "Select")
            }
            names = dict(bare.get("ExpressionAttributeNames", {}))
            values = dict(bare.get("ExpressionAttributeValues", {}))
            used = " ".join(
                str(bare.get(k, "")) for k in ("KeyConditionExpression", "ConditionExpression")
            )
            names = {n: v for n, v in names.items() if n in used}
            values = {n: v for n, v in values.items() if n in used}
            bare.pop("ExpressionAttributeNames", None)
            bare.pop("ExpressionAttributeValues", None)
            if names:
                bare["ExpressionAttributeNames"] = names
            if values:
                bare["ExpressionAttributeValues"] = values
            with self.paused():
                method = self._client().query if operation == "Query" else self._client().scan
                with contextlib.suppress(Exception):  # then the returned items are the guess
                    items = method(**bare).get("Items", [])
        return _read_units(sum(_size(i) for i in items), consistent)


# ---------------------------------------------------------------------- sizes and units


def _value_size(value: dict[str, Any]) -> int:
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        digits = str(inner).lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in inner)
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_value_size({"N": n}) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    return len(str(inner))


def _size(item: dict[str, Any] | None) -> int:
    """DynamoDB's item size: attribute names plus values (wire format)."""
    if not item:
        return 0
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _projected(
    item: dict[str, Any] | None,
    index_keys: list[str],
    projection: dict[str, Any],
    table_keys: list[str],
) -> dict[str, Any] | None:
    if item is None:
        return None
    kind = projection.get("ProjectionType", "ALL")
    if kind == "ALL":
        return item
    wanted = set(index_keys) | set(table_keys)
    if kind == "INCLUDE":
        wanted |= set(projection.get("NonKeyAttributes", []))
    return {k: v for k, v in item.items() if k in wanted}


def _write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def _read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


def _sqs_chunks(operation: str, params: dict[str, Any], response: Any) -> float:
    """SQS bills every 64 KB chunk of a request's payload as one request."""

    def attrs(entry: dict[str, Any]) -> int:
        total = 0
        for name, value in entry.get("MessageAttributes", {}).items():
            total += len(name) + len(str(value.get("StringValue", value.get("BinaryValue", ""))))
            total += len(value.get("DataType", ""))
        return total

    if operation == "SendMessage":
        size = len(params.get("MessageBody", "").encode()) + attrs(params)
    elif operation == "SendMessageBatch":
        size = sum(len(e.get("MessageBody", "").encode()) + attrs(e) for e in params["Entries"])
    elif operation == "ReceiveMessage":
        size = sum(len(m.get("Body", "").encode()) for m in (response or {}).get("Messages", []))
    else:
        return 1.0
    return float(max(1, math.ceil(size / 65536)))


def dollars(value: float) -> str:
    """A dollar figure with sensible precision."""
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{Decimal(value):.2g}" if value < 0.01 else f"{value:.3f}"
