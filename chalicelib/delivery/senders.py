"""Send one prepared attempt: HTTP(S) through the pinned client, or a TCP line / UDP datagram.

Every sender turns what happened into an ``AttemptResult``; none of them raises for receiver
trouble, so one bad receiver never fails a batch. Every send is bounded (issue 13): ``timeout``
is one overall deadline for the whole attempt, and what is read back is capped, so a receiver
that answers slowly or endlessly costs one attempt's deadline and a few KiB, never the batch.
"""

from __future__ import annotations

import functools
import socket
import time

import requests

from chalicelib.delivery.registry import HttpOutbound, StreamOutbound
from chalicelib.delivery.safe_http import (
    BODY_PREFIX_BYTES,
    MAX_RESPONSE_BYTES,
    ResponseTooLarge,
    SafeHttpClient,
)
from chalicelib.domain.retry import AttemptResult, parse_retry_after
from chalicelib.domain.signing import signature_headers
from chalicelib.domain.urlsafety import InvalidUrl, UnsafeDestination, resolve_checked


@functools.cache
def http_client() -> SafeHttpClient:
    """One pooled client per process (a warm Lambda keeps its connections)."""
    return SafeHttpClient(pool_maxsize=32)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def send_http(
    outbound: HttpOutbound, *, message_id: str, timeout: float, allow_private: bool
) -> AttemptResult:
    body = outbound.body or b""
    headers = dict(outbound.headers)
    headers.setdefault("User-Agent", "Ringback/1.0")
    if outbound.signing_secrets:
        headers.update(
            signature_headers(outbound.signing_secrets, message_id, int(time.time()), body)
        )
    started = time.monotonic()
    try:
        reply = http_client().send(
            outbound.method,
            outbound.url,
            headers=headers,
            body=outbound.body,
            params=dict(outbound.params) if outbound.params else None,
            timeout=timeout,
            allow_private=allow_private,
        )
    except (InvalidUrl, UnsafeDestination) as exc:
        return AttemptResult(False, error=f"destination refused: {exc}", duration_ms=0)
    except requests.Timeout:  # DeadlineExceeded included
        return AttemptResult(False, error="timeout", duration_ms=_elapsed_ms(started))
    except ResponseTooLarge as exc:
        # The status line came, but the body went on past the bound: the receiver did not
        # finish answering, so the attempt is not a success whatever the status said.
        return AttemptResult(
            False,
            status_code=exc.reply.status_code,
            error=f"response body longer than {MAX_RESPONSE_BYTES} bytes",
            duration_ms=_elapsed_ms(started),
            response_prefix=_text(exc.reply.body_prefix),
        )
    except requests.RequestException as exc:
        return AttemptResult(
            False, error=f"connection error: {type(exc).__name__}", duration_ms=_elapsed_ms(started)
        )
    code = reply.status_code
    return AttemptResult(
        success=200 <= code < 300,
        status_code=code,
        retry_after=parse_retry_after(reply.headers.get("Retry-After"), time.time()),
        duration_ms=_elapsed_ms(started),
        response_prefix=_text(reply.body_prefix),
    )


def _text(prefix: bytes) -> str | None:
    """A body prefix as log text (a cut multi-byte character or binary bytes are replaced)."""
    return prefix.decode("utf-8", "replace") if prefix else None


def send_stream(outbound: StreamOutbound, *, timeout: float, allow_private: bool) -> AttemptResult:
    """TCP: one connection, one line, success when the peer closes or answers within the timeout.
    UDP: one datagram, success once sent (best effort by the protocol's nature).

    ``timeout`` is the overall deadline: each socket operation gets what is left of it, and the
    answer read is one ``recv`` of at most ``BODY_PREFIX_BYTES``, so a peer trickling bytes
    cannot stretch the attempt and a peer streaming without end cannot fill memory.

    A name may resolve to several checked addresses (IPv6 and IPv4, say). TCP tries them in
    order while the *connect* fails, within the one timeout, as the HTTP sender does: nothing
    has been sent yet, so nothing is sent twice. UDP cannot tell, so it uses the first.
    """
    started = time.monotonic()
    deadline = started + timeout
    try:
        addresses = resolve_checked(outbound.host, outbound.port, allow_private=allow_private)
    except UnsafeDestination as exc:
        return AttemptResult(False, error=f"destination refused: {exc}")
    try:
        if outbound.protocol == "udp":
            address = addresses[0]
            with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
                sock.settimeout(_left(deadline))
                sock.sendto(outbound.payload, (address, outbound.port))
            return AttemptResult(True, duration_ms=_elapsed_ms(started))
        with _connect(addresses, outbound.port, deadline) as sock:
            sock.settimeout(_left(deadline))
            sock.sendall(outbound.payload)  # the timeout bounds the whole sendall (3.5+)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(_left(deadline))
            answer = sock.recv(BODY_PREFIX_BYTES)  # an acknowledgement or the close (b"")
        return AttemptResult(
            True,
            duration_ms=_elapsed_ms(started),
            response_prefix=_text(answer),
        )
    except TimeoutError:
        return AttemptResult(False, error="timeout", duration_ms=_elapsed_ms(started))
    except OSError as exc:
        return AttemptResult(
            False, error=f"connection error: {type(exc).__name__}", duration_ms=_elapsed_ms(started)
        )


def _left(deadline: float) -> float:
    """What is left of the deadline, for the next socket operation; raises once it passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the deadline passed")
    return remaining


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _connect(addresses: list[str], port: int, deadline: float) -> socket.socket:
    """A connected TCP socket to the first of ``addresses`` that accepts before ``deadline``;
    re-raises the last connect error when none does."""
    last: OSError | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(_family(address), socket.SOCK_STREAM)
        sock.settimeout(remaining)
        try:
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise last if last is not None else TimeoutError("connect deadline passed")
