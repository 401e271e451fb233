"""HTTP client for customer-supplied URLs: checked, address-pinned, no redirects.

Checking a URL and then handing it to ``requests`` is not enough: requests resolves the
name again, and a hostile DNS server can answer a public address to the check and
127.0.0.1 to the connection (DNS rebinding). ``SafeHttpClient`` resolves once with
``resolve_checked`` and connects to exactly the checked address. The request still
carries the original ``Host`` header, and for https the TLS handshake still sends the
hostname (SNI) and verifies the certificate against it, so receivers behind virtual
hosting or CDNs work as if we had connected by name.

The technique is the usual "connect by IP, verify by name" adapter: the URL given to
urllib3 holds the IP, and the pool is created with ``server_hostname``/``assert_hostname``
set to the real name. urllib3 keys its pools on (scheme, ip, port, server_hostname,
...), so connections are reused per receiver and never shared between two hostnames
that happen to live on one IP with different certificates.

Redirects are never followed: a 3xx would be a second, unchecked destination.

Every send is bounded, because a receiver is untrusted and shares the dispatcher with every
other tenant (issue 13):

- one overall deadline covers connect, TLS, sending and the whole response. A socket timeout
  alone is per read, so a receiver trickling one byte a second would never hit it; a watchdog
  timer therefore shuts the attempt's socket down when the deadline passes, which wakes the
  blocked read at once;
- the response is streamed: at most ``BODY_PREFIX_BYTES`` are kept (for the attempts log) and at
  most ``MAX_RESPONSE_BYTES`` are read at all; a longer body is not read further and its
  connection is closed instead of being returned to the pool.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

from chalicelib.domain.urlsafety import (
    InvalidUrl,
    Resolver,
    check_http_url,
    parse_ip_literal,
    parse_port,
    resolve_checked,
    split_authority,
)

if TYPE_CHECKING:  # typed names exist only in types-requests
    from requests.adapters import _HostParams, _PoolKwargs

_TLS_HOSTNAME_ATTR = "_ringback_tls_hostname"
_DEFAULT_PORTS = {"http": 80, "https": 443}

BODY_PREFIX_BYTES = 4 * 1024
"""What is kept of a response body: enough to show a receiver's error message in the log."""
MAX_RESPONSE_BYTES = 1024 * 1024
"""What is read of a response body at most. A receiver's answer is its status code; the body is
read only so that a short one lets the connection be reused. A body that does not end within
this many bytes is not read further: the connection is closed and the reply is incomplete."""
_READ_CHUNK = 16 * 1024


class DeadlineExceeded(requests.Timeout):
    """The attempt's overall deadline passed (connect, send and response together)."""


class ResponseTooLarge(requests.RequestException):
    """The response body went on past ``MAX_RESPONSE_BYTES``; it was not read further."""

    def __init__(self, reply: HttpReply) -> None:
        super().__init__(f"response body longer than {MAX_RESPONSE_BYTES} bytes")
        self.reply = reply


@dataclass(frozen=True)
class HttpReply:
    """What a receiver answered, within the bounds: its status, headers and body prefix."""

    status_code: int
    url: str
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)
    body_prefix: bytes = b""
    body_bytes: int = 0  # how many body bytes were read (at most MAX_RESPONSE_BYTES)

    @property
    def text(self) -> str:
        """The kept prefix as text (a cut multi-byte character is replaced)."""
        return self.body_prefix.decode("utf-8", "replace")


# --- the overall deadline -------------------------------------------------------------------

_current = threading.local()


class _Watchdog:
    """Cuts the connections an attempt uses when its deadline passes.

    The connections register themselves (``watch``) from the sending thread, found through a
    thread-local, because urllib3 picks or opens the connection deep inside ``Session.send``.
    ``finish`` and the timer's ``_fire`` take one lock, so a connection is never cut after its
    attempt has finished (it may already serve another attempt from the pool).
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._connections: list[_WatchedHTTPConnection] = []
        self._finished = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _current.watchdog = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def watch(self, connection: _WatchedHTTPConnection) -> None:
        with self._lock:
            if self.fired and not self._finished:
                connection.cut()
            else:
                self._connections.append(connection)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            self._connections.clear()
        self._timer.cancel()
        if getattr(_current, "watchdog", None) is self:
            _current.watchdog = None

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            for connection in self._connections:
                connection.cut()


def _watch(connection: _WatchedHTTPConnection) -> None:
    watchdog: _Watchdog | None = getattr(_current, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(connection)


class _WatchedHTTPConnection(HTTPConnection):
    """An urllib3 connection the current attempt's watchdog can cut from another thread.

    It keeps a duplicate of its socket's descriptor: ``shutdown`` acts on the TCP connection
    behind any descriptor, so cutting works the same during connect, the TLS handshake (when
    the TLS wrapper is not yet stored on the connection), the request and the response.
    """

    _ringback_dup: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        try:
            self._ringback_dup = sock.dup()
        except OSError:
            self._ringback_dup = None
        return sock

    def cut(self) -> None:
        dup = self._ringback_dup
        if dup is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to cut
                dup.shutdown(socket.SHUT_RDWR)

    def connect(self) -> None:
        _watch(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()
        finally:
            dup, self._ringback_dup = self._ringback_dup, None
            if dup is not None:
                dup.close()


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _PinnedHostAdapter(HTTPAdapter):
    """HTTPAdapter whose https pools verify against the hostname stored on the request, and
    whose connections a deadline watchdog can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        cert: Any = None,
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        tls_hostname = getattr(request, _TLS_HOSTNAME_ATTR, None)
        if tls_hostname is not None and host_params.get("scheme") == "https":
            # urllib3 accepts these pool keys; the requests stubs just do not list them.
            extra = cast(dict[str, Any], pool_kwargs)
            extra["server_hostname"] = tls_hostname
            extra["assert_hostname"] = tls_hostname
        return host_params, pool_kwargs


def _failed_before_sending(exc: requests.ConnectionError) -> bool:
    """True when the TCP connect itself failed, so trying another address resends nothing."""
    inner = exc.args[0] if exc.args else None
    reason = inner.reason if isinstance(inner, MaxRetryError) else inner
    return isinstance(reason, ConnectTimeoutError)  # NewConnectionError is a subclass


def _url_host(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return "[" + ip.replace("%", "%25") + "]"
    return ip


class SafeHttpClient:
    """One pooled, keep-alive ``requests.Session`` for all outbound callback traffic.

    Safe to share between threads: each ``send`` builds its own prepared request and the
    urllib3 pool manager underneath is thread-safe. Cookies are never stored (a receiver
    must not be able to plant state that follows us to another receiver) and proxy/netrc
    settings from the environment are ignored (they would bypass the pinning).
    """

    def __init__(
        self,
        *,
        pool_maxsize: int = 32,
        pool_connections: int = 64,
        ca_bundle: str | None = None,
    ) -> None:
        self._verify: bool | str = ca_bundle if ca_bundle is not None else True
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = _PinnedHostAdapter(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=0,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._adapter = adapter
        self._session = session

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> SafeHttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        params: Mapping[str, str] | None = None,
        timeout: float,
        allow_private: bool,
        resolver: Resolver | None = None,
    ) -> HttpReply:
        """Send one request to ``url`` through a checked, pinned address; ``timeout`` is the
        overall deadline in seconds for everything up to the end of the (bounded) body read.

        Raises InvalidUrl/UnsafeDestination before any connection is opened,
        ``DeadlineExceeded`` (a ``requests.Timeout``) when the deadline passes,
        ``ResponseTooLarge`` when the body goes on past ``MAX_RESPONSE_BYTES``, and the usual
        ``requests`` exceptions for other network trouble. A 3xx comes back as is. When the
        name has several checked addresses and connecting to one fails, the next is tried
        (only for connect failures, so a request is never sent twice).
        """
        deadline = time.monotonic() + timeout
        check_http_url(url, allow_private=allow_private, resolve=False)
        prepared = self._session.prepare_request(
            requests.Request(
                method=method.upper(),
                url=url,
                headers=dict(headers),
                data=body,
                params=dict(params) if params else None,
            )
        )
        # A compressed body would make the kept prefix unreadable (and a small compressed
        # body can inflate to anything): ask for the body as is.
        prepared.headers["Accept-Encoding"] = "identity"
        original_url = prepared.url or url
        parts = urlsplit(original_url)
        scheme = parts.scheme.lower()
        authority = split_authority(parts.netloc)
        port = _DEFAULT_PORTS[scheme]
        if authority.port is not None:
            explicit = parse_port(authority.port)
            if explicit is None:
                raise InvalidUrl(f"port {authority.port!r} is not in 1-65535")
            port = explicit
        addresses = resolve_checked(
            authority.host, port, allow_private=allow_private, resolver=resolver
        )

        host_header = f"[{authority.host}]" if authority.bracketed else authority.host
        if port != _DEFAULT_PORTS[scheme]:
            host_header = f"{host_header}:{port}"
        prepared.headers["Host"] = host_header
        if parse_ip_literal(authority.host) is None:
            # Names only: for an IP literal urllib3 verifies the certificate's IP SAN.
            setattr(prepared, _TLS_HOSTNAME_ATTR, authority.host)

        with _Watchdog(deadline - time.monotonic()) as watchdog:
            try:
                response = self._first_answer(prepared, scheme, port, parts, addresses, deadline)
                response.url = original_url
                return _bounded_reply(response, watchdog)
            except requests.RequestException:
                if watchdog.fired:
                    raise DeadlineExceeded(f"no complete answer within {timeout:g} s") from None
                raise

    def _first_answer(
        self,
        prepared: requests.PreparedRequest,
        scheme: str,
        port: int,
        parts: Any,
        addresses: list[str],
        deadline: float,
    ) -> requests.Response:
        """The response head from the first address that accepts the connection (body unread)."""
        last_error: requests.ConnectionError | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            prepared.url = urlunsplit(
                (scheme, f"{_url_host(address)}:{port}", parts.path, parts.query, "")
            )
            try:
                return self._session.send(
                    prepared,
                    # Per-operation socket timeouts, never past the deadline; the watchdog
                    # holds the overall one.
                    timeout=(remaining, remaining),
                    allow_redirects=False,
                    verify=self._verify,
                    proxies={},
                    stream=True,
                )
            except requests.ConnectionError as exc:
                if not _failed_before_sending(exc):
                    raise
                last_error = exc
                continue
        if last_error is None:
            raise DeadlineExceeded("the deadline passed before a connection was made")
        raise last_error


def _bounded_reply(response: requests.Response, watchdog: _Watchdog) -> HttpReply:
    """Read at most ``MAX_RESPONSE_BYTES`` of the body, keep ``BODY_PREFIX_BYTES`` of it.

    A body read to its end within the bound lets the connection go back to the pool; any other
    outcome closes it, so nothing is left unread on a reused connection.
    """
    prefix = bytearray()
    read = 0
    ended = False
    try:
        while read < MAX_RESPONSE_BYTES:
            chunk = response.raw.read(
                min(_READ_CHUNK, MAX_RESPONSE_BYTES - read), decode_content=False
            )
            if not chunk:
                ended = True
                break
            read += len(chunk)
            room = BODY_PREFIX_BYTES - len(prefix)
            if room > 0:
                prefix += chunk[:room]
        if not ended:
            # The bound is reached: one more read tells a body of exactly the bound from a
            # longer one without reading more than one chunk past it.
            ended = not response.raw.read(1, decode_content=False)
    except Exception as exc:  # urllib3/http.client/ssl errors: the body broke off
        response.close()
        if watchdog.fired or isinstance(exc, ReadTimeoutError | TimeoutError):
            # A socket timeout is never longer than what was left of the deadline.
            raise DeadlineExceeded("the response did not end within the deadline") from None
        raise requests.ConnectionError(f"response body broke off: {type(exc).__name__}") from exc
    watchdog.finish()  # before the connection can go back to the pool for another attempt
    reply = HttpReply(
        status_code=response.status_code,
        url=response.url,
        headers=response.headers,
        body_prefix=bytes(prefix),
        body_bytes=read,
    )
    if ended and not watchdog.fired:
        response.raw.release_conn()
        return reply
    response.close()
    if watchdog.fired:
        raise DeadlineExceeded("the response did not end within the deadline")
    raise ResponseTooLarge(reply)
