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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

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


class _PinnedHostAdapter(HTTPAdapter):
    """HTTPAdapter whose https pools verify against the hostname stored on the request."""

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
    ) -> requests.Response:
        """Send one request to ``url`` through a checked, pinned address.

        Raises InvalidUrl/UnsafeDestination before any connection is opened, and the
        usual ``requests`` exceptions for network trouble. A 3xx comes back as is.
        When the name has several checked addresses and connecting to one fails, the
        next is tried (only for connect failures, so a request is never sent twice).
        """
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

        last_error: requests.ConnectionError | None = None
        for address in addresses:
            prepared.url = urlunsplit(
                (scheme, f"{_url_host(address)}:{port}", parts.path, parts.query, "")
            )
            try:
                response = self._session.send(
                    prepared,
                    timeout=timeout,
                    allow_redirects=False,
                    verify=self._verify,
                    proxies={},
                )
            except requests.ConnectionError as exc:
                if not _failed_before_sending(exc):
                    raise
                last_error = exc
                continue
            response.url = original_url
            return response
        assert last_error is not None  # addresses is never empty
        raise last_error
