"""The callnotify family in the delivery engine: call events to the customer's notifiers.

``match``: an event of type CALL_START / CALL_ANSWER / CALL_END with selection SIP or MVNO
reaches every enabled notifier of the publishing customer whose selection matches (ALL takes
both). One Query on the customer's partition; a customer has few notifiers, so the selection is
filtered in code rather than through an index.

``prepare`` renders the event for the notifier as it is *now* (an update between publish and
send changes where and how the next attempt goes; a deleted or disabled notifier makes the
delivery ``skipped``): http(s) notifiers get one of the six methods (``render_http``) with the
call fields appended after the URL's own query and Standard Webhooks signature headers from the
notifier's secret (and from the previous one, for 24 h after a rotation); tcp/udp notifiers get
the JSON line (``render_stream``). Retries, the attempts log and dead letters are the engine's.
There is no backup URL in this family.

The event validator refuses, with a 400 at ``POST /events``, a CALL_* event that could never be
rendered (missing selection, bad payload), so nothing is dead-lettered for a publisher's typo.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from chalicelib.delivery import registry
from chalicelib.delivery.registry import (
    HttpOutbound,
    Outbound,
    PublishedEvent,
    Skip,
    StreamOutbound,
    Target,
)
from chalicelib.domain import callnotify as rules
from chalicelib.domain import flow
from chalicelib.domain.urlsafety import InvalidUrl, parse_port, split_authority
from chalicelib.storage import callnotify as store
from chalicelib.storage import read_cache
from chalicelib.storage.deliveries import DeliveryModel

log = logging.getLogger("ringback.delivery.callnotify")

NAME = "callnotify"


def url_with_query(url: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``url`` with ``pairs`` form-encoded AFTER its own query (kept byte for byte: it often
    carries the subscriber's authentication). The fragment, never sent by HTTP, is dropped."""
    base = url.partition("#")[0]
    if not pairs:
        return base
    encoded = urlencode(list(pairs))
    if "?" not in base:
        return f"{base}?{encoded}"
    if base.endswith(("?", "&")):
        return base + encoded
    return f"{base}&{encoded}"


def stream_address(url: str) -> tuple[str, str, int]:
    """(protocol, host, port) of a stored ``tcp://host:port`` / ``udp://host:port`` URL."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("tcp", "udp"):
        raise InvalidUrl(f"not a tcp/udp URL: {url!r}")
    authority = split_authority(rest.partition("/")[0])
    port = parse_port(authority.port) if authority.port is not None else None
    if port is None or not authority.host:
        raise InvalidUrl(f"no host and port in {url!r}")
    return scheme, authority.host.lower(), port


def _event_of(delivery: DeliveryModel) -> tuple[rules.CallEvent, str]:
    content: dict[str, Any] = json.loads(delivery.content)
    event = content["event"]
    parsed = rules.parse_call_event(event["event_type"], event["selection"], event["payload"])
    return parsed, str(event["event_id"])


def limits_content(notifier: store.CallNotifierModel) -> dict[str, Any]:
    """The notifier's flow-control limits, copied into each delivery's content."""
    rate = float(notifier.rate_limit) if notifier.rate_limit is not None else None
    most = int(notifier.max_in_flight) if notifier.max_in_flight is not None else None
    return flow.to_content(flow.Limits(rate, most))


class CallnotifyFamily:
    name = NAME

    def match(self, event: PublishedEvent) -> Sequence[Target]:
        if event.event_type not in rules.CALL_EVENT_TYPES or event.test:
            return []
        try:
            rules.parse_call_event(event.event_type, event.selection, event.payload)
        except ValueError as exc:  # the validator refuses these at POST /events
            log.warning("call event %s cannot be delivered: %s", event.event_id, exc)
            return []
        return [
            Target(NAME, notifier.notify_id, notifier.url, limits_content(notifier))
            for notifier in read_cache.once(
                ("callnotify", event.tenant_id),
                lambda: list(store.list_for(event.tenant_id, consistent=False)),
            )
            if not notifier.disabled_reason
            and rules.selection_matches(notifier.selection, event.selection or "")
        ]

    def prepare(self, delivery: DeliveryModel, attempt_no: int, use_backup: bool) -> Outbound:
        notifier = store.get(delivery.tenant_id, delivery.target_id)
        if notifier is None:
            return Skip("the call notifier no longer exists")
        if notifier.disabled_reason:
            return Skip(f"the call notifier is disabled: {notifier.disabled_reason}")
        try:
            event, event_id = _event_of(delivery)
        except (ValueError, KeyError, TypeError) as exc:
            return Skip(f"the stored call event cannot be rendered: {exc}")
        if notifier.url.lower().startswith(("tcp://", "udp://")):
            try:
                protocol, host, port = stream_address(notifier.url)
            except InvalidUrl as exc:
                return Skip(f"the call notifier URL is not usable: {exc}")
            payload = rules.render_stream(
                event,
                customer_id=delivery.tenant_id,
                notifier_id=notifier.notify_id,
                event_id=event_id,
                attempt=attempt_no,
            )
            return StreamOutbound(protocol, host, port, payload)
        rendering = rules.render_http(
            notifier.method,
            event,
            customer_id=delivery.tenant_id,
            notifier_id=notifier.notify_id,
            event_id=event_id,
            attempt=attempt_no,
        )
        headers = {"Content-Type": rendering.content_type} if rendering.content_type else {}
        return HttpOutbound(
            method=rendering.http_method,
            url=url_with_query(notifier.url, rendering.query),
            headers=headers,
            body=rendering.body,
            signing_secrets=store.signing_secrets(notifier),
        )

    def limits(self, delivery: DeliveryModel) -> flow.Limits | None:
        return flow.from_content(json.loads(delivery.content))

    def target_gone(self, delivery: DeliveryModel, reason: str) -> None:
        store.disable(delivery.tenant_id, delivery.target_id, reason)


def validate_call_event(event_type: str, selection: str | None, payload: dict[str, Any]) -> None:
    """``POST /events``: a CALL_* event must be one this family can render (ValueError if not)."""
    if event_type in rules.CALL_EVENT_TYPES:
        rules.parse_call_event(event_type, selection, payload)


registry.register_family(CallnotifyFamily())
registry.register_event_validator(validate_call_event)
