"""Guard items: small records whose conditional writes carry the rules.

A guard is keyed by what it protects (``campaign-range#<company>#<event_type>``,
``notif-url#<tenant>#<url>``, ``idem#<tenant>#<key>`` ...). Uniqueness is a put with
``attribute_not_exists``; multi-item invariants (overlapping date ranges) keep the facts they
need on the guard itself and bump a version, so a writer that read an old version loses.
"""

from __future__ import annotations

from pynamodb.attributes import MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from chalicelib.storage.base import make_meta


class GuardModel(Model):
    Meta = make_meta("guards")

    key = UnicodeAttribute(hash_key=True)
    version = NumberAttribute(default=0)
    owner = UnicodeAttribute(null=True)  # the record holding this guard (uniqueness guards)
    ranges: MapAttribute[str, str] = MapAttribute(null=True)  # type: ignore[no-untyped-call]  # overlap guards: id -> "start|end"
    payload = UnicodeAttribute(null=True)  # idempotency guards: the response to replay
    expires_at = NumberAttribute(null=True)  # epoch seconds; DynamoDB TTL attribute
    failing_since = NumberAttribute(null=True)  # target health: epoch of the first failure in a row
    lease_until = NumberAttribute(null=True)  # work guards (idempotency, fan-out chunks): epoch


def read_guard(key: str) -> GuardModel | None:
    try:
        return GuardModel.get(key, consistent_read=True)
    except DoesNotExist:
        return None
