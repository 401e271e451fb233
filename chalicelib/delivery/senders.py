"""Send one prepared attempt: HTTP(S) through the pinned client, or a TCP line / UDP datagram.

Every sender turns what happened into an ``AttemptResult``; none of them raises for receiver
trouble, so one bad receiver never fails a batch.
"""

from __future__ import annotations

import functools
import socket
import time

import requests

from chalicelib.delivery.registry import HttpOutbound, StreamOutbound
from chalicelib.delivery.safe_http import SafeHttpClient
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
        response = http_client().send(
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
    except requests.Timeout:
        return AttemptResult(False, error="timeout", duration_ms=_elapsed_ms(started))
    except requests.RequestException as exc:
        return AttemptResult(
            False, error=f"connection error: {type(exc).__name__}", duration_ms=_elapsed_ms(started)
        )
    response.close()
    code = response.status_code
    return AttemptResult(
        success=200 <= code < 300,
        status_code=code,
        retry_after=parse_retry_after(response.headers.get("Retry-After"), time.time()),
        duration_ms=_elapsed_ms(started),
    )


def send_stream(outbound: StreamOutbound, *, timeout: float, allow_private: bool) -> AttemptResult:
    """TCP: one connection, one line, success when the peer closes or answers within the timeout.
    UDP: one datagram, success once sent (best effort by the protocol's nature).

    A name may resolve to several checked addresses (IPv6 and IPv4, say). TCP tries them in
    order while the *connect* fails, within the one timeout, as the HTTP sender does: nothing
    has been sent yet, so nothing is sent twice. UDP cannot tell, so it uses the first.
    """
    started = time.monotonic()
    try:
        addresses = resolve_checked(outbound.host, outbound.port, allow_private=allow_private)
    except UnsafeDestination as exc:
        return AttemptResult(False, error=f"destination refused: {exc}")
    try:
        if outbound.protocol == "udp":
            address = addresses[0]
            with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
                sock.sendto(outbound.payload, (address, outbound.port))
            return AttemptResult(True, duration_ms=_elapsed_ms(started))
        with _connect(addresses, outbound.port, started + timeout) as sock:
            sock.sendall(outbound.payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(max(0.1, timeout - (time.monotonic() - started)))
            sock.recv(1024)  # an acknowledgement or the peer's close (b"") both count
        return AttemptResult(True, duration_ms=_elapsed_ms(started))
    except TimeoutError:
        return AttemptResult(False, error="timeout", duration_ms=_elapsed_ms(started))
    except OSError as exc:
        return AttemptResult(
            False, error=f"connection error: {type(exc).__name__}", duration_ms=_elapsed_ms(started)
        )


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
